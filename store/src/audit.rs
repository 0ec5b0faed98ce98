//! The audit log: an append-only, hash-chained record of what this node saw happen to
//! releases and peers, kept in its store ([`crate::Store::append_audit`]).
//!
//! Each [`AuditEntry`] holds its sequence number (1, 2, 3, …), the time, the event, and the
//! hash of the entry before it ([`GENESIS`] for the first). An entry's hash is BLAKE3 (in
//! derive-key mode, context [`ENTRY_CONTEXT`]) of its canonical encoding, so changing any
//! byte of an entry changes its hash and breaks the link the next entry holds; removing an
//! entry leaves a gap in the numbers and a broken link; moving one puts a number out of
//! order. [`verify`] walks a log front to back and names the first entry where any of that
//! happened.
//!
//! What the chain cannot show on its own is a log cut short at the end, or rewritten as a
//! whole by someone who recomputed every hash. For that the node signs an [`AuditSeal`]
//! (count and last hash) with its identity key whenever the log is read out
//! (`p2pctl audit --json`): a copy kept elsewhere then proves what the node's log held at that
//! moment, and any later copy must extend it.
//!
//! The events recorded: a release published here (with the publisher keys that signed it),
//! a release announced to this node and accepted (the fetch starts), a release complete, an
//! activation installed or failed, a peer banned, and the daemon starting with a
//! configuration (by its hash: the daemon reads its configuration only at start, so each
//! start records the configuration it now runs with).

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use protocol::VerifiedRelease;
use serde::{Deserialize, Serialize};

/// The `prev` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// BLAKE3 derive-key context of entry hashes.
pub const ENTRY_CONTEXT: &str = "p2pd 2026 audit entry v1";

/// BLAKE3 derive-key context of what a seal signs.
pub const SEAL_CONTEXT: &str = "p2pd 2026 audit seal v1";

/// Largest encoded entry: events hold ids, names, a channel and a reason of at most
/// [`REASON_BYTES_MAX`], far below this.
pub const ENTRY_BYTES_MAX: usize = 8 << 10;

/// Longest reason kept in an entry (an activation's failure, a ban's cause); longer ones are
/// cut at a character boundary.
pub const REASON_BYTES_MAX: usize = 1024;

