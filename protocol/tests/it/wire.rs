//! The data-plane and announcement wire formats: round trips, every limit, and decoders that
//! return errors (never panic) on arbitrary bytes.

use protocol::manifest::{CHUNK_BYTES_MAX, CHUNKS_PER_RELEASE_MAX};
use protocol::wire::*;
use protocol::{ChunkId, PROTOCOL_VERSION, ReleaseId};

fn body(frame: &[u8]) -> &[u8] {
    let len = FrameHeader::parse(frame[..4].try_into().unwrap(), usize::MAX)
        .unwrap()
        .len;
    assert_eq!(frame.len(), FRAME_HEADER_BYTES + len, "frame length prefix");
    &frame[FRAME_HEADER_BYTES..]
}

fn release() -> ReleaseId {
    ReleaseId::of_manifest_bytes(b"some manifest")
}

fn hello(site: &str, region: &str) -> Control {
    Control::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        site: site.into(),
        region: region.into(),
        instance: 1,
        cert: Vec::new(),
        root_version: 0,
        revocations: (0, 0),
        orders: (0, 0),
        now_unix_ms: 0,
    })
}

#[test]
fn frame_header_refuses_lengths_above_the_limit() {
    assert_eq!(FrameHeader::parse(10u32.to_le_bytes(), 10).unwrap().len, 10);
    assert_eq!(FrameHeader::parse(0u32.to_le_bytes(), 10).unwrap().len, 0);
    match FrameHeader::parse(11u32.to_le_bytes(), 10) {
        Err(WireError::FrameTooLarge { len: 11, max: 10 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(FrameHeader::parse(u32::MAX.to_le_bytes(), CONTROL_FRAME_BYTES_MAX).is_err());
}

#[test]
fn control_messages_round_trip() {
    let mut bits = Bitmap::new(20);
    bits.set(0);
    bits.set(19);
    for msg in [
        hello("tokyo-3", "apac"),
        Control::Bitmap {
            release: release(),
            slot: 3,
            chunk_count: 20,
            bits: bits.as_bytes().to_vec(),
            reserve: true,
        },
        Control::Have {
            slot: 3,
            indices: vec![1, 2, 3],
        },
        Control::Drop { release: release() },
        Control::Offer {
            release: release(),
            slot: 4,
            chunk_count: 20,
            reserve: false,
        },
        Control::want(4, [2, 7, 300]),
        Control::want(4, []),
        Control::Overlay(true),
        Control::Status(vec![1, 2, 3]),
        Control::Summaries(vec![vec![4, 5]]),
        Control::Peers(vec![protocol::wire::PeerEntry {
            node: protocol::NodeId([9; 32]),
            site: "tokyo".into(),
            lan: "10.0.0.2:7402".parse().unwrap(),
            wan: "203.0.113.9:7402".parse().unwrap(),
        }]),
    ] {
        let f = frame(&msg);
        assert!(f.len() <= FRAME_HEADER_BYTES + CONTROL_FRAME_BYTES_MAX);
        assert_eq!(Control::decode(body(&f)).unwrap(), msg);
    }
}

#[test]
fn a_full_size_bitmap_fits_one_control_frame() {
    // The largest release's bitmap must be sendable, or such a release could never spread.
    let msg = Control::Bitmap {
        release: release(),
        slot: 0,
        chunk_count: CHUNKS_PER_RELEASE_MAX as u32,
        bits: Bitmap::full(CHUNKS_PER_RELEASE_MAX as u32)
            .as_bytes()
            .to_vec(),
        reserve: false,
    };
    let f = frame(&msg);
    assert!(f.len() - FRAME_HEADER_BYTES <= CONTROL_FRAME_BYTES_MAX);
    assert_eq!(Control::decode(body(&f)).unwrap(), msg);
    // And a full Have list too.
    let have = Control::Have {
        slot: u16::MAX,
        indices: vec![u32::MAX; HAVE_INDICES_MAX],
    };
    assert!(frame(&have).len() - FRAME_HEADER_BYTES <= CONTROL_FRAME_BYTES_MAX);
}

#[test]
fn control_decode_refuses_what_breaks_the_rules() {
    let bad_version = Control::Hello(Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        site: "a".into(),
        region: "b".into(),
        instance: 1,
        cert: Vec::new(),
        root_version: 0,
        revocations: (0, 0),
        orders: (0, 0),
        now_unix_ms: 0,
    });
    assert!(matches!(
        Control::decode(body(&frame(&bad_version))),
        Err(WireError::Version { .. })
    ));
    // Every version from the oldest spoken to the newest is taken, none older.
    let at = |v: u16| {
        let Control::Hello(mut h) = bad_version.clone() else {
            unreachable!()
        };
        h.protocol_version = v;
        Control::decode(body(&frame(&Control::Hello(h))))
    };
    for v in protocol::PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION {
        assert!(at(v).is_ok(), "version {v}");
    }
    assert!(matches!(
        at(protocol::PROTOCOL_VERSION_MIN - 1),
        Err(WireError::Version { .. })
    ));
    // Each ALPN name stands for one version in the range, the newest first.
    assert_eq!(
        protocol::wire::alpn_version(protocol::wire::DATA_ALPNS[0].0),
        Some(PROTOCOL_VERSION)
    );
    for (name, v) in protocol::wire::DATA_ALPNS {
        assert_eq!(protocol::wire::alpn_version(name), Some(v));
        assert!((protocol::PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&v));
    }
    assert_eq!(protocol::wire::alpn_version(b"p2pd-chunks/0"), None);
    let long = "x".repeat(NAME_BYTES_MAX + 1);
    for (site, region) in [
        ("", "r"),
        ("s", ""),
        ("../etc", "r"),
        ("s p", "r"),
        ("s", "r\n"),
        (long.as_str(), "r"),
        ("s", long.as_str()),
    ] {
        assert!(
            matches!(
                Control::decode(body(&frame(&hello(site, region)))),
                Err(WireError::Invalid(_))
            ),
            "{site:?}/{region:?} accepted"
        );
    }
    assert!(Control::decode(body(&frame(&hello(&"x".repeat(NAME_BYTES_MAX), "r")))).is_ok());

    for (count, len) in [(20u32, 2usize), (20, 4), (0, 1), (u32::MAX, 0)] {
        let msg = Control::Bitmap {
            release: release(),
            slot: 0,
            chunk_count: count,
            bits: vec![0; len],
            reserve: false,
        };
        assert!(
            Control::decode(body(&frame(&msg))).is_err(),
            "bitmap of {count} chunks in {len} bytes accepted"
        );
    }
    let too_many = Control::Bitmap {
        release: release(),
        slot: 0,
        chunk_count: CHUNKS_PER_RELEASE_MAX as u32 + 1,
        bits: vec![0; (CHUNKS_PER_RELEASE_MAX + 1).div_ceil(8)],
        reserve: false,
    };
    assert!(Control::decode(&protocol::codec::encode(&too_many)).is_err());

    for indices in [vec![], vec![0; HAVE_INDICES_MAX + 1]] {
        let msg = Control::Have { slot: 0, indices };
        assert!(Control::decode(&protocol::codec::encode(&msg)).is_err());
    }
    // A want list must increase and stay inside the largest release.
    for gaps in [
        vec![3, 0],
        vec![CHUNKS_PER_RELEASE_MAX as u32],
        vec![u32::MAX, u32::MAX],
    ] {
        let msg = Control::Want { slot: 0, gaps };
        assert!(Control::decode(&protocol::codec::encode(&msg)).is_err());
    }
    let offer = Control::Offer {
        release: release(),
        slot: 0,
        chunk_count: CHUNKS_PER_RELEASE_MAX as u32 + 1,
        reserve: false,
    };
    assert!(Control::decode(&protocol::codec::encode(&offer)).is_err());
    let bad_site = Control::Peers(vec![protocol::wire::PeerEntry {
        node: protocol::NodeId([9; 32]),
        site: "../x".into(),
        lan: "10.0.0.2:7402".parse().unwrap(),
        wan: "10.0.0.2:7402".parse().unwrap(),
    }]);
    assert!(Control::decode(&protocol::codec::encode(&bad_site)).is_err());
}

#[test]
fn a_want_list_reads_back_its_indices_at_about_a_byte_each() {
    let indices: Vec<u32> = (0..300).map(|i| i * 50 + 7).collect();
    let msg = Control::want(7, indices.clone());
    let Control::Want { gaps, .. } = &msg else {
        unreachable!()
    };
    assert_eq!(
        protocol::wire::want_indices(gaps).collect::<Vec<_>>(),
        indices
    );
    // 300 indices 50 apart: one byte each, plus the slot and the frame.
    assert!(frame(&msg).len() < 300 + 16, "{} bytes", frame(&msg).len());
}

#[test]
fn decoders_refuse_trailing_bytes_and_truncation() {
    let req = Request::Chunk(ChunkId::of(b"x"));
    let mut b = body(&frame(&req)).to_vec();
    assert_eq!(Request::decode(&b).unwrap(), req);
    b.push(0);
    assert!(Request::decode(&b).is_err());
    b.truncate(b.len() - 2);
    assert!(Request::decode(&b).is_err());
    assert!(Request::decode(&[]).is_err());
    assert!(Request::decode(&vec![0u8; REQUEST_FRAME_BYTES_MAX + 1]).is_err());

    let msg = Control::Drop { release: release() };
    let mut b = body(&frame(&msg)).to_vec();
    b.push(0);
    assert!(Control::decode(&b).is_err());
}

#[test]
fn reply_headers_must_fit_the_request() {
    let chunk = Request::Chunk(ChunkId::of(b"x"));
    let manifest = Request::Manifest(release());
    let enc = |r: &ReplyHeader| protocol::codec::encode(r);
    let ok = |r: ReplyHeader, q: &Request| ReplyHeader::decode(&enc(&r), q).is_ok();

    assert!(ok(
        ReplyHeader::Chunk {
            len: CHUNK_BYTES_MAX
        },
        &chunk
    ));
    assert!(!ok(
        ReplyHeader::Chunk {
            len: CHUNK_BYTES_MAX + 1
        },
        &chunk
    ));
    assert!(!ok(ReplyHeader::Chunk { len: 10 }, &manifest));
    assert!(!ok(ReplyHeader::Manifest { len: 10 }, &chunk));
    assert!(ok(ReplyHeader::Manifest { len: 10 }, &manifest));
    assert!(!ok(
        ReplyHeader::Manifest {
            len: protocol::envelope::ENVELOPE_BYTES_MAX as u32 + 1
        },
        &manifest
    ));
    // A compressed chunk: smaller than the chunk, which is within the limit; never for a
    // manifest.
    assert!(ok(
        ReplyHeader::ChunkZstd {
            len: 9,
            raw_len: 10
        },
        &chunk
    ));
    assert!(!ok(
        ReplyHeader::ChunkZstd {
            len: 10,
            raw_len: 10
        },
        &chunk
    ));
    assert!(!ok(
        ReplyHeader::ChunkZstd {
            len: 10,
            raw_len: CHUNK_BYTES_MAX + 1
        },
        &chunk
    ));
    assert!(!ok(
        ReplyHeader::ChunkZstd {
            len: 9,
            raw_len: 10
        },
        &manifest
    ));
    for q in [&chunk, &manifest] {
        assert!(ok(ReplyHeader::NotFound, q));
        assert!(ok(ReplyHeader::Busy, q));
    }
}

#[test]
fn announcements_are_checked() {
    let a = Announcement {
        protocol_version: protocol::wire::ANNOUNCEMENT_VERSION,
        release: release(),
        channel: "security/openssl".into(),
        version: 3,
    };
    assert_eq!(Announcement::decode(&a.encode()).unwrap(), a);
    let mut newer = a.clone();
    newer.protocol_version += 1;
    assert!(matches!(
        Announcement::decode(&newer.encode()),
        Err(WireError::Version { .. })
    ));
    for channel in ["", "../x", "Security", "a//b", "a/./b"] {
        let mut bad = a.clone();
        bad.channel = channel.into();
        assert!(
            Announcement::decode(&bad.encode()).is_err(),
            "{channel:?} accepted"
        );
    }
    assert!(Announcement::decode(&vec![0u8; ANNOUNCEMENT_BYTES_MAX + 1]).is_err());
}

#[test]
fn bitmaps_count_set_and_clear() {
    let mut b = Bitmap::new(10);
    assert_eq!((b.len(), b.count(), b.is_full()), (10, 0, false));
    assert!(b.set(3));
    assert!(!b.set(3), "setting a set bit reports no change");
    assert!(b.get(3) && !b.get(4));
    assert!(!b.set(10), "an index past the end is ignored");
    assert!(!b.get(10));
    assert!(b.clear(3));
    assert!(!b.clear(3));
    let full = Bitmap::full(10);
    assert!(full.is_full());
    assert_eq!(full.count(), 10);
    // Bits past the length in the last byte are never counted.
    assert_eq!(full.as_bytes(), &[0xff, 0x03]);
    let from = Bitmap::from_bytes(10, vec![0xff, 0xff]).unwrap();
    assert_eq!(from.count(), 10);
    assert!(Bitmap::from_bytes(10, vec![0xff]).is_none());
    assert!(Bitmap::from_bytes(10, vec![0, 0, 0]).is_none());
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// No decoder panics on any bytes, and whatever decodes re-encodes to valid input.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(msg) = Control::decode(&bytes) {
                prop_assert!(Control::decode(body(&frame(&msg))).is_ok());
            }
            if let Ok(req) = Request::decode(&bytes) {
                let _ = ReplyHeader::decode(&bytes, &req);
            }
            let _ = ReplyHeader::decode(&bytes, &Request::Manifest(release()));
            let _ = Announcement::decode(&bytes);
            if bytes.len() >= 4 {
                let _ = FrameHeader::parse(bytes[..4].try_into().unwrap(), REQUEST_FRAME_BYTES_MAX);
            }
        }

        /// Flipping any one bit of a valid control frame never panics the decoder.
        #[test]
        fn bit_flips_in_control_frames(i in 0usize..200, bit in 0u8..8) {
            let mut bits = Bitmap::new(64);
            bits.set(5);
            let msg = Control::Bitmap { release: release(), slot: 1, chunk_count: 64, bits: bits.as_bytes().to_vec() , reserve: false };
            let mut b = body(&frame(&msg)).to_vec();
            let i = i % b.len();
            b[i] ^= 1 << bit;
            let _ = Control::decode(&b);
        }
    }
}

