//! The fleet's revocation list: the nodes whose certificates no peer admits any more, signed
//! by an operator or CA key of the fleet root (`p2pctl node revoke`).
//!
//! The list is whole and versioned, like a root: each new list replaces the one before and
//! carries every node still revoked, so a node that was away takes the newest and is
//! complete; an older or equal version is never taken (no rollback). A list also names the
//! root version it was made under, and one made under a newer root replaces any made under
//! an older one whatever their versions: a key that a new root dropped (stolen) may have
//! signed a list of a huge version, and the next list under the new root still replaces it.
//! A list never names a root newer than the one the receiver holds. It spreads from node to
//! node (the hello and [`crate::wire::Control::Trust`] carry its version; a peer that is
//! behind asks with [`crate::wire::Request::Revocations`]).
//!
//! A revocation covers the node's certificates that started (`not_before`) at or before the
//! moment it was revoked: a node enrolled again afterwards, with a fresh key or the same one,
//! is admitted with its new certificate. So an entry is needed only while a certificate it
//! covers can still be valid: an entry older than [`crate::cert::CERT_TTL_MAX_S`] (and the
//! clock skew) covers none, and [`Revocations::next`] drops it. That keeps the list to the
//! revocations of one year, at most [`REVOKED_MAX`].

use crate::cert::{CERT_SKEW_MAX_S, CERT_TTL_MAX_S, NodeCert};
use crate::codec;
use crate::envelope::SignatureBytes;
use crate::error::ManifestError;
use crate::ids::{NodeId, PublisherKey};
use crate::root::Root;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

/// Version of the list format this build reads and writes.
pub const REVOCATIONS_FORMAT_VERSION: u16 = 1;

/// Domain separation for revocation-list signatures.
pub const REVOCATIONS_SIGNING_CONTEXT: &[u8] = b"p2pd/revocations/v1\n";

/// Most nodes on one list. Revocation is for a node key that is lost or stolen (a node that
/// is retired is forgotten, and its certificate runs out); a year of those in a fleet of
/// 25,000 endpoints is far fewer. At [`REASON_BYTES_MAX`] each entry is under 200 bytes, so
/// a full list is under 1 MiB, which is [`REVOCATIONS_BYTES_MAX`].
pub const REVOKED_MAX: usize = 4096;

/// Longest reason, in bytes.
pub const REASON_BYTES_MAX: usize = 128;

/// Largest encoded signed list.
pub const REVOCATIONS_BYTES_MAX: usize = 1 << 20;

/// One revoked node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The node.
    pub node: NodeId,
    /// When it was revoked, unix seconds: certificates that started at or before it are
    /// refused.
    pub at_unix_s: i64,
    /// Why, as the operator gave it.
    pub reason: String,
}

/// The list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    /// [`REVOCATIONS_FORMAT_VERSION`].
    pub format_version: u16,
    /// The fleet (the root's `fleet`).
    pub fleet: String,
    /// The version of the root it was made under (its signer is a key of that root).
    pub root_version: u64,
    /// 1 for the first list, one more for each after.
    pub version: u64,
    /// When it was made, unix seconds.
    pub issued_unix_s: i64,
    /// The revoked nodes, sorted by node, each once.
    pub entries: Vec<Revoked>,
}

/// A list and its signer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocations {
    /// The list.
    pub list: Revocations,
    /// The key that signed it: an operator or CA key of the fleet root.
    pub signer: PublisherKey,
    /// ed25519 over [`REVOCATIONS_SIGNING_CONTEXT`] and the list's canonical bytes.
    pub signature: SignatureBytes,
}

/// Why a list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// It does not decode, or is too large.
    #[error("{0}")]
    Decode(#[from] ManifestError),
    /// A format this build does not read.
    #[error(
        "revocation list format version {0} is not supported (this build reads {REVOCATIONS_FORMAT_VERSION})"
    )]
    UnsupportedFormat(u16),
    /// A rule of its structure is broken.
    #[error("revocation list is not valid: {0}")]
    Invalid(String),
    /// For another fleet.
    #[error("revocation list is for fleet {found:?}, not {expected:?}")]
    OtherFleet {
        /// This fleet.
        expected: String,
        /// The list's.
        found: String,
    },
    /// Signed by a key the root does not allow to revoke.
    #[error("revocation list signed by {0}, which is not an operator or CA key of the fleet root")]
    UnknownSigner(PublisherKey),
    /// The signature does not verify.
    #[error("revocation list signature does not verify")]
    BadSignature,
    /// Not newer than the one held.
    #[error("revocation list v{found} is not newer than v{held}, held")]
    NotNewer {
        /// The version held.
        held: u64,
        /// The version offered.
        found: u64,
    },
    /// Made under a root newer than the one held: take that root first.
    #[error("revocation list made under root v{found}, newer than root v{held}, held")]
    NewerRoot {
        /// The root version held.
        held: u64,
        /// The list's.
        found: u64,
    },
}

impl From<crate::root::Succession> for RevokeError {
    fn from(s: crate::root::Succession) -> Self {
        use crate::root::Succession;
        match s {
            Succession::OtherFleet { expected, found } => Self::OtherFleet { expected, found },
            Succession::NewerRoot { held, found } => Self::NewerRoot { held, found },
            Succession::NotNewer { held, found } => Self::NotNewer { held, found },
        }
    }
}

impl Revocations {
    /// An empty list of `fleet`, version 0: what a node holds before its first list.
    pub fn empty(fleet: &str) -> Self {
        Self {
            format_version: REVOCATIONS_FORMAT_VERSION,
            fleet: fleet.to_owned(),
            root_version: 0,
            version: 0,
            issued_unix_s: 0,
            entries: Vec::new(),
        }
    }

