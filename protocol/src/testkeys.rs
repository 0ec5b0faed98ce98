//! Keys and a fleet root that the tests of the signed documents, the fuzz targets and their
//! seeds share (`fuzz/`): one fixture, so that a seed signed here verifies there. Not part
//! of the protocol.

use crate::ids::PublisherKey;
use crate::root::{NamedKey, ROOT_FORMAT_VERSION, Root, ScopedKey};
use ed25519_dalek::SigningKey;

/// The test clock.
pub const NOW: i64 = 1_800_000_000;

/// Key `i`: the same bytes every run.
pub fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

/// Key `i`'s public half, named `k<i>`.
pub fn named(i: u8) -> NamedKey {
    NamedKey {
        name: format!("k{i}"),
        key: PublisherKey(key(i).verifying_key().to_bytes()),
    }
}

/// Fleet `bank`'s root, version 1, valid for a day from [`NOW`]: root key 1, CA key 50,
/// publisher 40 on `security`, operator 60.
pub fn root() -> Root {
    Root {
        format_version: ROOT_FORMAT_VERSION,
        fleet: "bank".into(),
        version: 1,
        expires_unix_s: NOW + 86_400,
        root_keys: vec![named(1)],
        root_threshold: 1,
        ca_keys: vec![named(50)],
        publishers: vec![ScopedKey {
            name: "p".into(),
            key: named(40).key,
            channels: vec!["security".into()],
        }],
        approvers: Vec::new(),
        approvals: Vec::new(),
        operators: vec![named(60)],
    }
}