proptest::proptest! {
    #[test]
    fn bitmap_iterators_agree_with_get(
        len in 0u32..300,
        a in proptest::collection::vec(0u32..300, 0..120),
        b in proptest::collection::vec(0u32..300, 0..120),
    ) {
        let mut x = Bitmap::new(len);
        let mut y = Bitmap::new(len);
        for i in a { x.set(i); }
        for i in b { y.set(i); }
        let ones: Vec<u32> = (0..len).filter(|&i| x.get(i)).collect();
        let zeros: Vec<u32> = (0..len).filter(|&i| !x.get(i)).collect();
        let and_not: Vec<u32> = (0..len).filter(|&i| x.get(i) && !y.get(i)).collect();
        proptest::prop_assert_eq!(x.ones().collect::<Vec<_>>(), ones);
        proptest::prop_assert_eq!(x.zeros().collect::<Vec<_>>(), zeros);
        proptest::prop_assert_eq!(x.ones_and_not(&y).collect::<Vec<_>>(), and_not);
        // Against a shorter bitmap, the missing tail reads as clear.
        let short = Bitmap::full(len / 2);
        let tail: Vec<u32> = (0..len).filter(|&i| x.get(i) && i >= len / 2).collect();
        proptest::prop_assert_eq!(x.ones_and_not(&short).collect::<Vec<_>>(), tail);
    }
}

