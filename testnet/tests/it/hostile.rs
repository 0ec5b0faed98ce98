//! Hostile peers against real p2pd processes: a peer that serves corrupted chunks, peers that
//! offer forged or stale releases, and bytes on the data plane that are no valid frame.

use net::quic::codes;
use net::{BAN_DURATION, STRIKES_TO_BAN};
use protocol::codec;
use protocol::envelope::{ENVELOPE_BYTES_MAX, ManifestSignature, SignatureBytes};
use protocol::wire::{self, Bitmap, Control, REQUEST_FRAME_BYTES_MAX, Request};
use protocol::{ChunkId, ChunkRef, EntryKind, Manifest, PublisherKey, ReleaseId, SignedManifest};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testnet::fleet::{Fleet, workdir};
use testnet::rogue::{Link, Offer, Outcome, Rogue, exchange};
use testnet::scenario::Scenario;

fn small_fleet_scenario(
    name: &str,
    size_mib: u64,
    origin_mbit: u64,
    branch_nodes: usize,
) -> Scenario {
    Scenario::parse(&format!(
        "name = '{name}'\nseed = 11\ntimeout_s = 120\n[release]\nsize_mib = {size_mib}\n\
         [origin]\nup_mbit = {origin_mbit}\n[wan]\nlatency_ms = 2\n\
         [[sites]]\nname = 'branch'\nnodes = {branch_nodes}\n"
    ))
    .unwrap()
}

async fn link(fleet: &Fleet, rogue: &Rogue, i: usize, site: &str) -> Link {
    let st = fleet.status(i).await.unwrap();
    rogue
        .connect(&st.peer_id, fleet.nodes[i].data_addr, site)
        .await
        .unwrap()
}

fn bitmap_of(release: ReleaseId, chunks: usize) -> Control {
    Control::Bitmap {
        release,
        slot: 0,
        chunk_count: chunks as u32,
        bits: Bitmap::full(chunks as u32).as_bytes().to_vec(),
        reserve: false,
    }
}

fn manifest_of(envelope: &[u8]) -> Manifest {
    let signed: SignedManifest =
        codec::decode::<_, ENVELOPE_BYTES_MAX>(envelope, "envelope").unwrap();
    Manifest::decode(&signed.manifest_bytes).unwrap()
}