/// Most entries one listing returns: a log grows by a handful of entries per release, so this
/// is years of history; older ones are read with `--since`.
pub const LIST_ENTRIES_MAX: usize = 100_000;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// The daemon started with this configuration.
    Started {
        /// BLAKE3 of the effective configuration (as TOML, comments and layout aside), hex.
        config_blake3: String,
        /// The daemon's version.
        daemon_version: String,
    },
    /// A release was published on this node (`p2pctl publish`).
    Published {
        /// Release id, hex.
        release: String,
        /// Channel.
        channel: String,
        /// Version.
        version: u64,
        /// The trusted publishers whose signatures verified, by name.
        signers: Vec<String>,
        /// Every key that signed the envelope, hex.
        keys: Vec<String>,
    },
    /// A release signed by trusted publishers was announced to this node and accepted: its
    /// fetch starts.
    Announced {
        /// Release id, hex.
        release: String,
        /// Channel.
        channel: String,
        /// Version.
        version: u64,
        /// The trusted publishers whose signatures verified, by name.
        signers: Vec<String>,
        /// Every key that signed the envelope, hex.
        keys: Vec<String>,
    },
    /// Every chunk of a fetched release is verified and stored.
    Completed {
        /// Release id, hex.
        release: String,
        /// Channel.
        channel: String,
        /// Version.
        version: u64,
    },
    /// A release was installed (`current` points at it, its apply command succeeded).
    Activated {
        /// Release id, hex.
        release: String,
        /// Channel.
        channel: String,
        /// Version.
        version: u64,
    },
    /// Installing a release failed and was rolled back.
    ActivationFailed {
        /// Release id, hex.
        release: String,
        /// Channel.
        channel: String,
        /// Version.
        version: u64,
        /// What failed.
        reason: String,
    },
    /// A peer was banned.
    PeerBanned {
        /// Its libp2p peer id.
        peer: String,
        /// Why.
        reason: String,
        /// For how long, seconds.
        for_s: u64,
    },
    // New kinds go last: entries are stored by their index.
    /// The next install found a channel's `current` pointing at another version directory
    /// than the one the daemon last installed (an operator switched it by hand); the
    /// install replaced it, and kept that directory as the one to roll back to.
    CurrentReplaced {
        /// Channel.
        channel: String,
        /// The directory `current` pointed at.
        found: String,
        /// The directory the daemon last installed (empty: none).
        expected: String,
        /// The version whose install replaced it.
        version: u64,
    },
    /// An operator retired a silent node from the fleet view and the report (`p2pctl node
    /// forget`).
    NodeForgotten {
        /// The node, hex.
        node: String,
        /// When its last record was made, unix seconds.
        last_record_unix_s: i64,
    },
    /// The node took a fleet root: its first (`p2pd init --root`) or the next ones of a
    /// rotation.
    RootTaken {
        /// The fleet.
        fleet: String,
        /// The version held before (0: none).
        from_version: u64,
        /// The version held now.
        to_version: u64,
        /// BLAKE3 of the newest root's canonical bytes, hex.
        root_blake3: String,
    },
    /// This node's certificate from the fleet CA was installed (`p2pd cert install`).
    CertInstalled {
        /// Its site.
        site: String,
        /// Its region.
        region: String,
        /// When it expires, unix seconds.
        expires_unix_s: i64,
        /// The CA key that issued it, hex.
        issuer: String,
    },
    /// A release was published to be held for approval (`--hold-for-approval`): stored,
    /// not served until its channel's threshold of signatures is met.
    Held {
        /// Release id, hex.
        release: String,
        /// Channel.
        channel: String,
        /// Version.
        version: u64,
        /// The keys allowed on its channel whose signatures verified, by name.
        signers: Vec<String>,
        /// Signatures its channel needs.
        need: u64,
    },
    /// An approver's signature was added to a held release (`p2pctl approve`); with
    /// `released`, it now has the signatures it needs and is served.
    Approved {
        /// Release id, hex.
        release: String,
        /// The key that signed, hex.
        key: String,
        /// Every signer allowed on its channel now, by name.
        signers: Vec<String>,
        /// Signatures it has now.
        have: u64,
        /// Signatures it needs.
        need: u64,
        /// It was released.
        released: bool,
    },
    /// A newer revocation list of the fleet was taken (`p2pctl node revoke`, or from a peer).
    RevocationsTaken {
        /// The fleet.
        fleet: String,
        /// The version held before (0: none).
        from_version: u64,
        /// The version held now.
        to_version: u64,
        /// The nodes this list revokes that the one before did not (or revokes anew), hex.
        revoked: Vec<String>,
        /// The nodes the one before revoked and this one does not, hex.
        restored: Vec<String>,
        /// The key that signed it, hex.
        signer: String,
    },
    /// An install hold (exception) was set on this node (`p2pctl hold`).
    HoldSet {
        /// What it holds: a channel (and those under it) or a release id, hex.
        target: String,
        /// Why.
        reason: String,
        /// When it ends by itself, unix seconds.
        until_unix_s: i64,
    },
    /// An install hold was lifted before its end (`p2pctl unhold`).
    HoldLifted {
        /// What it held.
        target: String,
    },
    /// A release was removed from the store (`p2pctl release remove`, or retention); its
    /// chunks are reclaimed by the next compaction.
    ReleaseRemoved {
        /// The release, hex.
        release: String,
        /// Its channel (empty if unknown).
        channel: String,
        /// Its version.
        version: u64,
    },
    /// Newer fleet orders were taken (an operator's pause, resume, abort, rollback or
    /// fleet-wide hold), from the API or a peer.
    OrdersTaken {
        /// The fleet.
        fleet: String,
        /// The version held before (0: none).
        from_version: u64,
        /// The version held now.
        to_version: u64,
        /// What changed, one line each.
        changes: Vec<String>,
        /// The operator key that signed them, hex.
        signer: String,
    },
    /// An installed version was rolled back: `current` points at an older one.
    RolledBack {
        /// The release rolled back, hex.
        release: String,
        /// Its channel.
        channel: String,
        /// Its version.
        version: u64,
        /// The version directory `current` points at now.
        to: String,
        /// By a fleet order (else by this node's operator).
        fleet: bool,
        /// Why.
        reason: String,
    },
    /// A failed install is tried once more: the release was resumed after it failed.
    InstallRetried {
        /// The release, hex.
        release: String,
        /// Its channel.
        channel: String,
        /// Its version.
        version: u64,
        /// When the release was resumed, unix seconds.
        resumed_unix_s: i64,
    },
    /// The daemon stopped cleanly (a crash or SIGKILL leaves no entry: the next `started`
    /// follows without one).
    Stopped {
        /// Why: the signal, such as "SIGTERM".
        reason: String,
    },
    /// The daemon read its configuration again (SIGHUP).
    Reloaded {
        /// BLAKE3 of the effective configuration now in force, hex.
        config_blake3: String,
        /// The sections that changed and took effect at once.
        applied: Vec<String>,
        /// The sections that changed and take effect at the next start.
        restart_needed: Vec<String>,
    },
}

