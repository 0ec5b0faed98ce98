//! Fleet status records: what one node says of its releases, signed with its node key, so
//! that any node can keep the latest record of every other and answer for the whole fleet.
//!
//! A record is small on purpose (a 25,000-node fleet's records must fit in a few MiB): per
//! release, its state, chunks held and total, and the last error in a few words. Each record
//! carries the node's sequence number; a receiver keeps a record only if its number is above
//! the one it holds for that node ([`StatusBody::supersedes`]), so a replayed old record never
//! overwrites a newer one. [`SignedStatus::verify`] checks everything else: the size, the
//! encoding, the signature by the node the record names, and every field's bounds.

use crate::codec;
use crate::error::ManifestError;
use crate::ids::{NodeId, ReleaseId};
use crate::manifest::Severity;
use crate::wire::valid_name;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Largest encoded [`SignedStatus`]: [`STATUS_RELEASES_MAX`] releases with errors of
/// [`STATUS_ERROR_BYTES_MAX`] fit (about 9 KiB); a typical record is under 200 bytes.
pub const STATUS_RECORD_BYTES_MAX: usize = 12 << 10;

/// Most releases one record reports: the node's most recent ones (a node holds a few).
pub const STATUS_RELEASES_MAX: usize = 32;

/// Longest error text in a record, bytes: enough for "apply exited 3: disk full"; the node's
/// own `p2pctl status` has the whole story.
pub const STATUS_ERROR_BYTES_MAX: usize = 200;

/// Domain separation of the signature.
const STATUS_CONTEXT: &[u8] = b"p2pd status record v4\0";

/// Where a release stands on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReleaseState {
    /// Known and verified, nothing fetched yet.
    Announced,
    /// Being fetched.
    Downloading,
    /// Held back: the node's download window is closed.
    PausedByWindow,
    /// Every chunk verified and stored.
    Complete,
    /// Installed.
    Activated,
    /// The fetch or the installation failed (see the error).
    Failed,
    /// A newer version of the channel completed first; this one never will.
    Superseded,
    /// Refused before anything was fetched (signature, version, expiry: see the error).
    Refused,
    /// The node does not follow the release's channel.
    NotFollowed,
    /// Held from installing by an exception on the node (`p2pctl hold`): its reason is the
    /// error, its end `until_unix_s`. The node still fetches and serves it.
    Held,
    /// The release's target leaves this node out: it fetches and serves it for its site
    /// but never installs it.
    NotTargeted,
    /// Held, waiting on the rollout: a requirement not installed yet, an earlier ring's
    /// gate, or a halted or paused rollout (the error says which).
    Waiting,
    /// Installed, then rolled back: by an operator's fleet order (`p2pctl rollback CHANNEL
    /// --to VERSION`) or on the node (`p2pctl rollback CHANNEL`); the error says which and
    /// why. `current` points at an older version, and this one is not installed again.
    RolledBack,
}

impl ReleaseState {
    /// Every state, in the order a release moves through them, then the ends that leave it.
    pub const ALL: [Self; 13] = [
        Self::Announced,
        Self::Downloading,
        Self::PausedByWindow,
        Self::Complete,
        Self::Activated,
        Self::Failed,
        Self::Superseded,
        Self::Refused,
        Self::NotFollowed,
        Self::Held,
        Self::NotTargeted,
        Self::Waiting,
        Self::RolledBack,
    ];

    /// Position in [`ReleaseState::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The state's name, as `p2pctl fleet` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Announced => "announced",
            Self::Downloading => "downloading",
            Self::PausedByWindow => "paused",
            Self::Complete => "complete",
            Self::Activated => "activated",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
            Self::Refused => "refused",
            Self::NotFollowed => "not followed",
            Self::Held => "held",
            Self::NotTargeted => "not targeted",
            Self::Waiting => "waiting",
            Self::RolledBack => "rolled back",
        }
    }

    /// Whether the node holds the whole release.
    pub fn has_release(self) -> bool {
        matches!(
            self,
            Self::Complete | Self::Activated | Self::Held | Self::Waiting | Self::RolledBack
        )
    }
}