/// A same-site peer that claims every chunk and serves bytes that do not match their ids, or
/// compressed chunks that are decompression bombs, is banned by each node it serves after
/// [`STRIKES_TO_BAN`] bad chunks (no bomb grows past its chunk's length); both nodes complete
/// from honest peers, byte-identical; the banned peer cannot reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_serving_corrupt_chunks_or_decompression_bombs_is_banned_and_honest_nodes_complete() {
    // 8 MiB at 8 Mbit/s from the origin: 8 s, long enough that the rogue is offered
    // chunks the nodes still lack.
    let (_guard, dir) = workdir();
    let fleet = Fleet::start(small_fleet_scenario("corrupt", 8, 8, 2), &dir, true)
        .await
        .unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();

    let rogue = Rogue::new().unwrap();
    // Connected before the release exists: to the branch nodes it is one more LAN peer.
    let mut victims = Vec::new();
    for i in [1, 2] {
        let mut l = link(&fleet, &rogue, i, "branch").await;
        l.drain_control();
        victims.push(l);
    }
    // To the origin it is a branch node, so the origin's initial seeding is not split with
    // a site that will never fetch.
    let to_origin = link(&fleet, &rogue, 0, "branch").await;

    let payload = fleet.make_payload(1).unwrap();
    let id = fleet.publish(&payload, 1).unwrap();
    let release: ReleaseId = id.parse().unwrap();
    let envelope = to_origin.request_manifest(release).await.unwrap();
    to_origin.close();
    let chunks = manifest_of(&envelope).unique_chunks();
    // To the first victim every chunk is a decompression bomb: a frame that states no size
    // and holds 64 MiB, or one that states the chunk's size followed by one of 64 MiB
    // more. To the second, the right length of the wrong bytes.
    let bombs = Arc::new(Offer::default());
    let wrong = Arc::new(Offer::default());
    let unsized_bomb = {
        use std::io::Write;
        let mut z = Vec::new();
        let mut enc = zstd::stream::write::Encoder::new(&mut z, 3).unwrap();
        enc.include_contentsize(false).unwrap();
        enc.write_all(&vec![0u8; 64 << 20]).unwrap();
        enc.finish().unwrap();
        z
    };
    let big_frame = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
    let mut bombed = 0;
    for (k, c) in chunks.iter().enumerate() {
        let bomb = if k % 2 == 0 {
            unsized_bomb.clone()
        } else {
            let mut z = zstd::bulk::compress(&vec![0u8; c.len as usize], 3).unwrap();
            z.extend_from_slice(&big_frame);
            z
        };
        // A bomb must look smaller than its chunk; a chunk too small for one is wrong bytes.
        if bomb.len() < c.len as usize {
            bombs.add_compressed(c.id, c.len, bomb);
            bombed += 1;
        } else {
            bombs.add_chunk(c.id, vec![0xA5; c.len as usize]);
        }
        wrong.add_chunk(c.id, vec![0xA5; c.len as usize]);
    }
    assert!(
        bombed * 10 >= chunks.len() * 9,
        "{bombed} of {}",
        chunks.len()
    );
    for (l, offer) in victims.iter_mut().zip([&bombs, &wrong]) {
        offer.add_manifest(release, envelope.clone());
        l.serve(offer.clone());
        l.send(&bitmap_of(release, chunks.len())).await.unwrap();
    }

    for l in &victims {
        let code = tokio::time::timeout(Duration::from_secs(60), l.closed_code())
            .await
            .expect("the rogue was never disconnected");
        assert_eq!(code, Some(u64::from(codes::BANNED)));
    }
    for offer in [&bombs, &wrong] {
        let asked = offer.chunk_requests.load(Ordering::Relaxed);
        assert!(
            asked >= u64::from(STRIKES_TO_BAN),
            "only {asked} chunks were asked of the rogue"
        );
    }

    for i in [1, 2] {
        fleet
            .wait_complete(i, &id, Duration::from_secs(90))
            .await
            .unwrap();
        let st = fleet.status(i).await.unwrap();
        assert!(
            st.banned.contains(&rogue.peer_id.to_string()),
            "{} does not list the rogue as banned: {:?}",
            fleet.nodes[i].name,
            st.banned
        );
        let r = st.releases.iter().find(|r| r.id == id).unwrap();
        assert_eq!(r.chunks_have, r.chunks_total);
        // The audit log holds the release accepted, fetched, and the ban, in order.
        let none: Option<&()> = None;
        let log: store::audit::AuditLog = fleet.nodes[i]
            .client()
            .call("GET", "/v1/audit", none)
            .await
            .unwrap();
        let events: Vec<&store::audit::AuditEvent> =
            log.entries.iter().map(|l| &l.entry.event).collect();
        let banned = events.iter().position(|e| {
            matches!(e, store::audit::AuditEvent::PeerBanned { peer, .. } if *peer == rogue.peer_id.to_string())
        });
        let accepted = events.iter().position(
            |e| matches!(e, store::audit::AuditEvent::Announced { release, .. } if *release == id),
        );
        let fetched = events.iter().position(
            |e| matches!(e, store::audit::AuditEvent::Completed { release, .. } if *release == id),
        );
        assert!(
            banned.is_some() && accepted.is_some() && fetched.is_some(),
            "{events:?}"
        );
        assert!(accepted < banned && accepted < fetched, "{events:?}");
        assert!(store::audit::verify_sealed(&log).is_ok());
    }
    assert_eq!(fleet.check_exports(&id, 1).await.unwrap(), 3);

    // While the ban lasts, a new connection is closed as soon as it is made.
    assert!(BAN_DURATION > Duration::from_secs(60));
    let st = fleet.status(1).await.unwrap();
    let conn = rogue
        .connect_raw(&st.peer_id, fleet.nodes[1].data_addr)
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(15), conn.closed())
        .await
        .unwrap()
    {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), u64::from(codes::BANNED));
        }
        other => panic!("reconnect of a banned peer ended with {other}"),
    }
}

/// What a forged or stale release looks like, and the refusal reason that must name it.
struct Forgery {
    what: &'static str,
    envelope: SignedManifest,
    reason: &'static str,
}