impl AuditEvent {
    /// `v` was published on this node.
    pub fn published(v: &VerifiedRelease) -> Self {
        Self::Published {
            release: v.id.to_hex(),
            channel: v.manifest.channel.clone(),
            version: v.manifest.version,
            signers: v.signers.clone(),
            keys: signing_keys(v),
        }
    }

    /// `v` was announced to this node and accepted.
    pub fn announced(v: &VerifiedRelease) -> Self {
        Self::Announced {
            release: v.id.to_hex(),
            channel: v.manifest.channel.clone(),
            version: v.manifest.version,
            signers: v.signers.clone(),
            keys: signing_keys(v),
        }
    }

    /// `v` was fetched in full.
    pub fn completed(v: &VerifiedRelease) -> Self {
        Self::Completed {
            release: v.id.to_hex(),
            channel: v.manifest.channel.clone(),
            version: v.manifest.version,
        }
    }

    /// The event's kind, as in the JSON form (`{"published": {…}}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Published { .. } => "published",
            Self::Announced { .. } => "announced",
            Self::Completed { .. } => "completed",
            Self::Activated { .. } => "activated",
            Self::ActivationFailed { .. } => "activation_failed",
            Self::PeerBanned { .. } => "peer_banned",
            Self::CurrentReplaced { .. } => "current_replaced",
            Self::NodeForgotten { .. } => "node_forgotten",
            Self::RootTaken { .. } => "root_taken",
            Self::CertInstalled { .. } => "cert_installed",
            Self::RevocationsTaken { .. } => "revocations_taken",
            Self::Held { .. } => "held",
            Self::Approved { .. } => "approved",
            Self::HoldSet { .. } => "hold_set",
            Self::HoldLifted { .. } => "hold_lifted",
            Self::ReleaseRemoved { .. } => "release_removed",
            Self::OrdersTaken { .. } => "orders_taken",
            Self::RolledBack { .. } => "rolled_back",
            Self::InstallRetried { .. } => "install_retried",
            Self::Stopped { .. } => "stopped",
            Self::Reloaded { .. } => "reloaded",
        }
    }

    /// One line for a person.
    pub fn describe(&self) -> String {
        match self {
            Self::Started {
                config_blake3,
                daemon_version,
            } => format!(
                "p2pd {daemon_version} started, configuration {}",
                short(config_blake3)
            ),
            Self::Published {
                release,
                channel,
                version,
                signers,
                ..
            } => format!(
                "published {channel} v{version} ({}) signed by {}",
                short(release),
                signers.join(", ")
            ),
            Self::Announced {
                release,
                channel,
                version,
                signers,
                ..
            } => format!(
                "accepted {channel} v{version} ({}) signed by {}",
                short(release),
                signers.join(", ")
            ),
            Self::Completed {
                release,
                channel,
                version,
            } => format!("fetched {channel} v{version} ({})", short(release)),
            Self::Activated {
                release,
                channel,
                version,
            } => format!("installed {channel} v{version} ({})", short(release)),
            Self::ActivationFailed {
                release,
                channel,
                version,
                reason,
            } => format!(
                "installing {channel} v{version} ({}) failed: {reason}",
                short(release)
            ),
            Self::PeerBanned {
                peer,
                reason,
                for_s,
            } => {
                format!("banned peer {peer} for {for_s} s: {reason}")
            }
            Self::CurrentReplaced {
                channel,
                found,
                expected,
                version,
            } => format!(
                "{channel}: current pointed at {found}, not {}, by hand; replaced by v{version}",
                if expected.is_empty() {
                    "nothing"
                } else {
                    expected
                }
            ),
            Self::NodeForgotten {
                node,
                last_record_unix_s,
            } => format!(
                "node {} retired from the fleet view (silent since unix {last_record_unix_s})",
                short(node)
            ),
            Self::RootTaken {
                fleet,
                from_version,
                to_version,
                root_blake3,
            } => {
                if *from_version == 0 {
                    format!(
                        "fleet {fleet}: root v{to_version} taken as the first ({})",
                        short(root_blake3)
                    )
                } else {
                    format!(
                        "fleet {fleet}: root v{from_version} rotated to v{to_version} ({})",
                        short(root_blake3)
                    )
                }
            }
            Self::CertInstalled {
                site,
                region,
                expires_unix_s,
                issuer,
            } => format!(
                "certificate installed: site {site}, region {region}, until unix {expires_unix_s}, issued by {}",
                short(issuer)
            ),
            Self::Held {
                release,
                channel,
                version,
                signers,
                need,
            } => format!(
                "{channel} v{version} ({}) held for approval: signed by {} of {need} ({})",
                short(release),
                signers.len(),
                signers.join(", ")
            ),
            Self::Approved {
                release,
                key,
                signers,
                have,
                need,
                released,
            } => format!(
                "{} approved by key {}: {have} of {need} signatures ({}){}",
                short(release),
                short(key),
                signers.join(", "),
                if *released { ", released" } else { "" }
            ),
            Self::HoldSet {
                target,
                reason,
                until_unix_s,
            } => format!(
                "install hold on {target} until {}: {reason}",
                jiff::Timestamp::from_second(*until_unix_s)
                    .map_or_else(|_| until_unix_s.to_string(), |t| t.to_string())
            ),
            Self::HoldLifted { target } => format!("install hold on {target} lifted"),
            Self::ReleaseRemoved {
                release,
                channel,
                version,
            } => format!(
                "release {} ({channel} version {version}) removed",
                &release[..12.min(release.len())]
            ),
            Self::OrdersTaken {
                fleet,
                from_version,
                to_version,
                changes,
                signer,
            } => format!(
                "fleet {fleet} orders v{from_version} -> v{to_version} signed by {}: {}",
                short(signer),
                if changes.is_empty() {
                    "no change".to_string()
                } else {
                    changes.join("; ")
                }
            ),
            Self::RolledBack {
                release,
                channel,
                version,
                to,
                fleet,
                reason,
            } => format!(
                "{channel} v{version} ({}) rolled back to {to} {}: {reason}",
                short(release),
                if *fleet {
                    "by a fleet order"
                } else {
                    "on this node"
                }
            ),
            Self::Stopped { reason } => format!("p2pd stopped ({reason})"),
            Self::Reloaded {
                config_blake3,
                applied,
                restart_needed,
            } => {
                let list = |l: &[String]| {
                    if l.is_empty() {
                        "nothing".to_string()
                    } else {
                        l.join(", ")
                    }
                };
                format!(
                    "configuration {} read again: applied {}; at the next start {}",
                    short(config_blake3),
                    list(applied),
                    list(restart_needed)
                )
            }
            Self::InstallRetried {
                release,
                channel,
                version,
                resumed_unix_s,
            } => format!(
                "{channel} v{version} ({}) failed before the release was resumed at unix {resumed_unix_s}: tried once more",
                short(release)
            ),
            Self::RevocationsTaken {
                fleet,
                from_version,
                to_version,
                revoked,
                restored,
                signer,
            } => {
                let names = |list: &[String]| {
                    if list.is_empty() {
                        "none".to_string()
                    } else {
                        list.iter().map(|n| short(n)).collect::<Vec<_>>().join(", ")
                    }
                };
                format!(
                    "fleet {fleet}: revocation list v{from_version} -> v{to_version}, newly revoked: {}; no longer revoked: {}; signed by {}",
                    names(revoked),
                    names(restored),
                    short(signer)
                )
            }
        }
    }
}