/// One release on the reporting node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStatus {
    /// The release.
    pub release: ReleaseId,
    /// Its channel (empty for a release refused before its manifest was read).
    pub channel: String,
    /// Its version (0 when the channel is unknown).
    pub version: u64,
    /// When it was published (its manifest's creation time), unix seconds; 0 if unknown.
    pub published_unix_s: i64,
    /// Its severity (`Low` when unknown): the report holds critical releases to the 72-hour
    /// rule, on nodes that never stored them too.
    pub severity: Severity,
    /// Where it stands.
    pub state: ReleaseState,
    /// Unique chunks held.
    pub chunks_have: u32,
    /// Unique chunks in the release.
    pub chunks_total: u32,
    /// Since when it has been in this state, unix seconds: completion and installation times
    /// for throughput and the compliance report.
    pub since_unix_s: i64,
    /// For a release paused by a closed window: when the window opens, unix seconds (`None`:
    /// not in sight); for a held one, when the hold ends.
    pub until_unix_s: Option<i64>,
    /// The last error, if any (at most [`STATUS_ERROR_BYTES_MAX`] bytes).
    pub error: Option<String>,
    /// The node's ring for this release, plus one, when that ring gates a later one (0: the
    /// release has no rings, does not target the node, or the node is in the last ring):
    /// what site summaries count each ring's gate from.
    pub ring: u8,
}

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusBody {
    /// The node (its ed25519 public key): the key that signs the record.
    pub node: NodeId,
    /// Its site.
    pub site: String,
    /// Whether it installs releases (`[install] target` is set): nodes that never install
    /// are not missing an installation.
    pub installs: bool,
    /// Grows with every record the node sends (its wall clock in milliseconds at sending, or
    /// one more than the last if the clock stepped back).
    pub seq: u64,
    /// When it was made, unix seconds.
    pub at_unix_s: i64,
    /// Its releases, at most [`STATUS_RELEASES_MAX`].
    pub releases: Vec<ReleaseStatus>,
}

impl StatusBody {
    /// Whether this record replaces `held` (same node, higher number).
    pub fn supersedes(&self, held: &Self) -> bool {
        self.node == held.node && self.seq > held.seq
    }

    /// The release's entry, if the node reports it.
    pub fn release(&self, id: &ReleaseId) -> Option<&ReleaseStatus> {
        self.releases.iter().find(|r| r.release == *id)
    }

    fn check(&self) -> Result<(), StatusError> {
        if !valid_name(&self.site) {
            return Err(StatusError::Invalid("site name"));
        }
        if self.releases.len() > STATUS_RELEASES_MAX {
            return Err(StatusError::Invalid("too many releases"));
        }
        for r in &self.releases {
            if !r.channel.is_empty() && !crate::manifest::is_valid_channel(&r.channel) {
                return Err(StatusError::Invalid("channel name"));
            }
            if r.chunks_have > r.chunks_total {
                return Err(StatusError::Invalid(
                    "more chunks held than the release has",
                ));
            }
            if r.error
                .as_ref()
                .is_some_and(|e| e.len() > STATUS_ERROR_BYTES_MAX)
            {
                return Err(StatusError::Invalid("error text too long"));
            }
            if usize::from(r.ring) > crate::rollout::RINGS_MAX {
                return Err(StatusError::Invalid("ring"));
            }
        }
        Ok(())
    }
}

/// A status record as it travels and as receivers store it: the body's canonical encoding and
/// the node's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedStatus {
    /// [`StatusBody`], encoded.
    pub body: Vec<u8>,
    /// Ed25519 signature of [`StatusBody::node`] over the context and `body`.
    pub signature: Vec<u8>,
}

/// Why a status record was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// It does not decode, or is too large.
    #[error("malformed status record: {0}")]
    Malformed(String),
    /// The signature is not the named node's.
    #[error("status record not signed by the node it names")]
    BadSignature,
    /// A field is out of bounds.
    #[error("invalid status record: {0}")]
    Invalid(&'static str),
}

impl From<ManifestError> for StatusError {
    fn from(e: ManifestError) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// `s` cut to at most [`STATUS_ERROR_BYTES_MAX`] bytes at a character boundary.
pub fn bounded_error(s: &str) -> String {
    crate::wire::truncate_text(s, STATUS_ERROR_BYTES_MAX)
}

impl SignedStatus {
    /// Signs `body` with `key`, which must be the key of `body.node`.
    pub fn sign(body: &StatusBody, key: &SigningKey) -> Self {
        debug_assert_eq!(body.node.0, key.verifying_key().to_bytes());
        let body = codec::encode(body);
        let signature = key
            .sign(&crate::codec::with_context(STATUS_CONTEXT, &body))
            .to_bytes()
            .to_vec();
        Self { body, signature }
    }

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a record from the network or the store, bounded.
    pub fn decode(bytes: &[u8]) -> Result<Self, StatusError> {
        Ok(codec::decode::<Self, STATUS_RECORD_BYTES_MAX>(
            bytes,
            "status record",
        )?)
    }

