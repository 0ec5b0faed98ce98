//! The wire encoding: serde + bincode 2 (standard configuration: little-endian, varints),
//! with an explicit byte limit on every decode.
//!
//! Only this module knows the encoding. A decode refuses input over its limit before looking
//! at it, passes the limit to bincode so that no length prefix can make it allocate more,
//! and refuses trailing bytes, so one value has exactly one accepted encoding length.

use crate::error::ManifestError;
use bincode::config::{self, Configuration};
use bincode::error::DecodeError;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn config() -> Configuration {
    config::standard()
}

/// Encodes `value`.
///
/// # Panics
///
/// Only if `value`'s `Serialize` impl fails, which the derived impls of this crate never do.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("derived Serialize impls cannot fail")
}

/// `context || bytes`: what a signature covers, so that a signature made for one kind of
/// message (its domain-separation context) never verifies as another kind.
pub fn with_context(context: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + bytes.len());
    m.extend_from_slice(context);
    m.extend_from_slice(bytes);
    m
}

/// `key`'s signature over `doc`'s encoding under `context`, with the key: how a whole signed
/// document (a revocation list, fleet orders) is signed.
pub fn sign_document<T: Serialize>(
    context: &[u8],
    doc: &T,
    key: &ed25519_dalek::SigningKey,
) -> (crate::PublisherKey, crate::envelope::SignatureBytes) {
    use ed25519_dalek::Signer;
    let signature = key.sign(&with_context(context, &encode(doc)));
    (
        crate::PublisherKey(key.verifying_key().to_bytes()),
        crate::envelope::SignatureBytes(signature.to_bytes()),
    )
}

/// Whether `signature` by `signer` verifies over `doc`'s encoding under `context`
/// ([`sign_document`]).
pub fn document_verifies<T: Serialize>(
    context: &[u8],
    doc: &T,
    signer: &crate::PublisherKey,
    signature: &crate::envelope::SignatureBytes,
) -> bool {
    use ed25519_dalek::Verifier;
    ed25519_dalek::VerifyingKey::from_bytes(&signer.0).is_ok_and(|k| {
        k.verify(
            &with_context(context, &encode(doc)),
            &ed25519_dalek::Signature::from_bytes(&signature.0),
        )
        .is_ok()
    })
}

/// Decodes a `T` from exactly `bytes`, which must be at most `LIMIT` bytes. `what` names the
/// value in errors.
pub fn decode<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, ManifestError> {
    if bytes.len() > LIMIT {
        return Err(ManifestError::TooLarge {
            what,
            len: bytes.len(),
            max: LIMIT,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice(bytes, config().with_limit::<LIMIT>())
        .map_err(|e| match e {
            DecodeError::Utf8 { .. } => ManifestError::NotUtf8 { what },
            DecodeError::LimitExceeded => ManifestError::TooLarge {
                what,
                len: bytes.len(),
                max: LIMIT,
            },
            other => ManifestError::Decode {
                what,
                reason: other.to_string(),
            },
        })?;
    if used != bytes.len() {
        return Err(ManifestError::Decode {
            what,
            reason: format!("{} trailing bytes", bytes.len() - used),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_refuses_oversized_trailing_and_bad_utf8() {
        let bytes = encode(&("abc".to_string(), 7u32));
        let ok: (String, u32) = decode::<_, 64>(&bytes, "pair").unwrap();
        assert_eq!(ok, ("abc".to_string(), 7));
        assert!(matches!(
            decode::<(String, u32), 2>(&bytes, "pair"),
            Err(ManifestError::TooLarge { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<(String, u32), 64>(&trailing, "pair"),
            Err(ManifestError::Decode { .. })
        ));
        let mut bad = bytes.clone();
        bad[1] = 0xff; // first byte of "abc" after the varint length
        assert_eq!(
            decode::<(String, u32), 64>(&bad, "pair"),
            Err(ManifestError::NotUtf8 { what: "pair" })
        );
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A Vec<u64> claiming 2^40 elements in a few bytes must be refused by the limit.
        let bytes = encode(&(1u64 << 40));
        let r = decode::<Vec<u64>, 1024>(&bytes, "vec");
        assert!(r.is_err());
    }
}