fn signing_keys(v: &VerifiedRelease) -> Vec<String> {
    v.envelope
        .signatures
        .iter()
        .map(|s| s.key.to_hex())
        .collect()
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// `reason` cut to at most [`REASON_BYTES_MAX`] bytes, at a character boundary.
pub fn bounded_reason(reason: &str) -> String {
    protocol::wire::truncate_text(reason, REASON_BYTES_MAX)
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When it was appended, unix milliseconds.
    pub at_unix_ms: i64,
    /// Hash of the entry before ([`GENESIS`] for the first).
    #[serde(with = "hex32")]
    pub prev: [u8; 32],
    /// What happened.
    pub event: AuditEvent,
}

impl AuditEntry {
    /// The entry's hash: what the next entry's `prev` holds.
    pub fn hash(&self) -> [u8; 32] {
        hash_encoded(&protocol::codec::encode(self))
    }
}

/// The hash of an entry from its canonical encoding (what the store keeps), so a stored log
/// is extended without decoding its last entry.
pub fn hash_encoded(bytes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(ENTRY_CONTEXT);
    h.update(bytes);
    *h.finalize().as_bytes()
}

/// An entry as listed: the entry and the hash the node computed for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedEntry {
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// Its hash as the node computed it, hex (a copy's checker recomputes it).
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

impl From<AuditEntry> for ListedEntry {
    fn from(entry: AuditEntry) -> Self {
        Self {
            hash: entry.hash(),
            entry,
        }
    }
}

/// The node's signed statement of how long its log was and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSeal {
    /// The node's id (its ed25519 public key), hex.
    #[serde(with = "hex32")]
    pub node: [u8; 32],
    /// Entries in the log.
    pub entries: u64,
    /// Hash of the last entry ([`GENESIS`] when empty).
    #[serde(with = "hex32")]
    pub head: [u8; 32],
    /// When it was signed, unix milliseconds.
    pub at_unix_ms: i64,
    /// Ed25519 signature by the node's key over [`AuditSeal::message`], hex.
    pub signature: String,
}

