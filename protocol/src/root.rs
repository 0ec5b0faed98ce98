//! The fleet root: who may do what in a fleet, signed by offline root keys, rotated as in
//! TUF (The Update Framework, §5.3 of its specification).
//!
//! A [`Root`] names, for one fleet, the root keys and how many of them must sign the next
//! root, the fleet CA keys that certify nodes, the publisher keys with the channels each may
//! publish on, the approver keys and how many signatures a release needs per channel, and the
//! operator keys allowed to issue fleet commands. It has a version (1 for the first) and an
//! expiry.
//!
//! A node is given its first root out of band (`p2pd init --root root.json`): it must be
//! signed by its own root threshold. From then on a node takes root `N + 1` only when it is
//! signed by root `N`'s threshold of root `N`'s keys **and** by its own threshold of its own
//! keys ([`verify_update`]), so a stolen minority of the old keys cannot rotate to keys of
//! the thief's, and a set of new keys alone cannot either. Versions step by one, never back
//! (no rollback); one update steps through at most [`ROOT_CHAIN_MAX`] versions; only the root
//! it ends at must not be expired ([`update_chain`]), as in TUF, so a node that was off for a
//! year still follows the chain.
//!
//! Roots are signed over `ROOT_SIGNING_CONTEXT || canonical bytes` (the bincode encoding of
//! the [`Root`]), with ed25519. The same [`SignedRoot`] is a JSON file for people (keys and
//! signatures in hex) and bincode on the wire; both verify against the canonical bytes of
//! the root they hold.
//!
//! Channel scopes match whole `/`-separated segments ([`channel_in_scope`]): `security`
//! covers `security` and `security/openssl`, never `security-evil`.

use crate::codec;
use crate::envelope::{SignatureBytes, ThresholdRule, TrustPolicy, TrustedPublisher};
use crate::error::ManifestError;
use crate::ids::PublisherKey;
use crate::manifest::is_valid_channel;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Version of the root format this build reads and writes.
pub const ROOT_FORMAT_VERSION: u16 = 1;

/// Domain separation for root signatures: a signature made for anything else (a manifest, a
/// status record) never verifies as a root signature.
pub const ROOT_SIGNING_CONTEXT: &[u8] = b"p2pd/root/v1\n";

/// Largest encoded signed root: ~200 keys with names and scopes fit in a tenth of it.
pub const ROOT_BYTES_MAX: usize = 256 * 1024;

/// Most keys of each kind a root names (root, CA, publishers, approvers, operators): a bank's
/// security office holds a handful of each; more is a mistake or an attack on the verifier.
pub const ROOT_KEYS_MAX: usize = 64;

/// Most signatures on one root: the most root keys of two consecutive roots.
pub const ROOT_SIGNATURES_MAX: usize = 2 * ROOT_KEYS_MAX;

/// Most channel scopes per key and approval rules per root.
pub const ROOT_SCOPES_MAX: usize = 64;

/// Most versions one update steps through ([`update_chain`]); TUF's reference sets 1024
/// for its whole history. A fleet rotates its root a few times a year; a node that finds a
/// longer chain takes the first [`ROOT_CHAIN_MAX`] steps and the rest at the next update.
pub const ROOT_CHAIN_MAX: usize = 32;

/// Longest fleet name, and key or person name, in bytes.
pub const ROOT_NAME_BYTES_MAX: usize = 64;

/// Most signatures a release may be asked to carry: [`crate::envelope::SIGNATURES_MAX`].
pub const APPROVAL_THRESHOLD_MAX: u32 = crate::envelope::SIGNATURES_MAX as u32;

/// A key with the name people know it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedKey {
    /// Who holds it ("alice", "hsm-2", "ca-2026").
    pub name: String,
    /// The ed25519 public key.
    #[serde(with = "key_form")]
    pub key: PublisherKey,
}

/// A key allowed to sign within channel scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedKey {
    /// Who holds it.
    pub name: String,
    /// The ed25519 public key.
    #[serde(with = "key_form")]
    pub key: PublisherKey,
    /// Channel scopes it may sign on ([`channel_in_scope`]); empty: every channel.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// How many signatures a release on a channel scope needs: publishers' and approvers' keys
