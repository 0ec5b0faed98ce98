//! Integration tests of the protocol crate: every manifest validation rule has a rejection
//! test that checks the error names the rule; the wire formats are checked against their
//! limits and arbitrary bytes.

mod envelope;
mod fuzz_seeds;
mod validation;
mod wire;

use ed25519_dalek::SigningKey;
use protocol::{
    ChunkId, ChunkRef, ChunkingParams, Entry, EntryKind, MANIFEST_FORMAT_VERSION, Manifest,
    PublisherKey, Severity, TrustPolicy, TrustedPublisher,
};

/// Fixed "now" for every test: 2026-11-23T00:00:00Z.
pub(crate) const NOW: i64 = 1_795_392_000;

pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub(crate) fn policy_for(keys: &[(&SigningKey, &[&str])]) -> TrustPolicy {
    TrustPolicy {
        publishers: keys
            .iter()
            .enumerate()
            .map(|(i, (k, prefixes))| TrustedPublisher {
                name: format!("publisher-{i}"),
                key: PublisherKey(k.verifying_key().to_bytes()),
                channel_prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
                approver: false,
            })
            .collect(),
        threshold: 1,
        rules: Vec::new(),
    }
}

pub(crate) fn chunk(seed: u8, len: u32) -> ChunkRef {
    ChunkRef {
        id: ChunkId::of(&[seed]),
        len,
    }
}

/// A valid manifest: a directory `bin` with a file and a symlink, and a top-level file.
pub(crate) fn sample_manifest() -> Manifest {
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        channel: "security/openssl".into(),
        version: 7,
        created_unix_s: NOW - 60,
        expires_unix_s: NOW + 30 * 86_400,
        severity: Severity::Critical,
        cvss: Some("9.8".parse().unwrap()),
        emergency: false,
        download_windows: Vec::new(),
        install_windows: Vec::new(),
        chunking: ChunkingParams::default(),
        entries: vec![
            Entry {
                path: "README".into(),
                kind: EntryKind::File {
                    mode: 0o644,
                    size: 10,
                    chunks: vec![chunk(1, 10)],
                },
            },
            Entry {
                path: "bin".into(),
                kind: EntryKind::Dir { mode: 0o755 },
            },
            Entry {
                path: "bin/link".into(),
                kind: EntryKind::Symlink {
                    target: "tool".into(),
                },
            },
            Entry {
                path: "bin/tool".into(),
                kind: EntryKind::File {
                    mode: 0o755,
                    size: 300,
                    chunks: vec![chunk(2, 100), chunk(3, 200)],
                },
            },
        ],
        total_bytes: 310,
        rollout: Default::default(),
        patches: Vec::new(),
    }
}