/// Releases that are unsigned, signed by an untrusted key, carry a signature that does not
/// verify, are expired or are older than what the node has are refused after their manifest
/// is read, and not one of their chunks is asked for. A release built the same way but
/// signed properly is fetched from the same peer, so the refusals are the gate's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_stale_releases_are_refused_and_nothing_is_fetched() {
    let (_guard, dir) = workdir();
    let fleet = Fleet::start(small_fleet_scenario("forged", 2, 400, 1), &dir, true)
        .await
        .unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let v2 = fleet.distribute(2, |_| {}).await.unwrap();

    let rogue = Rogue::new().unwrap();
    let to_origin = link(&fleet, &rogue, 0, "branch").await;
    let genuine = to_origin
        .request_manifest(v2.release.parse().unwrap())
        .await
        .unwrap();
    to_origin.close();
    let template = manifest_of(&genuine);
    let trusted = store::identity::read_key(fleet.publisher_key()).unwrap();
    let stranger = store::identity::generate().unwrap();

    // Every variant replaces README.txt with bytes only the rogue has: a node that accepted
    // one would have to ask the rogue for that chunk.
    let offer = Arc::new(Offer::default());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let variant = |n: i64, version: u64| -> Manifest {
        let payload = format!("not what the publisher shipped, variant {n}\n").into_bytes();
        let chunk = ChunkRef {
            id: ChunkId::of(&payload),
            len: payload.len() as u32,
        };
        offer.add_chunk(chunk.id, payload.clone());
        let mut m = template.clone();
        m.version = version;
        m.created_unix_s = now - 60 + n;
        let entry = m
            .entries
            .iter_mut()
            .find(|e| e.path == "README.txt")
            .expect("the testnet payload has a README.txt");
        let EntryKind::File { size, chunks, .. } = &mut entry.kind else {
            panic!("README.txt is not a file");
        };
        m.total_bytes = m.total_bytes - *size + payload.len() as u64;
        *size = payload.len() as u64;
        *chunks = vec![chunk];
        m
    };
    let mut forged_sig = protocol::sign_manifest(&variant(3, 3), &stranger);
    forged_sig.signatures[0].key = PublisherKey(trusted.verifying_key().to_bytes());
    let mut expired = variant(4, 3);
    expired.created_unix_s = now - 7200;
    expired.expires_unix_s = now - 60;
    let forgeries = vec![
        Forgery {
            what: "unsigned",
            envelope: {
                let mut e = protocol::sign_manifest(&variant(1, 3), &trusted);
                e.signatures.clear();
                e
            },
            reason: "not signed",
        },
        Forgery {
            what: "signed by an untrusted key",
            envelope: protocol::sign_manifest(&variant(2, 3), &stranger),
            reason: "unknown key",
        },
        Forgery {
            what: "signature that does not verify",
            envelope: forged_sig,
            reason: "does not verify",
        },
        Forgery {
            what: "tampered after signing",
            envelope: {
                let mut e = protocol::sign_manifest(&variant(5, 3), &trusted);
                let good = protocol::sign_manifest(&variant(6, 3), &trusted);
                e.signatures = vec![ManifestSignature {
                    key: good.signatures[0].key,
                    signature: SignatureBytes(good.signatures[0].signature.0),
                }];
                e
            },
            reason: "does not verify",
        },
        Forgery {
            what: "expired",
            envelope: protocol::sign_manifest(&expired, &trusted),
            reason: "expired",
        },
        Forgery {
            what: "older than the node's version",
            envelope: protocol::sign_manifest(&variant(7, 1), &trusted),
            reason: "not above the highest",
        },
    ];

    let mut l = link(&fleet, &rogue, 1, "branch").await;
    l.drain_control();
    l.serve(offer.clone());
    for f in &forgeries {
        let id = f.envelope.release_id();
        offer.add_manifest(id, f.envelope.encode());
        let chunks = manifest_of(&f.envelope.encode()).unique_chunks().len();
        l.send(&bitmap_of(id, chunks)).await.unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st = fleet.status(1).await.unwrap();
        if forgeries.iter().all(|f| {
            st.refused
                .iter()
                .any(|r| r.id == f.envelope.release_id().to_hex())
        }) {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "not every forgery was refused: {:?}",
            st.refused
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for f in &forgeries {
        let id = f.envelope.release_id().to_hex();
        let refusal = st.refused.iter().find(|r| r.id == id).unwrap();
        assert!(
            refusal.reason.contains(f.reason),
            "{}: refused for {:?}, expected {:?}",
            f.what,
            refusal.reason,
            f.reason
        );
        assert!(
            !st.releases.iter().any(|r| r.id == id),
            "{} is listed as a release",
            f.what
        );
    }
    assert_eq!(
        offer.chunk_requests.load(Ordering::Relaxed),
        0,
        "a chunk of a refused release was requested"
    );
    let manifests_read = offer.manifest_requests.load(Ordering::Relaxed);
    assert_eq!(manifests_read, forgeries.len() as u64);

    // Offered again: the refusal is remembered, the manifest is not even read again.
    let again = &forgeries[0].envelope;
    l.send(&bitmap_of(again.release_id(), 1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        offer.manifest_requests.load(Ordering::Relaxed),
        manifests_read
    );

    // The control: the same construction, properly signed and newer, is fetched from the
    // rogue (its README chunk exists nowhere else).
    let good = protocol::sign_manifest(&variant(8, 3), &trusted);
    let good_id = good.release_id();
    offer.add_manifest(good_id, good.encode());
    let chunks = manifest_of(&good.encode()).unique_chunks().len();
    l.send(&bitmap_of(good_id, chunks)).await.unwrap();
    fleet
        .wait_complete(1, &good_id.to_hex(), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(offer.chunk_requests.load(Ordering::Relaxed) >= 1);
}

/// Length prefixes past the limit, bodies that do not decode, frames cut short or never
/// finished, and a broken control stream: each closes that stream (or, for the control
/// stream, that connection) with the protocol error code, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_stream_and_the_node_keeps_serving() {
    let (_guard, dir) = workdir();
    let fleet = Fleet::start(small_fleet_scenario("frames", 1, 400, 1), &dir, true)
        .await
        .unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let v1 = fleet.distribute(1, |_| {}).await.unwrap();
    let release: ReleaseId = v1.release.parse().unwrap();

    let rogue = Rogue::new().unwrap();
    let mut l = link(&fleet, &rogue, 0, "branch").await;
    l.drain_control();
    let protocol_error = Outcome::Reset(u64::from(codes::PROTOCOL));

    let huge = u32::MAX.to_le_bytes().to_vec();
    let over = ((REQUEST_FRAME_BYTES_MAX + 1) as u32)
        .to_le_bytes()
        .to_vec();
    let mut garbage = 4u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 4]);
    let mut trailing = wire::frame(&Request::Manifest(release));
    let body_len = trailing.len() - wire::FRAME_HEADER_BYTES;
    trailing[..4].copy_from_slice(&((body_len + 1) as u32).to_le_bytes());
    trailing.push(0);
    let mut short = 40u32.to_le_bytes().to_vec();
    short.extend_from_slice(&[1, 2, 3]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length prefix of 4 GiB", huge),
        ("length prefix one past the limit", over),
        ("body that does not decode", garbage),
        ("request with a trailing byte", trailing),
        ("frame cut short by the end of the stream", short.clone()),
        ("half a length prefix", vec![7, 0]),
    ];

    // A stream that starts a frame and then says nothing: reset when the node's patience
    // ends, while every other stream is served meanwhile.
    let stalled = {
        let conn = l.conn.clone();
        let short = short.clone();
        tokio::spawn(async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&short).await.unwrap();
            let r = recv.read_to_end(1024).await;
            drop(send);
            r
        })
    };

    for (what, bytes) in &cases {
        assert_eq!(l.exchange(bytes, true).await, protocol_error, "{what}");
    }
    // Many at once, then a good request on the same connection.
    let mut many = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (conn, bytes) = (l.conn.clone(), cases[0].1.clone());
        many.spawn(async move { exchange(&conn, &bytes, true).await });
    }
    while let Some(outcome) = many.join_next().await {
        assert_eq!(outcome.unwrap(), protocol_error);
    }
    let envelope = l.request_manifest(release).await.unwrap();
    assert_eq!(release_of(&envelope), release);

    match stalled.await.unwrap() {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(code.into_inner(), u64::from(codes::PROTOCOL));
        }
        other => panic!("stalled stream ended with {other:?}"),
    }

    // The control stream: an oversized frame ends the whole connection.
    l.send_raw_control(&u32::MAX.to_le_bytes()).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(15), l.closed_code())
        .await
        .unwrap();
    assert_eq!(code, Some(u64::from(codes::PROTOCOL)));

    // A connection whose first control message is not a hello, or a hello with a site name
    // that is not one, is closed before it is a peer.
    let st = fleet.status(0).await.unwrap();
    for first in [
        wire::frame(&Control::Drop { release }),
        wire::frame(&Control::Hello(wire::Hello {
            protocol_version: protocol::PROTOCOL_VERSION,
            site: "../../etc".into(),
            region: "x".into(),
            instance: 1,
            cert: Vec::new(),
            root_version: 0,
            revocations: (0, 0),
            orders: (0, 0),
            now_unix_ms: 0,
        })),
        wire::frame(&Control::Hello(wire::Hello {
            protocol_version: protocol::PROTOCOL_VERSION + 1,
            site: "branch".into(),
            region: "x".into(),
            instance: 1,
            cert: Vec::new(),
            root_version: 0,
            revocations: (0, 0),
            orders: (0, 0),
            now_unix_ms: 0,
        })),
    ] {
        let conn = rogue
            .connect_raw(&st.peer_id, fleet.nodes[0].data_addr)
            .await
            .unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&first).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(15), conn.closed())
            .await
            .unwrap()
        {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code.into_inner(), u64::from(codes::PROTOCOL));
            }
            other => panic!("bad first message ended the connection with {other}"),
        }
    }

    // The node is alive, not banned-by-accident, and serves a fresh connection.
    assert!(fleet.nodes[0].is_running());
    let fresh = link(&fleet, &rogue, 0, "branch").await;
    let envelope = fresh.request_manifest(release).await.unwrap();
    assert_eq!(release_of(&envelope), release);
}

