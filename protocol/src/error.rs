//! [`ManifestError`]: why a manifest or its envelope was refused. One variant per rule, each
//! carrying what a caller needs to act (which path, which key, which limit).

use crate::ids::PublisherKey;
use crate::path::{PathRule, SymlinkRule};

/// Why a manifest or a signed envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are larger than the limit for their kind.
    #[error("{what} is {len} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes do not decode.
    #[error("{what} does not decode: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// A string in the manifest (a path, a channel, a target) is not valid UTF-8.
    #[error("{what} holds a string that is not valid UTF-8")]
    NotUtf8 {
        /// What was being decoded.
        what: &'static str,
    },
    /// The rollout rules (target, requirements, rings, gate) break a rule.
    #[error("rollout: {0}")]
    BadRollout(String),
    /// The manifest bytes decode but are not the canonical encoding of what they hold.
    #[error("manifest bytes are not in canonical form")]
    NonCanonical,
    /// A format version this build does not know.
    #[error("manifest format version {found} is not supported (this build reads {supported})")]
    UnsupportedFormat {
        /// The version found.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The envelope has no signature.
    #[error("manifest is not signed")]
    Unsigned,
    /// More signatures than [`crate::envelope::SIGNATURES_MAX`].
    #[error("manifest carries {count} signatures, more than the limit of {max}")]
    TooManySignatures {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// No signature is by a key in the trust policy.
    #[error(
        "signed by unknown key ed25519:{0}, not one of this node's trusted publishers; to accept it, add a [[trust.publishers]] entry with key = \"ed25519:{0}\" to p2pd.toml and send p2pd SIGHUP (in a fleet with a root, add it to the root's publishers)"
    )]
    UnknownKey(PublisherKey),
    /// A signature by a trusted key does not verify.
    #[error(
        "signature by key ed25519:{0} does not verify: the manifest was altered or signed with another key"
    )]
    BadSignature(PublisherKey),
    /// The signing key is trusted, but not for this channel.
    #[error(
        "publisher {publisher:?} (key ed25519:{key}) may publish on {} only, not on channel {channel:?}: add the channel to its channels (in [trust] of p2pd.toml, or in the fleet root), or sign with a key allowed on it",
        scopes.join(", ")
    )]
    KeyNotAllowedForChannel {
        /// The key.
        key: PublisherKey,
        /// Its name in the trust policy.
        publisher: String,
        /// The channel scopes it may publish on.
        scopes: Vec<String>,
        /// The channel.
        channel: String,
    },
    /// Fewer valid signatures than the trust policy's threshold.
    #[error("manifest has {valid} valid signature(s); the trust policy needs {threshold}")]
    BelowThreshold {
        /// Valid signatures by distinct allowed keys.
        valid: usize,
        /// Signatures needed.
        threshold: usize,
    },
    /// Every valid signature is an approver's: a release needs its publisher's too.
    #[error(
        "manifest on {channel} is signed by approvers only; a publisher of the channel must sign it"
    )]
    ApproversOnly {
        /// The manifest's channel.
        channel: String,
    },
    /// The manifest's expiry time has passed.
    #[error(
        "the release expired at {} (it is {} now): nodes refuse it; publish a new version",
        crate::time::rfc3339(*expires_unix_s),
        crate::time::rfc3339(*now_unix_s)
    )]
    Expired {
        /// Expiry.
        expires_unix_s: i64,
        /// The time of the check.
        now_unix_s: i64,
    },
    /// The manifest claims to be created in the future, beyond the allowed clock skew.
    #[error("manifest is created at unix time {created_unix_s}, in the future (now {now_unix_s})")]
    CreatedInFuture {
        /// Creation time.
        created_unix_s: i64,
        /// The time of the check.
        now_unix_s: i64,
    },
    /// The expiry is not after the creation.
    #[error("manifest expires ({expires_unix_s}) before it is created ({created_unix_s})")]
    ExpiresBeforeCreated {
        /// Creation time.
        created_unix_s: i64,
        /// Expiry.
        expires_unix_s: i64,
    },
    /// The version is not above the highest seen on the channel (a rollback or a replay).
    #[error(
        "version {version} on channel {channel:?} is not above the highest seen, {highest}: the next valid version is {}",
        highest.saturating_add(1)
    )]
    VersionNotNewer {
        /// Channel.
        channel: String,
        /// Version offered.
        version: u64,
        /// Highest version already seen on the channel.
        highest: u64,
    },
    /// The channel name breaks the naming rule.
    #[error(
        "channel name {0:?} is invalid: use 1 to 128 characters of a-z, 0-9, '.', '_', '-' in '/'-separated segments, none empty, '.' or '..'"
    )]
    BadChannel(String),
    /// The chunking parameters are out of range or not ordered min < avg < max.
    #[error("chunking parameters are invalid: {0}")]
    BadChunking(String),
    /// A release window breaks a rule (see [`crate::manifest::ReleaseWindow`]).
    #[error("bad {kind} window: {why}")]
    BadWindow {
        /// `download` or `install`.
        kind: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A file patch breaks a rule (see [`crate::manifest::FilePatch`]).
    #[error("bad patch: {0}")]
    BadPatch(String),
    /// A CVSS score above 10.0.
    #[error("CVSS score {0}.{1} is above 10.0")]
    BadCvss(u8, u8),
    /// More entries than [`crate::manifest::ENTRIES_PER_RELEASE_MAX`].
    #[error("release has {count} entries, more than the limit of {max}")]
    TooManyEntries {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More chunks than [`crate::manifest::CHUNKS_PER_RELEASE_MAX`].
    #[error("release has {count} chunks, more than the limit of {max}")]
    TooManyChunks {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A path breaks a path rule.
    #[error("path {path:?} is refused: {rule}")]
    BadPath {
        /// The path.
        path: String,
        /// The rule.
        rule: PathRule,
    },
    /// Two entries with the same path.
    #[error("path {0:?} appears twice")]
    DuplicatePath(String),
    /// Entries are not sorted by path (the canonical order).
    #[error("entries are not sorted by path: {0:?} comes after {1:?}")]
    NotSorted(String, String),
    /// An entry's parent directory is not in the release.
    #[error("path {0:?} has no parent directory entry in the release")]
    MissingParent(String),
    /// An entry's parent is a file or a symlink.
    #[error("path {0:?} lies under an entry that is not a directory")]
    ParentNotDirectory(String),
    /// A symlink's target breaks the symlink rule.
    #[error("symlink {path:?} -> {target:?} is refused: {rule}")]
    BadSymlink {
        /// The link.
        path: String,
        /// Its target.
        target: String,
        /// The rule.
        rule: SymlinkRule,
    },
    /// A mode with bits beyond 0o7777.
    #[error("path {path:?} has invalid mode {mode:#o}")]
    BadMode {
        /// The path.
        path: String,
        /// The mode.
        mode: u32,
    },
    /// A chunk of length zero, or longer than the release's max chunk size.
    #[error("path {path:?} has a chunk of {len} bytes; chunks must be 1 to {max} bytes")]
    BadChunkLength {
        /// The file.
        path: String,
        /// The chunk length.
        len: u32,
        /// The release's max chunk size.
        max: u32,
    },
    /// A file's chunks do not add up to its size.
    #[error("file {path:?} declares {declared} bytes but its chunks add up to {actual}")]
    FileSizeMismatch {
        /// The file.
        path: String,
        /// Declared size.
        declared: u64,
        /// Sum of chunk lengths.
        actual: u64,
    },
    /// The files do not add up to the declared total.
    #[error("release declares {declared} bytes in total but its files add up to {actual}")]
    TotalSizeMismatch {
        /// Declared total.
        declared: u64,
        /// Sum of file sizes.
        actual: u64,
    },
}