#[test]
fn a_manifest_delta_round_trips_and_is_bounded() {
    use protocol::wire::{MANIFEST_DELTA_BYTES_MAX, ManifestDelta};
    let d = ManifestDelta {
        base: release(),
        manifest_len: 1000,
        envelope: vec![7; 100],
    };
    assert_eq!(ManifestDelta::decode(&d.encode()).unwrap(), d);
    let huge = ManifestDelta {
        manifest_len: protocol::manifest::MANIFEST_BYTES_MAX as u32 + 1,
        ..d.clone()
    };
    assert!(ManifestDelta::decode(&huge.encode()).is_err());
    assert!(ManifestDelta::decode(&[0xff; 8]).is_err());
    // Its reply: a delta within the bound, or the whole envelope.
    let req = Request::ManifestDelta(release());
    let ok = |h: ReplyHeader| ReplyHeader::decode(&protocol::codec::encode(&h), &req).is_ok();
    assert!(ok(ReplyHeader::Records {
        len: MANIFEST_DELTA_BYTES_MAX as u32
    }));
    assert!(!ok(ReplyHeader::Records {
        len: MANIFEST_DELTA_BYTES_MAX as u32 + 1
    }));
    assert!(ok(ReplyHeader::Manifest { len: 1000 }));
    assert!(!ok(ReplyHeader::Chunk { len: 10 }));
}