/// allowed on its channel, distinct. The rule with the longest matching scope applies; a
/// channel no rule covers needs one (its publisher's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRule {
    /// The channel scope.
    pub channels: String,
    /// Signatures a release needs.
    pub threshold: u32,
    /// Signatures an emergency release needs (`p2pctl publish --emergency`): at least one,
    /// at most `threshold`.
    pub emergency_threshold: u32,
}

/// Who may do what in one fleet. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// [`ROOT_FORMAT_VERSION`].
    pub format_version: u16,
    /// The fleet's name: a root of another fleet is never taken.
    pub fleet: String,
    /// 1 for the first root, one more for each rotation.
    pub version: u64,
    /// Past this instant, unix seconds, a node holding it as its newest refuses what needs
    /// it and says so.
    pub expires_unix_s: i64,
    /// The keys that sign the next root.
    pub root_keys: Vec<NamedKey>,
    /// How many of them must.
    pub root_threshold: u32,
    /// The fleet CA keys: each certifies nodes.
    pub ca_keys: Vec<NamedKey>,
    /// Keys that publish releases, each on its channel scopes.
    pub publishers: Vec<ScopedKey>,
    /// Keys that approve releases (`p2pctl approve`), each on its channel scopes.
    #[serde(default)]
    pub approvers: Vec<ScopedKey>,
    /// Signatures releases need, per channel scope.
    #[serde(default)]
    pub approvals: Vec<ApprovalRule>,
    /// Keys allowed to sign fleet commands (pause, hold, forget, revoke).
    #[serde(default)]
    pub operators: Vec<NamedKey>,
}

/// One signature on a root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootSignature {
    /// The signing key.
    #[serde(with = "key_form")]
    pub key: PublisherKey,
    /// ed25519 over [`ROOT_SIGNING_CONTEXT`] and the root's canonical bytes.
    #[serde(with = "signature_form")]
    pub signature: SignatureBytes,
}

/// A root with its signatures: the `root.json` file, and what travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRoot {
    /// The root.
    pub signed: Root,
    /// Signatures, by distinct keys.
    pub signatures: Vec<RootSignature>,
}

/// Why a root was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    /// It does not decode, or is too large.
    #[error("{0}")]
    Decode(#[from] ManifestError),
    /// It is not JSON of a signed root.
    #[error("not a signed root: {0}")]
    Json(String),
    /// A format this build does not read.
    #[error("root format version {found} is not supported (this build reads {supported})")]
    UnsupportedFormat {
        /// Found.
        found: u16,
        /// Read.
        supported: u16,
    },
    /// A rule of the root's structure is broken.
    #[error("root is not valid: {0}")]
    Invalid(String),
    /// Not enough valid signatures by the keys that must sign.
    #[error(
        "root v{version} has {valid} valid signature(s) by {by} root keys; {threshold} are needed"
    )]
    BelowThreshold {
        /// The root's version.
        version: u64,
        /// Whose keys: "its own" or "v{N}'s".
        by: String,
        /// Valid signatures by distinct keys of that root.
        valid: usize,
        /// Needed.
        threshold: u32,
    },
    /// A root of another fleet.
    #[error("root is for fleet {found:?}, this node is in fleet {expected:?}")]
    OtherFleet {
        /// This node's fleet.
        expected: String,
        /// The root's.
        found: String,
    },
    /// Not the next version: older or equal (a rollback), or one that skips versions.
    #[error("root v{found} does not follow v{trusted}: only v{next} does", next = trusted + 1)]
    NotNext {
        /// The version trusted now.
        trusted: u64,
        /// The version offered.
        found: u64,
    },
    /// The root the update ends at has expired.
    #[error("root v{version} expired at {expires_unix_s} (now {now_unix_s})")]
    Expired {
        /// Its version.
        version: u64,
        /// When it expired.
        expires_unix_s: i64,
        /// Now.
        now_unix_s: i64,
    },
    /// More roots in one update than [`ROOT_CHAIN_MAX`].
    #[error("{len} roots in one update, more than {max}")]
    ChainTooLong {
        /// Offered.
        len: usize,
        /// Most.
        max: usize,
    },
}

