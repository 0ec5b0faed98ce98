//! The signed envelope around a manifest, the trust policy, and [`verify_release`]: the gate
//! every manifest passes before anything else is done with it.
//!
//! A publisher signs `SIGNING_CONTEXT || manifest_bytes` with ed25519. The envelope carries
//! the canonical manifest bytes untouched, so the [`ReleaseId`] (BLAKE3 of those bytes) does
//! not depend on the signatures, and more signatures can be added for a threshold.
//!
//! Verification order, so that an attacker's bytes are looked at as little as possible:
//! size limit → envelope decode → signatures by trusted keys over the raw bytes → manifest
//! decode and canonical check → channel permission → threshold → structural rules
//! ([`Manifest::validate`]) → time (expiry, creation skew) → version above the channel's last.

use crate::codec;
use crate::error::ManifestError;
use crate::ids::{PublisherKey, ReleaseId};
use crate::manifest::{
    MANIFEST_BYTES_MAX, MANIFEST_FORMAT_OLDEST, MANIFEST_FORMAT_VERSION, Manifest,
};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Domain separation for manifest signatures: a signature made for anything else never
/// verifies as a manifest signature.
pub const SIGNING_CONTEXT: &[u8] = b"p2pd/manifest/v1\n";

/// Most signatures on one envelope; more is refused before any is checked.
pub const SIGNATURES_MAX: usize = 16;

/// Largest encoded envelope: the manifest plus room for [`SIGNATURES_MAX`] signatures.
pub const ENVELOPE_BYTES_MAX: usize = MANIFEST_BYTES_MAX + 4096;

/// How far a manifest's creation time may be ahead of the verifier's clock: clocks on a
/// fleet drift, but a manifest "from next week" is a sign of a forged or mis-set clock.
pub const CREATED_SKEW_MAX_S: i64 = 24 * 3600;

/// An ed25519 signature (64 bytes) with a length-checked serde form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes(pub [u8; 64]);

impl std::fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignatureBytes({}…)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for SignatureBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SignatureBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SignatureBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                let arr: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(SignatureBytes(arr))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// One publisher signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSignature {
    /// The signing key.
    pub key: PublisherKey,
    /// ed25519 signature over [`SIGNING_CONTEXT`] followed by the manifest bytes.
    pub signature: SignatureBytes,
}

/// A manifest with its signatures: what travels and what the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// [`MANIFEST_FORMAT_VERSION`].
    pub format_version: u16,
    /// The canonical encoding of the [`Manifest`].
    pub manifest_bytes: Vec<u8>,
    /// Signatures, by distinct keys.
    pub signatures: Vec<ManifestSignature>,
}

impl SignedManifest {
    /// Encodes the envelope.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes an envelope (at most [`ENVELOPE_BYTES_MAX`]); nothing in it is checked:
    /// [`verify_signed`] does that.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        codec::decode::<_, ENVELOPE_BYTES_MAX>(bytes, "signed manifest")
    }

    /// The release id (BLAKE3 of the manifest bytes).
    pub fn release_id(&self) -> ReleaseId {
        ReleaseId::of_manifest_bytes(&self.manifest_bytes)
    }

    /// Adds `signature` (an approver's, made elsewhere over these manifest bytes), replacing
    /// one the same key made before; unverified until the envelope is checked again. The
    /// release id does not change.
    pub fn add_signature(&mut self, signature: ManifestSignature) {
        self.signatures.retain(|s| s.key != signature.key);
        self.signatures.push(signature);
    }
}

/// `key`'s signature over `manifest_bytes` (with [`SIGNING_CONTEXT`]).
pub fn signature_over(manifest_bytes: &[u8], key: &SigningKey) -> ManifestSignature {
    let signature = key.sign(&codec::with_context(SIGNING_CONTEXT, manifest_bytes));
    ManifestSignature {
        key: PublisherKey(key.verifying_key().to_bytes()),
        signature: SignatureBytes(signature.to_bytes()),
    }
}

/// Whether `signature` is a valid signature over `manifest_bytes` by its key.
pub fn signature_verifies(manifest_bytes: &[u8], signature: &ManifestSignature) -> bool {
    VerifyingKey::from_bytes(&signature.key.0).is_ok_and(|k| {
        k.verify_strict(
            &codec::with_context(SIGNING_CONTEXT, manifest_bytes),
            &Signature::from_bytes(&signature.signature.0),
        )
        .is_ok()
    })
}

/// Encodes `manifest` canonically and signs it with `key`.
pub fn sign_manifest(manifest: &Manifest, key: &SigningKey) -> SignedManifest {
    let manifest_bytes = manifest.canonical_bytes();
    let signature = signature_over(&manifest_bytes, key);
    SignedManifest {
        format_version: manifest.format_version,
        manifest_bytes,
        signatures: vec![signature],
    }
}