impl AuditSeal {
    /// What the signature covers.
    pub fn message(node: &[u8; 32], entries: u64, head: &[u8; 32], at_unix_ms: i64) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(SEAL_CONTEXT);
        h.update(node);
        h.update(&entries.to_le_bytes());
        h.update(head);
        h.update(&at_unix_ms.to_le_bytes());
        *h.finalize().as_bytes()
    }

    /// Seals a log of `entries` ending in `head` with `key`.
    pub fn sign(key: &SigningKey, entries: u64, head: [u8; 32], at_unix_ms: i64) -> Self {
        let node = key.verifying_key().to_bytes();
        let signature = key.sign(&Self::message(&node, entries, &head, at_unix_ms));
        Self {
            node,
            entries,
            head,
            at_unix_ms,
            signature: hex::encode(signature.to_bytes()),
        }
    }

    /// Whether the signature is the node's.
    pub fn signature_ok(&self) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.node) else {
            return false;
        };
        let Some(sig) = hex::decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        let message = Self::message(&self.node, self.entries, &self.head, self.at_unix_ms);
        key.verify(&message, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_ok()
    }
}

/// A log read out: its entries and the node's seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLog {
    /// The entries asked for, oldest first.
    pub entries: Vec<ListedEntry>,
    /// The seal over the whole log.
    pub seal: AuditSeal,
}