/// Whether `channel` lies in `scope`: equal, or under it by whole `/`-separated segments.
/// The empty scope and `*` cover every channel; a trailing `/` on the scope is ignored.
pub fn channel_in_scope(scope: &str, channel: &str) -> bool {
    let scope = scope.strip_suffix('/').unwrap_or(scope);
    scope.is_empty()
        || scope == "*"
        || channel == scope
        || channel
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Why a whole, versioned document made under a fleet root (a revocation list, fleet
/// orders) does not follow the one held ([`Root::check_fleet`], [`Root::check_succession`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Succession {
    /// For another fleet.
    OtherFleet {
        /// This fleet.
        expected: String,
        /// The document's.
        found: String,
    },
    /// Made under a root newer than the one held: take that root first.
    NewerRoot {
        /// The root version held.
        held: u64,
        /// The document's.
        found: u64,
    },
    /// Not newer than the one held.
    NotNewer {
        /// The version held.
        held: u64,
        /// The version offered.
        found: u64,
    },
}

/// The version of the document after one at `(root_version, version)`, made under root
/// `under`: under a newer root the numbering starts again at 1 (the root orders the
/// documents: `(root version, version)` is what replaces what).
pub fn next_version(held: (u64, u64), under: u64) -> u64 {
    if under > held.0 { 1 } else { held.1 + 1 }
}

impl Root {
    /// Whether a document of `fleet` is for this root's fleet.
    pub fn check_fleet(&self, fleet: &str) -> Result<(), Succession> {
        if fleet != self.fleet {
            return Err(Succession::OtherFleet {
                expected: self.fleet.clone(),
                found: fleet.to_owned(),
            });
        }
        Ok(())
    }

    /// Whether a document at `(root version, version)` may replace the one `held` under
    /// this root: made under it or an older one, and newer than `held` (`None`: none held).
    pub fn check_succession(
        &self,
        doc: (u64, u64),
        held: Option<(u64, u64)>,
    ) -> Result<(), Succession> {
        if doc.0 > self.version {
            return Err(Succession::NewerRoot {
                held: self.version,
                found: doc.0,
            });
        }
        match held {
            Some(h) if doc <= h => Err(Succession::NotNewer {
                held: h.1,
                found: doc.1,
            }),
            _ => Ok(()),
        }
    }

    /// Checks the root's own rules: a known format, a fleet name, version 1 or more, every
    /// list within its bound with distinct keys and names, thresholds that can be met, and
    /// valid channel scopes.
    pub fn validate(&self) -> Result<(), RootError> {
        if self.format_version != ROOT_FORMAT_VERSION {
            return Err(RootError::UnsupportedFormat {
                found: self.format_version,
                supported: ROOT_FORMAT_VERSION,
            });
        }
        let bad = |why: String| Err(RootError::Invalid(why));
        if !valid_name(&self.fleet) {
            return bad(format!(
                "fleet name {:?} must be 1 to {ROOT_NAME_BYTES_MAX} bytes of a-z, 0-9, '.', '_', '-'",
                self.fleet
            ));
        }
        if self.version == 0 {
            return bad("version must be 1 or more".into());
        }
        named_keys("root_keys", &self.root_keys)?;
        if self.root_keys.is_empty() {
            return bad("root_keys must name at least one key".into());
        }
        if self.root_threshold == 0 || self.root_threshold as usize > self.root_keys.len() {
            return bad(format!(
                "root_threshold is {}; it must be 1 to the {} root keys",
                self.root_threshold,
                self.root_keys.len()
            ));
        }
        named_keys("ca_keys", &self.ca_keys)?;
        if self.ca_keys.is_empty() {
            return bad("ca_keys must name at least one key".into());
        }
        scoped_keys("publishers", &self.publishers)?;
        scoped_keys("approvers", &self.approvers)?;
        named_keys("operators", &self.operators)?;
        if self.approvals.len() > ROOT_SCOPES_MAX {
            return bad(format!("more than {ROOT_SCOPES_MAX} approval rules"));
        }
        let mut scopes = std::collections::HashSet::new();
        for rule in &self.approvals {
            if !valid_scope(&rule.channels) {
                return bad(format!(
                    "approval scope {:?} is not a channel",
                    rule.channels
                ));
            }
            if !scopes.insert(rule.channels.as_str()) {
                return bad(format!("two approval rules for {:?}", rule.channels));
            }
            if rule.threshold == 0 || rule.threshold > APPROVAL_THRESHOLD_MAX {
                return bad(format!(
                    "approval threshold for {:?} is {}; it must be 1 to {APPROVAL_THRESHOLD_MAX}",
                    rule.channels, rule.threshold
                ));
            }
            if rule.emergency_threshold == 0 || rule.emergency_threshold > rule.threshold {
                return bad(format!(
                    "emergency threshold for {:?} is {}; it must be 1 to the threshold, {}",
                    rule.channels, rule.emergency_threshold, rule.threshold
                ));
            }
            let signers = self
                .publishers
                .iter()
                .chain(&self.approvers)
                .filter(|k| k.may_sign(&rule.channels))
                .count();
            if (rule.threshold as usize) > signers {
                return bad(format!(
                    "releases on {:?} need {} signatures, but only {signers} publisher and approver keys may sign there",
                    rule.channels, rule.threshold
                ));
            }
        }
        Ok(())
    }

    /// The canonical bytes its signatures cover.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// BLAKE3 of its canonical bytes, hex: how the audit log and `p2pctl root show` name
    /// this exact root.
    pub fn digest_hex(&self) -> String {
        blake3::hash(&self.canonical_bytes()).to_hex().to_string()
    }

    /// Signatures a release on `channel` needs ([`ApprovalRule`]; one if no rule covers it).
    pub fn release_threshold(&self, channel: &str, emergency: bool) -> u32 {
        // One rule, decided where every release is checked.
        self.trust_policy().threshold_for(channel, emergency) as u32
    }

    /// The trust policy releases are checked with under this root: its publishers and
    /// approvers, each on its scopes, and its approval rules ([`Root::release_threshold`]);
    /// one signature where no rule applies.
    pub fn trust_policy(&self) -> TrustPolicy {
        let keys = |list: &[ScopedKey], approver: bool| {
            list.iter()
                .map(|k| TrustedPublisher {
                    name: k.name.clone(),
                    key: k.key,
                    channel_prefixes: k.channels.clone(),
                    approver,
                })
                .collect::<Vec<_>>()
        };
        let mut publishers = keys(&self.publishers, false);
        // A key both publisher and approver counts once, as a publisher.
        publishers.extend(
            keys(&self.approvers, true)
                .into_iter()
                .filter(|a| !self.publishers.iter().any(|p| p.key == a.key)),
        );
        TrustPolicy {
            publishers,
            threshold: 1,
            rules: self
                .approvals
                .iter()
                .map(|r| ThresholdRule {
                    scope: r.channels.clone(),
                    threshold: r.threshold as usize,
                    emergency_threshold: r.emergency_threshold as usize,
                })
                .collect(),
        }
    }

    /// Whether `key` is one of its CA keys.
    pub fn is_ca(&self, key: &PublisherKey) -> bool {
        self.ca_keys.iter().any(|k| k.key == *key)
    }
}

impl ScopedKey {
    /// Whether this key may sign on `channel` (or every channel of a scope).
    pub fn may_sign(&self, channel: &str) -> bool {
        self.channels.is_empty() || self.channels.iter().any(|s| channel_in_scope(s, channel))
    }
}

impl SignedRoot {
    /// Signs `root` with `keys` (each once).
    pub fn sign(root: Root, keys: &[&SigningKey]) -> Self {
        let mut signed = Self {
            signed: root,
            signatures: Vec::new(),
        };
        for k in keys {
            signed.add_signature(k);
        }
        signed
    }

    /// Adds `key`'s signature (replacing one it made before).
    pub fn add_signature(&mut self, key: &SigningKey) {
        let public = PublisherKey(key.verifying_key().to_bytes());
        let sig = key.sign(&codec::with_context(
            ROOT_SIGNING_CONTEXT,
            &self.signed.canonical_bytes(),
        ));
        self.signatures.retain(|s| s.key != public);
        self.signatures.push(RootSignature {
            key: public,
            signature: SignatureBytes(sig.to_bytes()),
        });
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes the wire form (at most [`ROOT_BYTES_MAX`]); nothing is verified yet.
    pub fn decode(bytes: &[u8]) -> Result<Self, RootError> {
        Ok(codec::decode::<Self, ROOT_BYTES_MAX>(bytes, "signed root")?)
    }

    /// The file form: pretty JSON, keys and signatures in hex.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a root always encodes as JSON")
    }

    /// Reads the file form (at most [`ROOT_BYTES_MAX`] bytes); nothing is verified yet.
    pub fn from_json(text: &str) -> Result<Self, RootError> {
        if text.len() > ROOT_BYTES_MAX * 4 {
            return Err(RootError::Json(format!(
                "{} bytes, more than {}",
                text.len(),
                ROOT_BYTES_MAX * 4
            )));
        }
        serde_json::from_str(text).map_err(|e| RootError::Json(e.to_string()))
    }

    /// Valid signatures on it by distinct keys of `keys`.
    pub fn valid_signatures(&self, keys: &[NamedKey]) -> usize {
        if self.signatures.len() > ROOT_SIGNATURES_MAX {
            return 0;
        }
        let message = codec::with_context(ROOT_SIGNING_CONTEXT, &self.signed.canonical_bytes());
        let mut seen: Vec<PublisherKey> = Vec::new();
        for s in &self.signatures {
            if seen.contains(&s.key) || !keys.iter().any(|k| k.key == s.key) {
                continue;
            }
            let Ok(vk) = VerifyingKey::from_bytes(&s.key.0) else {
                continue;
            };
            if vk
                .verify(&message, &Signature::from_bytes(&s.signature.0))
                .is_ok()
            {
                seen.push(s.key);
            }
        }
        seen.len()
    }

    /// Checks a first root, given out of band: valid, and signed by its own threshold. Its
    /// expiry is checked by the caller at the time it is used ([`check_expiry`]).
    pub fn verify_first(&self) -> Result<&Root, RootError> {
        let root = &self.signed;
        root.validate()?;
        if self.signatures.len() > ROOT_SIGNATURES_MAX {
            return Err(RootError::Invalid(format!(
                "{} signatures, more than {ROOT_SIGNATURES_MAX}",
                self.signatures.len()
            )));
        }
        let valid = self.valid_signatures(&root.root_keys);
        if valid < root.root_threshold as usize {
            return Err(RootError::BelowThreshold {
                version: root.version,
                by: "its own".into(),
                valid,
                threshold: root.root_threshold,
            });
        }
        Ok(root)
    }
}

/// Checks `next` against the `trusted` root: same fleet, version exactly one more, valid, and
/// signed by `trusted`'s threshold of `trusted`'s root keys **and** by its own threshold of
/// its own. Expiry is not checked here ([`update_chain`] checks the root it ends at).
pub fn verify_update(trusted: &Root, next: &SignedRoot) -> Result<Root, RootError> {
    let root = &next.signed;
    if root.fleet != trusted.fleet {
        return Err(RootError::OtherFleet {
            expected: trusted.fleet.clone(),
            found: root.fleet.clone(),
        });
    }
    if root.version != trusted.version + 1 {
        return Err(RootError::NotNext {
            trusted: trusted.version,
            found: root.version,
        });
    }
    next.verify_first()?;
    let valid = next.valid_signatures(&trusted.root_keys);
    if valid < trusted.root_threshold as usize {
        return Err(RootError::BelowThreshold {
            version: root.version,
            by: format!("v{}'s", trusted.version),
            valid,
            threshold: trusted.root_threshold,
        });
    }
    Ok(root.clone())
}

/// Steps from `trusted` through `chain` (consecutive versions, oldest first; versions not
/// above `trusted` are skipped, so a peer may send what it has), each by [`verify_update`],
/// and checks that the root it ends at has not expired at `now_unix_s`. Returns the roots
/// taken, in order (empty if none is newer). A root that fails stops the walk: the roots
/// before it are still taken, and the error is returned beside them.
pub fn update_chain(
    trusted: &Root,
    chain: &[SignedRoot],
    now_unix_s: i64,
) -> (Vec<SignedRoot>, Option<RootError>) {
    let newer: Vec<&SignedRoot> = chain
        .iter()
        .filter(|r| r.signed.version > trusted.version)
        .collect();
    if newer.len() > ROOT_CHAIN_MAX {
        return (
            Vec::new(),
            Some(RootError::ChainTooLong {
                len: newer.len(),
                max: ROOT_CHAIN_MAX,
            }),
        );
    }
    let mut taken: Vec<SignedRoot> = Vec::new();
    let mut current = trusted.clone();
    for next in newer {
        match verify_update(&current, next) {
            Ok(root) => {
                current = root;
                taken.push(next.clone());
            }
            Err(e) => return (taken, Some(e)),
        }
    }
    // Only the newest must be current: a node off for a year still follows the chain.
    if let Some(last) = taken.last() {
        if let Err(e) = check_expiry(&last.signed, now_unix_s) {
            return (Vec::new(), Some(e));
        }
    }
    (taken, None)
}

/// Whether `root` has expired at `now_unix_s`.
pub fn check_expiry(root: &Root, now_unix_s: i64) -> Result<(), RootError> {
    if root.expires_unix_s <= now_unix_s {
        return Err(RootError::Expired {
            version: root.version,
            expires_unix_s: root.expires_unix_s,
            now_unix_s,
        });
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= ROOT_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

fn valid_scope(scope: &str) -> bool {
    scope == "*" || is_valid_channel(scope.strip_suffix('/').unwrap_or(scope))
}

fn named_keys(what: &str, keys: &[NamedKey]) -> Result<(), RootError> {
    distinct(what, keys.iter().map(|k| (k.name.as_str(), &k.key)))
}

fn scoped_keys(what: &str, keys: &[ScopedKey]) -> Result<(), RootError> {
    distinct(what, keys.iter().map(|k| (k.name.as_str(), &k.key)))?;
    for k in keys {
        if k.channels.len() > ROOT_SCOPES_MAX {
            return Err(RootError::Invalid(format!(
                "{what}: {} has more than {ROOT_SCOPES_MAX} channel scopes",
                k.name
            )));
        }
        if let Some(s) = k.channels.iter().find(|s| !valid_scope(s)) {
            return Err(RootError::Invalid(format!(
                "{what}: {}'s scope {s:?} is not a channel",
                k.name
            )));
        }
    }
    Ok(())
}

fn distinct<'a>(
    what: &str,
    keys: impl Iterator<Item = (&'a str, &'a PublisherKey)>,
) -> Result<(), RootError> {
    let mut names = std::collections::HashSet::new();
    let mut seen = std::collections::HashSet::new();
    for (i, (name, key)) in keys.enumerate() {
        if i >= ROOT_KEYS_MAX {
            return Err(RootError::Invalid(format!(
                "{what}: more than {ROOT_KEYS_MAX} keys"
            )));
        }
        if name.is_empty() || name.len() > ROOT_NAME_BYTES_MAX || name.chars().any(char::is_control)
        {
            return Err(RootError::Invalid(format!(
                "{what}: a key's name must be 1 to {ROOT_NAME_BYTES_MAX} bytes without control characters"
            )));
        }
        if !names.insert(name) {
            return Err(RootError::Invalid(format!(
                "{what}: two keys named {name:?}"
            )));
        }
        if !seen.insert(*key) {
            return Err(RootError::Invalid(format!(
                "{what}: key {key} is named twice"
            )));
        }
        if VerifyingKey::from_bytes(&key.0).is_err() {
            return Err(RootError::Invalid(format!(
                "{what}: {name}'s key is not an ed25519 public key"
            )));
        }
    }
    Ok(())
}

/// A key as `ed25519:` and 64 hex digits in JSON (as in p2pd.toml; bare hex reads too), 32
/// bytes in bincode.
mod key_form {
    use super::*;

    pub(super) fn serialize<S: Serializer>(key: &PublisherKey, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&key.to_config_string())
        } else {
            key.serialize(s)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublisherKey, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            PublisherKey::parse_config_string(&text).map_err(serde::de::Error::custom)
        } else {
            PublisherKey::deserialize(d)
        }
    }
}

/// A signature as 128 hex digits in JSON, 64 bytes in bincode.
mod signature_form {
    use super::*;

    pub(super) fn serialize<S: Serializer>(sig: &SignatureBytes, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(sig.0))
        } else {
            sig.serialize(s)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SignatureBytes, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            let mut out = [0u8; 64];
            hex::decode_to_slice(text.as_bytes(), &mut out)
                .map_err(|_| serde::de::Error::custom("a signature is 128 hex digits"))?;
            Ok(SignatureBytes(out))
        } else {
            SignatureBytes::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests;