/// A publisher key a node trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedPublisher {
    /// Operator's name for the key (shown in errors and the audit trail).
    pub name: String,
    /// The public key.
    pub key: PublisherKey,
    /// Channel scopes the key may publish on, matched by whole `/`-separated segments
    /// ([`crate::root::channel_in_scope`]); empty means every channel.
    pub channel_prefixes: Vec<String>,
    /// An approver's key (a fleet root's `approvers`): its signature counts towards the
    /// threshold, but a release also needs a publisher's.
    pub approver: bool,
}

impl TrustedPublisher {
    /// The error for a signature of this publisher on `channel`, where it may not sign.
    pub fn not_allowed_on(&self, channel: &str) -> ManifestError {
        ManifestError::KeyNotAllowedForChannel {
            key: self.key,
            publisher: self.name.clone(),
            scopes: self.channel_prefixes.clone(),
            channel: channel.to_string(),
        }
    }

    /// Whether this key may publish on `channel`.
    pub fn allows_channel(&self, channel: &str) -> bool {
        self.channel_prefixes.is_empty()
            || self
                .channel_prefixes
                .iter()
                .any(|p| crate::root::channel_in_scope(p, channel))
    }
}

/// Which keys a node accepts, and how many must sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Trusted keys.
    pub publishers: Vec<TrustedPublisher>,
    /// Valid signatures by distinct allowed keys required (at least 1) where no rule of
    /// `rules` covers the channel.
    pub threshold: usize,
    /// Signatures needed per channel scope (a fleet root's approval rules): the rule with
    /// the longest matching scope applies.
    pub rules: Vec<ThresholdRule>,
}

/// How many signatures releases on a channel scope need ([`TrustPolicy::rules`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdRule {
    /// The channel scope ([`crate::root::channel_in_scope`]).
    pub scope: String,
    /// Signatures a release needs.
    pub threshold: usize,
    /// Signatures an emergency release needs.
    pub emergency_threshold: usize,
}

impl TrustPolicy {
    /// The trusted publisher with `key`, if any.
    pub fn publisher(&self, key: &PublisherKey) -> Option<&TrustedPublisher> {
        self.publishers.iter().find(|p| p.key == *key)
    }

    /// Signatures a release on `channel` needs (an emergency one: the rule's emergency
    /// threshold), at least one.
    pub fn threshold_for(&self, channel: &str, emergency: bool) -> usize {
        self.rules
            .iter()
            .filter(|r| crate::root::channel_in_scope(&r.scope, channel))
            .max_by_key(|r| r.scope.len())
            .map_or(self.threshold, |r| {
                if emergency {
                    r.emergency_threshold
                } else {
                    r.threshold
                }
            })
            .max(1)
    }
}

/// A manifest whose signatures verified, perhaps too few of them: what a release held for
/// approval is ([`check_signatures`]).
#[derive(Debug, Clone)]
pub struct Signed {
    /// The release, as far as it verified.
    pub release: VerifiedRelease,
    /// Valid signatures by distinct keys allowed on its channel.
    pub have: usize,
    /// Signatures its channel needs ([`TrustPolicy::threshold_for`]).
    pub need: usize,
    /// A key that signed validly but may not sign on this channel, if any.
    refused: Option<TrustedPublisher>,
}

impl Signed {
    /// The release, if it has the signatures it needs.
    pub fn complete(self) -> Result<VerifiedRelease, ManifestError> {
        if self.have >= self.need {
            return Ok(self.release);
        }
        if let Some(p) = self.refused {
            return Err(p.not_allowed_on(&self.release.manifest.channel));
        }
        Err(ManifestError::BelowThreshold {
            valid: self.have,
            threshold: self.need,
        })
    }
}

/// A manifest whose signatures and structure were checked.
#[derive(Debug, Clone)]
pub struct VerifiedRelease {
    /// Its id.
    pub id: ReleaseId,
    /// The manifest.
    pub manifest: Manifest,
    /// The envelope it came in.
    pub envelope: SignedManifest,
    /// Names of the trusted publishers whose signatures verified.
    pub signers: Vec<String>,
}

impl VerifiedRelease {
    /// Checks time and version: not expired at `now_unix_s`, not created too far in the future,
    /// and a version above `highest_seen` on its channel (if any was seen).
    pub fn check_fresh(
        &self,
        now_unix_s: i64,
        highest_seen: Option<u64>,
    ) -> Result<(), ManifestError> {
        let m = &self.manifest;
        if m.expires_unix_s <= now_unix_s {
            return Err(ManifestError::Expired {
                expires_unix_s: m.expires_unix_s,
                now_unix_s,
            });
        }
        if m.created_unix_s > now_unix_s.saturating_add(CREATED_SKEW_MAX_S) {
            return Err(ManifestError::CreatedInFuture {
                created_unix_s: m.created_unix_s,
                now_unix_s,
            });
        }
        if let Some(highest) = highest_seen {
            if m.version <= highest {
                return Err(ManifestError::VersionNotNewer {
                    channel: m.channel.clone(),
                    version: m.version,
                    highest,
                });
            }
        }
        Ok(())
    }
}