/// Where a log stops being intact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at entry {seq}: {reason}")]
pub struct Broken {
    /// The first entry found changed, missing or out of place.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// What an intact log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intact {
    /// Entries.
    pub entries: u64,
    /// Hash of the last one ([`GENESIS`] when empty).
    pub head: [u8; 32],
}

/// Checks a whole log, oldest first: numbers 1, 2, 3, … with none missing or out of order,
/// each entry's stated hash (if listed with one) its real hash, each `prev` the hash of the
/// entry before. Names the first entry where that fails.
pub fn verify<'a>(
    entries: impl IntoIterator<Item = (&'a AuditEntry, Option<&'a [u8; 32]>)>,
) -> Result<Intact, Broken> {
    let entries: Vec<(&AuditEntry, Option<&[u8; 32]>)> = entries.into_iter().collect();
    let mut prev = GENESIS;
    let mut expected = 1u64;
    for (pos, &(e, stated)) in entries.iter().enumerate() {
        if e.seq != expected {
            let later = entries[pos + 1..].iter().any(|(x, _)| x.seq == expected);
            let reason = if later {
                format!("it comes after entry {}: entries were reordered", e.seq)
            } else if e.seq > expected {
                format!(
                    "it is missing (entry {} follows entry {})",
                    e.seq,
                    expected - 1
                )
            } else {
                format!("entry {} appears again after entry {}", e.seq, expected - 1)
            };
            return Err(Broken {
                seq: expected,
                reason,
            });
        }
        let hash = e.hash();
        if stated.is_some_and(|s| *s != hash) {
            return Err(Broken {
                seq: e.seq,
                reason: "its content does not match its hash: it was changed".into(),
            });
        }
        if e.prev != prev {
            return Err(Broken {
                seq: e.seq - 1,
                reason: format!(
                    "entry {} holds another hash for it: it was changed, or replaced",
                    e.seq
                ),
            });
        }
        prev = hash;
        expected += 1;
    }
    Ok(Intact {
        entries: expected - 1,
        head: prev,
    })
}

/// Checks a log read out in full against its seal: the chain ([`verify`]), then that the
/// node signed exactly this many entries ending in this hash.
pub fn verify_sealed(log: &AuditLog) -> Result<Intact, Broken> {
    let intact = verify(log.entries.iter().map(|l| (&l.entry, Some(&l.hash))))?;
    let seal = &log.seal;
    if !seal.signature_ok() {
        return Err(Broken {
            seq: intact.entries,
            reason: "the seal's signature is not the node's".into(),
        });
    }
    if seal.entries != intact.entries {
        return Err(Broken {
            seq: intact.entries.min(seal.entries) + 1,
            reason: format!(
                "the node sealed {} entries and the copy holds {}: entries were removed or added at the end",
                seal.entries, intact.entries
            ),
        });
    }
    if seal.head != intact.head {
        return Err(Broken {
            seq: intact.entries,
            reason: "the last entry is not the one the node sealed: it was changed".into(),
        });
    }
    Ok(intact)
}