    /// The body, if the signature is the named node's and every field is in bounds.
    pub fn verify(&self) -> Result<StatusBody, StatusError> {
        let body = self.body_unverified()?;
        let key = VerifyingKey::from_bytes(&body.node.0).map_err(|_| StatusError::BadSignature)?;
        let sig = <[u8; 64]>::try_from(self.signature.as_slice())
            .map_err(|_| StatusError::BadSignature)?;
        key.verify(
            &crate::codec::with_context(STATUS_CONTEXT, &self.body),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| StatusError::BadSignature)?;
        body.check()?;
        Ok(body)
    }

    /// The body without checking the signature: for records this node verified before it
    /// stored them.
    pub fn body_unverified(&self) -> Result<StatusBody, StatusError> {
        Ok(codec::decode::<StatusBody, STATUS_RECORD_BYTES_MAX>(
            &self.body,
            "status record body",
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    fn body(k: &SigningKey, seq: u64) -> StatusBody {
        StatusBody {
            node: NodeId(k.verifying_key().to_bytes()),
            site: "branch-17".into(),
            installs: true,
            seq,
            at_unix_s: 1_795_392_000,
            releases: vec![ReleaseStatus {
                release: ReleaseId([3; 32]),
                channel: "security/openssl".into(),
                version: 7,
                published_unix_s: 1_795_390_000,
                severity: Severity::Critical,
                state: ReleaseState::Failed,
                chunks_have: 16_384,
                chunks_total: 16_384,
                since_unix_s: 1_795_391_000,
                until_unix_s: None,
                error: Some("apply exited 3".into()),
                ring: 0,
            }],
        }
    }

    #[test]
    fn a_signed_record_round_trips_and_is_small() {
        let k = key(1);
        let signed = SignedStatus::sign(&body(&k, 7), &k);
        let bytes = signed.encode();
        assert!(bytes.len() < 230, "{} bytes", bytes.len());
        let back = SignedStatus::decode(&bytes).unwrap().verify().unwrap();
        assert_eq!(back, body(&k, 7));
    }

    #[test]
    fn forged_oversized_or_out_of_bounds_records_are_refused() {
        let (k, other) = (key(1), key(2));
        // Signed by another key than the node it names.
        let forged = SignedStatus::sign(&body(&k, 1), &k);
        let mut b = body(&k, 1);
        b.releases[0].state = ReleaseState::Activated;
        let tampered = SignedStatus {
            body: codec::encode(&b),
            signature: forged.signature.clone(),
        };
        assert_eq!(tampered.verify(), Err(StatusError::BadSignature));
        let mut claims = body(&k, 1);
        claims.node = NodeId(other.verifying_key().to_bytes());
        let wrong_signer = SignedStatus {
            body: codec::encode(&claims),
            signature: forged.signature.clone(),
        };
        assert_eq!(wrong_signer.verify(), Err(StatusError::BadSignature));
        // Too large to decode at all.
        let huge = vec![0u8; STATUS_RECORD_BYTES_MAX + 1];
        assert!(matches!(
            SignedStatus::decode(&huge),
            Err(StatusError::Malformed(_))
        ));
        // Validly signed, fields out of bounds.
        let mut many = body(&k, 1);
        many.releases = vec![many.releases[0].clone(); STATUS_RELEASES_MAX + 1];
        assert!(matches!(
            SignedStatus::sign(&many, &k).verify(),
            Err(StatusError::Invalid(_))
        ));
        let mut over = body(&k, 1);
        over.releases[0].chunks_have = over.releases[0].chunks_total + 1;
        assert!(SignedStatus::sign(&over, &k).verify().is_err());
        let mut long = body(&k, 1);
        long.releases[0].error = Some("x".repeat(STATUS_ERROR_BYTES_MAX + 1));
        assert!(SignedStatus::sign(&long, &k).verify().is_err());
        let mut site = body(&k, 1);
        site.site = "../etc".into();
        assert!(SignedStatus::sign(&site, &k).verify().is_err());
        let mut channel = body(&k, 1);
        channel.releases[0].channel = "../../etc".into();
        assert!(SignedStatus::sign(&channel, &k).verify().is_err());
        // Garbage.
        assert!(SignedStatus::decode(b"\x05garbage").is_err());
    }

    #[test]
    fn only_a_higher_number_from_the_same_node_supersedes() {
        let (k, other) = (key(1), key(2));
        assert!(body(&k, 8).supersedes(&body(&k, 7)));
        assert!(!body(&k, 7).supersedes(&body(&k, 7)));
        assert!(!body(&k, 6).supersedes(&body(&k, 7)));
        assert!(!body(&other, 9).supersedes(&body(&k, 7)));
    }

    #[test]
    fn error_texts_are_cut_at_a_character_boundary() {
        let cut = bounded_error(&"ü".repeat(STATUS_ERROR_BYTES_MAX));
        assert!(cut.len() <= STATUS_ERROR_BYTES_MAX && cut.chars().all(|c| c == 'ü'));
    }
}
