//! What admitting a peer costs in a fleet with a root: decoding and verifying its node
//! certificate (one ed25519 signature, the CA key looked up in the root), done once per new
//! connection, beside an ed25519 signature check alone for scale. The bar: ≤ 1 ms per new
//! connection.

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use protocol::cert::{CERT_FORMAT_VERSION, NodeCert, SignedCert};
use protocol::root::{NamedKey, ROOT_FORMAT_VERSION, Root};
use protocol::{NodeId, PublisherKey};
use std::hint::black_box;

const NOW: i64 = 1_800_000_000;

fn named(i: u8) -> NamedKey {
    NamedKey {
        name: format!("k{i}"),
        key: PublisherKey(SigningKey::from_bytes(&[i; 32]).verifying_key().to_bytes()),
    }
}

fn bench(c: &mut Criterion) {
    let ca = SigningKey::from_bytes(&[50; 32]);
    let node = NodeId(SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes());
    // A root with as many CA keys as it may name: the issuer is the last one looked up.
    let mut ca_keys: Vec<NamedKey> = (100..163).map(named).collect();
    ca_keys.push(NamedKey {
        name: "ca".into(),
        key: PublisherKey(ca.verifying_key().to_bytes()),
    });
    let root = Root {
        format_version: ROOT_FORMAT_VERSION,
        fleet: "bank".into(),
        version: 1,
        expires_unix_s: NOW + 86_400,
        root_keys: vec![named(1)],
        root_threshold: 1,
        ca_keys,
        publishers: Vec::new(),
        approvers: Vec::new(),
        approvals: Vec::new(),
        operators: Vec::new(),
    };
    let bytes = SignedCert::sign(
        NodeCert {
            format_version: CERT_FORMAT_VERSION,
            fleet: "bank".into(),
            node,
            site: "branch-042".into(),
            region: "emea".into(),
            labels: vec![
                ("impact".into(), "high".into()),
                ("role".into(), "atm".into()),
            ],
            not_before_unix_s: NOW,
            expires_unix_s: NOW + 90 * 86_400,
            issuer: PublisherKey([0; 32]),
        },
        &ca,
    )
    .encode();
    let mut group = c.benchmark_group("membership");
    group.bench_function("admit_peer_decode_and_verify_certificate", |b| {
        b.iter(|| {
            let cert = SignedCert::decode(black_box(&bytes)).unwrap();
            cert.verify(&root, &node, NOW).unwrap();
            black_box(cert.cert.site.len())
        })
    });
    let message = vec![7u8; 200];
    let signature = ca.sign(&message);
    let public = ca.verifying_key();
    group.bench_function("ed25519_verify_alone", |b| {
        b.iter(|| public.verify(black_box(&message), &signature).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