/// Serde for 32-byte hashes as hex strings.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(D::Error::custom)?;
        <[u8; 32]>::try_from(bytes).map_err(|_| D::Error::custom("expected 32 bytes of hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map_or(GENESIS, AuditEntry::hash);
            out.push(AuditEntry {
                seq,
                at_unix_ms: 1_700_000_000_000 + seq as i64,
                prev,
                event: AuditEvent::PeerBanned {
                    peer: format!("peer-{seq}"),
                    reason: "3 strikes".into(),
                    for_s: 600,
                },
            });
        }
        out
    }

    fn check(entries: &[AuditEntry]) -> Result<Intact, Broken> {
        verify(entries.iter().map(|e| (e, None)))
    }

    #[test]
    fn an_intact_chain_verifies_and_ends_in_its_last_hash() {
        let log = chain(6);
        let intact = check(&log).unwrap();
        assert_eq!(intact.entries, 6);
        assert_eq!(intact.head, log[5].hash());
        assert_eq!(check(&[]).unwrap().head, GENESIS);
    }

    #[test]
    fn a_changed_removed_or_moved_entry_is_named() {
        let log = chain(6);
        // Changed: the next entry's link breaks, and names it.
        let mut changed = log.clone();
        changed[2].at_unix_ms += 1;
        assert_eq!(check(&changed).unwrap_err().seq, 3);
        // Changed, with a stated hash: that entry itself.
        let stated: Vec<[u8; 32]> = log.iter().map(AuditEntry::hash).collect();
        let err = verify(changed.iter().zip(&stated).map(|(e, h)| (e, Some(h)))).unwrap_err();
        assert_eq!(err.seq, 3);
        assert!(err.reason.contains("changed"));
        // The last one changed: nothing after it; the seal catches it (below).
        let mut last = log.clone();
        last[5].at_unix_ms += 1;
        assert!(check(&last).is_ok());
        // Removed.
        let mut removed = log.clone();
        removed.remove(3);
        let err = check(&removed).unwrap_err();
        assert_eq!(err.seq, 4);
        assert!(err.reason.contains("missing"), "{}", err.reason);
        // Removed and renumbered: the link breaks.
        for (k, e) in removed.iter_mut().enumerate().skip(3) {
            e.seq = k as u64 + 1;
        }
        assert_eq!(check(&removed).unwrap_err().seq, 3);
        // Moved.
        let mut moved = log.clone();
        moved.swap(1, 4);
        let err = check(&moved).unwrap_err();
        assert_eq!(err.seq, 2);
        assert!(err.reason.contains("reordered"), "{}", err.reason);
        // Duplicated.
        let mut twice = log.clone();
        twice.insert(3, log[2].clone());
        assert_eq!(check(&twice).unwrap_err().seq, 4);
    }

    #[test]
    fn the_seal_catches_a_cut_end_a_changed_last_entry_and_a_forged_signature() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let log = chain(4);
        let sealed = |entries: &[AuditEntry], seal: AuditSeal| AuditLog {
            entries: entries.iter().cloned().map(ListedEntry::from).collect(),
            seal,
        };
        let seal = AuditSeal::sign(&key, 4, log[3].hash(), 42);
        assert_eq!(
            verify_sealed(&sealed(&log, seal.clone())).unwrap().entries,
            4
        );
        // Cut short.
        let err = verify_sealed(&sealed(&log[..3], seal.clone())).unwrap_err();
        assert_eq!(err.seq, 4);
        // The last entry changed, its stated hash recomputed.
        let mut last = log.clone();
        last[3].at_unix_ms += 1;
        assert_eq!(
            verify_sealed(&sealed(&last, seal.clone())).unwrap_err().seq,
            4
        );
        // A seal rewritten to match, without the node's key.
        let mut forged = seal.clone();
        forged.entries = 3;
        forged.head = log[2].hash();
        let err = verify_sealed(&sealed(&log[..3], forged)).unwrap_err();
        assert!(err.reason.contains("signature"));
        // Signed by another key and passed off as the node's.
        let other = AuditSeal::sign(&SigningKey::from_bytes(&[8; 32]), 4, log[3].hash(), 42);
        let mut passed_off = other;
        passed_off.node = seal.node;
        assert!(verify_sealed(&sealed(&log, passed_off)).is_err());
    }

    #[test]
    fn entries_round_trip_through_json_with_the_same_hash() {
        for e in chain(3) {
            let listed = ListedEntry::from(e.clone());
            let text = serde_json::to_string(&listed).unwrap();
            let back: ListedEntry = serde_json::from_str(&text).unwrap();
            assert_eq!(back.entry, e);
            assert_eq!(back.entry.hash(), listed.hash);
        }
    }

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(REASON_BYTES_MAX);
        let cut = bounded_reason(&long);
        assert!(cut.len() <= REASON_BYTES_MAX);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(bounded_reason("short"), "short");
    }
}