    /// Checks its own rules: format, sorted distinct entries, bounded reasons and count.
    pub fn validate(&self) -> Result<(), RevokeError> {
        if self.format_version != REVOCATIONS_FORMAT_VERSION {
            return Err(RevokeError::UnsupportedFormat(self.format_version));
        }
        let bad = |why: String| Err(RevokeError::Invalid(why));
        if self.version == 0 {
            return bad("version 0 is the empty list every node starts with".into());
        }
        if self.entries.len() > REVOKED_MAX {
            return bad(format!("more than {REVOKED_MAX} nodes"));
        }
        if self.entries.windows(2).any(|w| w[0].node >= w[1].node) {
            return bad("entries must be sorted by node, each node once".into());
        }
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.reason.len() > REASON_BYTES_MAX)
        {
            return bad(format!(
                "the reason for {} is longer than {REASON_BYTES_MAX} bytes",
                e.node.to_hex()
            ));
        }
        Ok(())
    }

    /// The entry that revokes `cert`, if one does: for its node, made at or after the
    /// certificate started.
    pub fn revokes(&self, cert: &NodeCert) -> Option<&Revoked> {
        self.entry(&cert.node)
            .filter(|e| cert.not_before_unix_s <= e.at_unix_s)
    }

    /// The entry for `node`, if any.
    pub fn entry(&self, node: &NodeId) -> Option<&Revoked> {
        self.entries
            .binary_search_by(|e| e.node.cmp(node))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Whether this list replaces `held`: made under a newer root, or under the same one
    /// with a higher version.
    pub fn replaces(&self, held: &Self) -> bool {
        (self.root_version, self.version) > (held.root_version, held.version)
    }

    /// The list after this one, made under root `root_version`, with `node` revoked at
    /// `now_unix_s` for `reason` (cut to [`REASON_BYTES_MAX`]; a node listed already is
    /// revoked again from now), leaving out entries that can no longer cover a valid
    /// certificate. `None` when the list is full.
    pub fn next(
        &self,
        root_version: u64,
        node: NodeId,
        reason: &str,
        now_unix_s: i64,
    ) -> Option<Self> {
        let mut entries = self.current(node, now_unix_s);
        if entries.len() >= REVOKED_MAX {
            return None;
        }
        entries.push(Revoked {
            node,
            at_unix_s: now_unix_s,
            reason: crate::wire::truncate_text(reason, REASON_BYTES_MAX),
        });
        entries.sort_by_key(|e| e.node);
        Some(self.successor(root_version, entries, now_unix_s))
    }

    /// The list after this one, made under root `root_version`, without `node` (revoked by
    /// mistake, or by a key since dropped); `None` if it is not listed.
    pub fn without(&self, root_version: u64, node: &NodeId, now_unix_s: i64) -> Option<Self> {
        self.entry(node)?;
        let entries = self.current(*node, now_unix_s);
        Some(self.successor(root_version, entries, now_unix_s))
    }

    /// The entries other than `node`'s that can still cover a valid certificate.
    fn current(&self, node: NodeId, now_unix_s: i64) -> Vec<Revoked> {
        let horizon = now_unix_s - CERT_TTL_MAX_S - CERT_SKEW_MAX_S;
        self.entries
            .iter()
            .filter(|e| e.node != node && e.at_unix_s >= horizon)
            .cloned()
            .collect()
    }

    fn successor(&self, root_version: u64, entries: Vec<Revoked>, now_unix_s: i64) -> Self {
        Self {
            format_version: REVOCATIONS_FORMAT_VERSION,
            fleet: self.fleet.clone(),
            root_version,
            version: crate::root::next_version((self.root_version, self.version), root_version),
            issued_unix_s: now_unix_s,
            entries,
        }
    }
}

impl SignedRevocations {
    /// Signs `list` with `key`.
    pub fn sign(list: Revocations, key: &SigningKey) -> Self {
        let (signer, signature) = codec::sign_document(REVOCATIONS_SIGNING_CONTEXT, &list, key);
        Self {
            list,
            signer,
            signature,
        }
    }

    /// The wire and store form.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes it (at most [`REVOCATIONS_BYTES_MAX`]); nothing is verified yet.
    pub fn decode(bytes: &[u8]) -> Result<Self, RevokeError> {
        Ok(codec::decode::<Self, REVOCATIONS_BYTES_MAX>(
            bytes,
            "revocation list",
        )?)
    }

    /// Checks it under `root`: its rules, for the root's fleet, signed by one of the root's
    /// operator or CA keys.
    pub fn verify(&self, root: &Root) -> Result<&Revocations, RevokeError> {
        let l = &self.list;
        l.validate()?;
        root.check_fleet(&l.fleet)?;
        if !root.is_ca(&self.signer) && !root.operators.iter().any(|k| k.key == self.signer) {
            return Err(RevokeError::UnknownSigner(self.signer));
        }
        if !codec::document_verifies(
            REVOCATIONS_SIGNING_CONTEXT,
            l,
            &self.signer,
            &self.signature,
        ) {
            return Err(RevokeError::BadSignature);
        }
        Ok(l)
    }

    /// Checks it under `root` as the successor of `held` (`None`: no list held yet):
    /// verified, made under `root` or an older one, and replacing `held`
    /// ([`Revocations::replaces`]).
    pub fn verify_after(
        &self,
        root: &Root,
        held: Option<&Revocations>,
    ) -> Result<&Revocations, RevokeError> {
        let l = self.verify(root)?;
        root.check_succession(
            (l.root_version, l.version),
            held.map(|h| (h.root_version, h.version)),
        )?;
        Ok(l)
    }
}

#[cfg(test)]
mod tests;
