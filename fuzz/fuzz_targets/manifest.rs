//! Manifest envelopes and manifests, as they come from a peer or the store: decode, check
//! signatures and structure; and the fuzzer's bytes signed by a trusted key, so that the
//! manifest's own rules (paths, sizes, chunk lists, patches, rollout) are reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::envelope::{self, SignedManifest, TrustPolicy, TrustedPublisher};
use protocol::{Manifest, PublisherKey};

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

fn policy() -> TrustPolicy {
    TrustPolicy {
        publishers: vec![TrustedPublisher {
            name: "fuzz".into(),
            key: PublisherKey(key().verifying_key().to_bytes()),
            channel_prefixes: vec!["security".into()],
            approver: false,
        }],
        threshold: 1,
        rules: Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let policy = policy();
    // As an envelope from a peer.
    if let Ok(env) = SignedManifest::decode(data) {
        let _ = env.release_id();
    }
    let _ = envelope::verify_signed(data, &policy);
    // As manifest bytes, checked by its own rules.
    if let Ok(m) = Manifest::decode(data) {
        let _ = m.validate();
        let _ = m.units();
        let _ = m.unique_chunks();
    }
    // The same bytes signed by the trusted key: everything after the signature check.
    for format in [1u16, 2, 3] {
        let mut env = SignedManifest {
            format_version: format,
            manifest_bytes: data.to_vec(),
            signatures: Vec::new(),
        };
        env.add_signature(envelope::signature_over(data, &key()));
        if let Ok(v) = envelope::verify_signed(&env.encode(), &policy) {
            let _ = v.check_fresh(1_800_000_000, Some(1));
        }
    }
});