/// Checks an encoded envelope's signatures and the manifest's structure (not time, not
/// version: see [`VerifiedRelease::check_fresh`] and [`verify_release`]), and that it has
/// as many signatures as its channel needs.
pub fn verify_signed(
    envelope_bytes: &[u8],
    policy: &TrustPolicy,
) -> Result<VerifiedRelease, ManifestError> {
    check_signatures(envelope_bytes, policy)?.complete()
}

/// [`verify_signed`] short of the threshold: every signature must verify, at least one
/// valid signature must be by a publisher allowed on the channel, and the manifest must be
/// sound; how many of the signatures it needs it has is the answer ([`Signed`]). A release
/// held for approval passes this and not [`verify_signed`].
pub fn check_signatures(
    envelope_bytes: &[u8],
    policy: &TrustPolicy,
) -> Result<Signed, ManifestError> {
    let envelope: SignedManifest =
        codec::decode::<_, ENVELOPE_BYTES_MAX>(envelope_bytes, "signed manifest")?;
    if !(MANIFEST_FORMAT_OLDEST..=MANIFEST_FORMAT_VERSION).contains(&envelope.format_version) {
        return Err(ManifestError::UnsupportedFormat {
            found: envelope.format_version,
            supported: MANIFEST_FORMAT_VERSION,
        });
    }
    if envelope.signatures.is_empty() {
        return Err(ManifestError::Unsigned);
    }
    if envelope.signatures.len() > SIGNATURES_MAX {
        return Err(ManifestError::TooManySignatures {
            count: envelope.signatures.len(),
            max: SIGNATURES_MAX,
        });
    }

    // Signatures first, over the raw bytes: an untrusted manifest is never decoded.
    let message = codec::with_context(SIGNING_CONTEXT, &envelope.manifest_bytes);
    let mut valid: Vec<&TrustedPublisher> = Vec::new();
    for sig in &envelope.signatures {
        let Some(publisher) = policy.publisher(&sig.key) else {
            continue;
        };
        let key = VerifyingKey::from_bytes(&sig.key.0)
            .map_err(|_| ManifestError::BadSignature(sig.key))?;
        key.verify_strict(&message, &Signature::from_bytes(&sig.signature.0))
            .map_err(|_| ManifestError::BadSignature(sig.key))?;
        if !valid.iter().any(|p| p.key == publisher.key) {
            valid.push(publisher);
        }
    }
    if valid.is_empty() {
        return Err(ManifestError::UnknownKey(envelope.signatures[0].key));
    }

    let manifest = Manifest::decode(&envelope.manifest_bytes)?;
    if manifest.format_version != envelope.format_version {
        return Err(ManifestError::UnsupportedFormat {
            found: manifest.format_version,
            supported: envelope.format_version,
        });
    }

    let allowed: Vec<&TrustedPublisher> = valid
        .iter()
        .copied()
        .filter(|p| p.allows_channel(&manifest.channel))
        .collect();
    let need = policy.threshold_for(&manifest.channel, manifest.emergency);
    let refused = valid
        .iter()
        .find(|p| !p.allows_channel(&manifest.channel))
        .map(|p| (*p).clone());
    if allowed.is_empty() {
        return Err(match refused {
            Some(p) => p.not_allowed_on(&manifest.channel),
            None => ManifestError::BelowThreshold {
                valid: 0,
                threshold: need,
            },
        });
    }
    if allowed.iter().all(|p| p.approver) {
        return Err(ManifestError::ApproversOnly {
            channel: manifest.channel.clone(),
        });
    }

    manifest.validate()?;
    Ok(Signed {
        have: allowed.len(),
        need,
        refused,
        release: VerifiedRelease {
            id: envelope.release_id(),
            signers: allowed.iter().map(|p| p.name.clone()).collect(),
            manifest,
            envelope,
        },
    })
}

/// The full gate: [`verify_signed`], then [`VerifiedRelease::check_fresh`] at `now_unix_s`
/// against the highest version `highest_seen` returns for the manifest's channel.
pub fn verify_release(
    envelope_bytes: &[u8],
    policy: &TrustPolicy,
    now_unix_s: i64,
    highest_seen: impl FnOnce(&str) -> Option<u64>,
) -> Result<VerifiedRelease, ManifestError> {
    let release = verify_signed(envelope_bytes, policy)?;
    let highest = highest_seen(&release.manifest.channel);
    release.check_fresh(now_unix_s, highest)?;
    Ok(release)
}
