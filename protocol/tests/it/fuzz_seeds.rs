//! The fuzz targets' seed corpus (`fuzz/seeds/TARGET/`): valid encodings of every decoder's
//! input, made here from the same samples as the tests, with the byte that picks the decoder
//! in front where a target has several. The test fails when a committed seed is no longer
//! what the code encodes (a format changed); `P2PD_WRITE_FUZZ_SEEDS=1` writes them anew.

use super::*;
use protocol::cert::{CERT_FORMAT_VERSION, NodeCert, SignedCert};
use protocol::orders::{Orders, SignedOrders};
use protocol::revoke::{Revocations, SignedRevocations};
use protocol::root::SignedRoot;
use protocol::status::{ReleaseState, ReleaseStatus, SignedStatus, StatusBody};
use protocol::testkeys::{named, root};
use protocol::wire::{Bitmap, Control, Hello, Request};
use protocol::{ChunkId, NodeId, ReleaseId};
use std::path::PathBuf;

fn picked(pick: u8, bytes: Vec<u8>) -> Vec<u8> {
    let mut out = vec![pick];
    out.extend(bytes);
    out
}

/// Every seed, as (target, name, bytes).
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let manifest = sample_manifest();
    let envelope = protocol::sign_manifest(&manifest, &key(7)).encode();
    let node = NodeId(key(9).verifying_key().to_bytes());
    let hello = Control::Hello(Hello {
        protocol_version: protocol::PROTOCOL_VERSION,
        site: "branch-17".into(),
        region: "emea".into(),
        instance: 42,
        cert: Vec::new(),
        root_version: 1,
        revocations: (1, 2),
        orders: (1, 1),
        now_unix_ms: NOW * 1000,
    });
    let mut bits = Bitmap::new(100);
    bits.set(3);
    bits.set(99);
    let mut bitmap = 100u32.to_le_bytes().to_vec();
    bitmap.extend(bits.as_bytes());
    let status = StatusBody {
        node,
        site: "branch-17".into(),
        installs: true,
        seq: 1,
        at_unix_s: NOW,
        releases: vec![ReleaseStatus {
            release: ReleaseId::of_manifest_bytes(b"sample"),
            channel: "security/openssl".into(),
            version: 7,
            published_unix_s: NOW - 60,
            severity: Severity::Critical,
            state: ReleaseState::Downloading,
            chunks_have: 3,
            chunks_total: 10,
            since_unix_s: NOW - 30,
            until_unix_s: None,
            error: None,
            ring: 0,
        }],
    };
    let cert = SignedCert::sign(
        NodeCert {
            format_version: CERT_FORMAT_VERSION,
            fleet: "bank".into(),
            node: NodeId(key(7).verifying_key().to_bytes()),
            site: "branch-17".into(),
            region: "emea".into(),
            labels: vec![("os".into(), "debian12".into())],
            not_before_unix_s: NOW - 60,
            expires_unix_s: NOW + 86_400,
            issuer: named(50).key,
        },
        &key(50),
    );
    let signed_root = SignedRoot::sign(root(), &[&key(1)]);
    let revocations = SignedRevocations::sign(Revocations::empty("bank"), &key(60));
    let orders = SignedOrders::sign(Orders::empty("bank"), &key(60));
    vec![
        ("manifest", "envelope", envelope),
        ("manifest", "manifest", manifest.canonical_bytes()),
        ("wire", "hello", picked(0, protocol::codec::encode(&hello))),
        (
            "wire",
            "request-chunk",
            picked(
                1,
                protocol::codec::encode(&Request::Chunk(ChunkId::of(b"x"))),
            ),
        ),
        (
            "wire",
            "request-manifest",
            picked(
                1,
                protocol::codec::encode(&Request::Manifest(ReleaseId::of_manifest_bytes(b"m"))),
            ),
        ),
        ("wire", "bitmap", picked(6, bitmap)),
        (
            "status",
            "record",
            picked(0, SignedStatus::sign(&status, &key(9)).encode()),
        ),
        (
            "status",
            "body",
            picked(0, protocol::codec::encode(&status)),
        ),
        ("trust", "root", picked(0, signed_root.encode())),
        (
            "trust",
            "root-json",
            picked(1, signed_root.to_json().into_bytes()),
        ),
        ("trust", "cert", picked(2, cert.encode())),
        ("trust", "cert-text", picked(2, cert.to_text().into_bytes())),
        ("trust", "revocations", picked(3, revocations.encode())),
        ("trust", "orders", picked(4, orders.encode())),
        (
            "rollout",
            "target",
            picked(0, b"os=debian12,role!=atm|kiosk".to_vec()),
        ),
        (
            "rollout",
            "requires",
            picked(1, b"security/openssl>=3,base/libc".to_vec()),
        ),
        (
            "rollout",
            "rings",
            picked(2, b"canary: labels ring=0; pilot: 5%; broad: rest".to_vec()),
        ),
        (
            "rollout",
            "gate",
            picked(3, b"installed>=95%,failed<=1%,soak=2h".to_vec()),
        ),
    ]
}

#[test]
fn the_fuzz_seeds_are_what_the_code_encodes_today() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = std::env::var_os("P2PD_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let path = dir.join(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let held = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; write the seeds with P2PD_WRITE_FUZZ_SEEDS=1",
                path.display()
            )
        });
        assert!(
            held == bytes,
            "{} is not what the code encodes now; write the seeds again with P2PD_WRITE_FUZZ_SEEDS=1",
            path.display()
        );
    }
}
