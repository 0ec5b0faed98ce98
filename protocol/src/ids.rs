//! Content and identity addresses.
//!
//! All ids are 32 bytes, shown as lowercase hex. A [`ChunkId`] and a [`ReleaseId`] are BLAKE3
//! digests, so equal ids mean equal bytes; a [`NodeId`] and a [`PublisherKey`] are ed25519
//! public keys, so an id is also the key that checks its owner's signatures.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Length in bytes of every id.
pub const ID_BYTES: usize = 32;

/// An id string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id: expected {expected} hex digits, got {input:?}", expected = ID_BYTES * 2)]
pub struct IdParseError {
    /// The text that failed to parse (cut to 80 characters).
    pub input: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; ID_BYTES]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
                &self.0
            }

            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 12 hex digits, for logs and tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..6])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut bytes = [0u8; ID_BYTES];
                hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| IdParseError {
                    input: s.chars().take(80).collect(),
                })?;
                Ok(Self(bytes))
            }
        }
    };
}

id_type!(
    /// BLAKE3 digest of a chunk's bytes: the chunk's address everywhere.
    ChunkId
);
id_type!(
    /// BLAKE3 digest of a release's canonical manifest bytes (signatures excluded).
    ReleaseId
);
id_type!(
    /// A node's ed25519 public key: its identity on both the control and the data plane.
    NodeId
);
id_type!(
    /// A publisher's ed25519 public key, as listed in a node's trust policy.
    PublisherKey
);

impl ChunkId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Whether `bytes` are the chunk this id names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        // blake3::Hash compares in constant time; timing does not matter here, but it is free.
        blake3::Hash::from(self.0) == blake3::hash(bytes)
    }
}

impl ReleaseId {
    /// The id of a release whose canonical manifest encoding is `manifest_bytes`.
    pub fn of_manifest_bytes(manifest_bytes: &[u8]) -> Self {
        Self(*blake3::hash(manifest_bytes).as_bytes())
    }
}

impl PublisherKey {
    /// Text form used in config files and by `p2pctl keygen`: `ed25519:<hex>`.
    pub fn to_config_string(&self) -> String {
        format!("ed25519:{}", self.to_hex())
    }

    /// Parses `ed25519:<hex>` or bare hex.
    pub fn parse_config_string(s: &str) -> Result<Self, IdParseError> {
        s.trim().strip_prefix("ed25519:").unwrap_or(s).parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_id_matches_only_its_bytes() {
        let id = ChunkId::of(b"hello");
        assert!(id.matches(b"hello"));
        assert!(!id.matches(b"hellp"));
        assert_eq!(id.to_hex(), blake3::hash(b"hello").to_hex().as_str());
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let id = ReleaseId::of_manifest_bytes(b"m");
        let parsed: ReleaseId = id.to_hex().parse().unwrap();
        assert_eq!(parsed, id);
        assert!("xyz".parse::<ReleaseId>().is_err());
        assert!(id.to_hex()[..62].parse::<ReleaseId>().is_err());
    }

    #[test]
    fn publisher_key_config_string_round_trips() {
        let key = PublisherKey([7; 32]);
        let text = key.to_config_string();
        assert!(text.starts_with("ed25519:"));
        assert_eq!(PublisherKey::parse_config_string(&text).unwrap(), key);
        assert_eq!(
            PublisherKey::parse_config_string(&key.to_hex()).unwrap(),
            key
        );
    }
}