fn release_of(envelope: &[u8]) -> ReleaseId {
    codec::decode::<SignedManifest, ENVELOPE_BYTES_MAX>(envelope, "envelope")
        .unwrap()
        .release_id()
}

/// A payload of `size` random bytes in one file, different for every `seed`.
fn random_payload(dir: &std::path::Path, name: &str, size: usize, seed: u64) -> std::path::PathBuf {
    use rand::{RngCore, SeedableRng};
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap();
    let mut bytes = vec![0u8; size];
    rand_chacha::ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    std::fs::write(path.join("patch.bin"), bytes).unwrap();
    path
}

/// Same-site members that hold a fetch back without ever sending a bad byte: one claims
/// every chunk and never answers a request, the other sends an empty bitmap again every
/// 5 s. Liveness comes from chunks delivered, not from messages: the first is snubbed once
/// it has let [`SOURCE_STALL`] pass with requests outstanding, the second leaves the
/// rendezvous set once it has not progressed for [`MEMBER_STALL`]; the site completes
/// within 2 × `MEMBER_STALL` of a release of the same size fetched without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_never_serve_or_never_progress_delay_a_site_by_at_most_two_stalls() {
    use scheduler::fetch::{MEMBER_STALL, SOURCE_STALL};
    let (_guard, dir) = workdir();
    let fleet = Fleet::start(small_fleet_scenario("liveness", 8, 8, 2), &dir, true)
        .await
        .unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let size = 8 << 20;

    // The normal time: a release nobody hinders.
    let start = Instant::now();
    let plain = fleet
        .publish_on(
            "liveness/plain",
            &random_payload(&dir, "plain", size, 1),
            1,
            &[],
        )
        .unwrap();
    for i in [1, 2] {
        fleet
            .wait_complete(i, &plain, Duration::from_secs(120))
            .await
            .unwrap();
    }
    let normal = start.elapsed();

    let silent = Rogue::new().unwrap();
    let idle = Rogue::new().unwrap();
    let mut silent_links = Vec::new();
    let mut idle_links = Vec::new();
    for i in [1, 2] {
        let mut l = link(&fleet, &silent, i, "branch").await;
        l.drain_control();
        silent_links.push(l);
        let mut l = link(&fleet, &idle, i, "branch").await;
        l.drain_control();
        idle_links.push(l);
    }
    let to_origin = link(&fleet, &silent, 0, "branch").await;
    let start = Instant::now();
    let id = fleet
        .publish_on(
            "liveness/hindered",
            &random_payload(&dir, "hindered", size, 2),
            1,
            &[],
        )
        .unwrap();
    let release: ReleaseId = id.parse().unwrap();
    let envelope = to_origin.request_manifest(release).await.unwrap();
    to_origin.close();
    let chunks = manifest_of(&envelope).unique_chunks().len();
    // The silent one claims everything and answers nothing (it never accepts a stream).
    for l in &mut silent_links {
        l.send(&bitmap_of(release, chunks)).await.unwrap();
    }
    // The idle one says, again and again, that it has nothing.
    let empty = Control::Bitmap {
        release,
        slot: 0,
        chunk_count: chunks as u32,
        bits: Bitmap::new(chunks as u32).as_bytes().to_vec(),
        reserve: false,
    };
    let nagging = tokio::spawn(async move {
        loop {
            for l in &mut idle_links {
                if l.send(&empty).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let bound = normal + 2 * MEMBER_STALL;
    for i in [1, 2] {
        fleet
            .wait_complete(i, &id, bound + Duration::from_secs(60))
            .await
            .unwrap();
    }
    let hindered = start.elapsed();
    nagging.abort();
    eprintln!("complete without the rogues after {normal:?}, with them after {hindered:?}");
    assert!(SOURCE_STALL <= MEMBER_STALL);
    assert!(
        hindered <= bound,
        "with the rogues {hindered:?}, without {normal:?}: more than 2 × {MEMBER_STALL:?} later"
    );
}

/// A member that announces thousands of made-up releases (bitmaps of ids no manifest has,
/// and "not found" when asked for them) holds a bounded share of each node's learning: the
/// nodes learn and complete a real release published during the flood within twice the
/// time they take without one, and ban the flooder for denying what it announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_announcements_neither_stalls_learning_nor_goes_unpunished() {
    let (_guard, dir) = workdir();
    let fleet = Fleet::start(small_fleet_scenario("flood", 2, 200, 2), &dir, true)
        .await
        .unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let slowest = |d: &testnet::fleet::Distribution| {
        d.completion_s.iter().map(|(_, s)| *s).fold(0.0, f64::max)
    };
    // The first version, then a second one (a delta, like the one measured) without a flood.
    fleet.distribute(1, |_| {}).await.unwrap();
    let quiet = fleet.distribute(2, |_| {}).await.unwrap();
    let base = slowest(&quiet);

    // Each branch node hears 3,000 made-up releases from the rogue, as fast as it sends.
    let rogue = Rogue::new().unwrap();
    let offer = Arc::new(Offer::default());
    let mut links = Vec::new();
    for i in 1..=2 {
        // From another site: a member of the nodes' own site would also be designated to
        // fetch a share of the release and delay it by its stall bound, which is not what
        // this measures (hostile.rs's never-serving members test does).
        let mut l = link(&fleet, &rogue, i, "elsewhere").await;
        l.serve(offer.clone());
        for _ in 0..3_000 {
            let mut id = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
            if l.send(&bitmap_of(ReleaseId(id), 64)).await.is_err() {
                break;
            }
        }
        links.push(l);
    }
    let flooded = fleet.distribute(3, |_| {}).await.unwrap();
    let during = slowest(&flooded);
    eprintln!("flood: a release completes in {during:.2} s during the flood, {base:.2} s without");
    // Twice the quiet time, and a second for a loaded machine's scheduling.
    assert!(
        during <= 2.0 * base + 1.0,
        "{during:.2} s during the flood against {base:.2} s without"
    );
    assert!(
        offer.manifest_requests.load(Ordering::Relaxed) < 3 * 2 * (STRIKES_TO_BAN as u64 + 2),
        "the nodes kept asking the flooder: {} manifest requests",
        offer.manifest_requests.load(Ordering::Relaxed)
    );
    for i in 1..=2 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = fleet.status(i).await.unwrap();
            if st.banned.contains(&rogue.peer_id.to_string()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not ban the flooder: {:?}",
                fleet.nodes[i].name,
                st.banned
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
