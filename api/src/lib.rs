//! The surface of p2pd: the control API's JSON types with typed states and error codes,
//! shared by the daemon (its `server` module answers them) and `p2pctl` (through
//! [`client`]), and what the two binaries share ([`cli`]: exit codes, logging, formatting).
//! HTTP/1.1 over the daemon's Unix socket.
//!
//! This crate depends on `protocol` and `store` (whose reports it carries) only: it knows
//! nothing of the network or the daemon.
//!
//! | method and path                     | body → answer                                          |
//! |-------------------------------------|--------------------------------------------------------|
//! | `GET /v1/node`                      | → [`NodeInfo`]                                         |
//! | `POST /v1/publish`                  | [`PublishRequest`] → NDJSON stream of [`PublishEvent`] |
//! | `POST /v1/publish/{session}/commit` | [`CommitRequest`] → [`ReleaseView`]                    |
//! | `DELETE /v1/publish/{session}`      | → `{}` (the staged chunks are dropped)                 |
//! | `GET /v1/releases`                  | → `[ReleaseView]`, newest first                        |
//! | `GET /v1/releases/{id}`             | → [`ReleaseDetail`] (`id` may be a unique prefix)      |
//! | `POST /v1/releases/{id}/verify`     | → [`VerifyView`]                                       |
//! | `POST /v1/releases/{id}/export`     | [`ExportRequest`] → [`store::release::ExportReport`]   |
//! | `GET /v1/peers`                     | → `[PeerView]`: data-plane peers                       |
//! | `GET /v1/status`                    | → [`NodeStatus`]: every release served or fetched      |
//! | `GET /v1/schedule`                  | → [`ScheduleView`]: rates and windows now              |
//! | `GET /v1/audit[?since_unix_ms=T]`   | → [`store::audit::AuditLog`]: entries and a signed seal |
//! | `GET /v1/audit/verify`              | → [`AuditVerifyView`]: the stored chain checked        |
//! | `GET /v1/fleet/{id}`                | → [`store::fleet::FleetReport`]: the release fleet-wide |
//! | `GET /v1/report[?since_unix_s=T]`   | → `[store::fleet::ComplianceRow]`, oldest first        |
//!
//! Errors answer a 4xx/5xx status with [`ApiErrorBody`]: a stable `code` for scripts and a
//! `message` for people.

pub mod cli;
pub mod client;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiErrorDetail,
}

/// Why the daemon refused or failed a request: stable, for scripts (`version_not_newer` and
/// so on in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or asks for something impossible.
    BadRequest,
    /// No such site is known.
    BadSite,
    /// A release id prefix names several releases.
    AmbiguousRelease,
    /// No such release.
    NoRelease,
    /// No such publish session (it finished or timed out).
    NoSession,
    /// Too much is going on; ask again later.
    Busy,
    /// The signed manifest is not the one staged.
    ManifestMismatch,
    /// The network is not up yet.
    NetworkNotStarted,
    /// The node has no identity key.
    NoIdentity,
    /// No member of the site could be reached.
    SiteUnreachable,
    /// The store's disk is full.
    DiskFull,
    /// The version is not above the channel's highest.
    VersionNotNewer,
    /// A chunk the release names is not stored.
    MissingChunk,
    /// The store holds bytes that do not match their ids.
    StoreDamaged,
    /// The store failed.
    StoreError,
    /// The manifest is signed by a key not trusted for its channel.
    UntrustedKey,
    /// A signature does not verify, or too few do.
    BadSignature,
    /// The manifest has expired.
    Expired,
    /// The manifest breaks a rule.
    InvalidManifest,
    /// The path to publish does not exist.
    PathNotFound,
    /// The path to publish cannot be read.
    PathUnreadable,
    /// A file changed while it was published.
    FileChanged,
    /// The tree holds what a release cannot (a device file, a bad name or link).
    BadTree,
    /// The tree is over a limit.
    Limit,
    /// The export directory is not empty.
    DestinationNotEmpty,
    /// Exporting failed.
    ExportFailed,
    /// Something failed inside the daemon.
    Internal,
    /// No record of the node is held here.
    NoNode,
    /// The node is not silent: it cannot be forgotten.
    NodeNotSilent,
    /// The node holds no fleet root (`p2pd init --root`).
    NoRoot,
    /// The release is not held for approval here or by a connected peer.
    NotHeld,
    /// A rollback on this node cannot be done (nothing installed, no older version stored,
    /// no `[install] target`).
    CannotRollBack,
    /// A fleet root, revocation list or certificate does not verify, or is not newer than
    /// the one held.
    TrustRefused,
    /// The daemon's answer could not be read (set by the client, never sent).
    Http,
    /// A code this client does not know (a newer daemon).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// What the code means for `p2pctl`'s exit status: a bad command line, the input
    /// refused, the store damaged, or the operation failed.
    pub fn exit(self) -> crate::cli::ExitCode {
        use crate::cli::ExitCode;
        match self {
            Self::DiskFull
            | Self::StoreError
            | Self::Internal
            | Self::Http
            | Self::Unknown
            | Self::Busy
            | Self::NetworkNotStarted
            | Self::NoIdentity
            | Self::SiteUnreachable
            | Self::ExportFailed => ExitCode::Failed,
            Self::StoreDamaged => ExitCode::Damaged,
            // Every request p2pctl makes is built from its command line: a value the daemon
            // cannot take is a bad command line, as one p2pctl itself cannot parse.
            Self::BadRequest => ExitCode::Usage,
            Self::NoNode
            | Self::NodeNotSilent
            | Self::NoRoot
            | Self::NotHeld
            | Self::CannotRollBack
            | Self::TrustRefused
            | Self::BadSite
            | Self::AmbiguousRelease
            | Self::NoRelease
            | Self::NoSession
            | Self::ManifestMismatch
            | Self::VersionNotNewer
            | Self::MissingChunk
            | Self::UntrustedKey
            | Self::BadSignature
            | Self::Expired
            | Self::InvalidManifest
            | Self::PathNotFound
            | Self::PathUnreadable
            | Self::FileChanged
            | Self::BadTree
            | Self::Limit
            | Self::DestinationNotEmpty => ExitCode::Refused,
        }
    }
}

/// Error code and message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiErrorDetail {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// One line for a person.
    pub message: String,
}

/// `GET /v1/node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id (hex ed25519 public key).
    pub node_id: String,
    /// Site.
    pub site: String,
    /// Region.
    pub region: String,
    /// p2pd version.
    pub version: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Store usage.
    pub store: store::StoreStats,
    /// Trusted publisher names.
    pub trusted_publishers: Vec<String>,
    /// In a fleet with a root: the root and this node's certificate.
    #[serde(default)]
    pub membership: Option<MembershipView>,
}

/// A node's place in a fleet with a root ([`NodeInfo::membership`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipView {
    /// The fleet.
    pub fleet: String,
    /// The newest root this node holds.
    pub root_version: u64,
    /// When that root expires, unix seconds.
    pub root_expires_unix_s: i64,
    /// The certificate's site, region and labels (`key=value`); none if not enrolled.
    pub cert_site: Option<String>,
    /// See `cert_site`.
    pub cert_region: Option<String>,
    /// See `cert_site`.
    pub cert_labels: Vec<String>,
    /// When the certificate ends, unix seconds.
    pub cert_expires_unix_s: Option<i64>,
    /// Less than 14 days left: renew it.
    pub renewal_due: bool,
    /// The version of the fleet's revocation list this node holds (0: none yet).
    #[serde(default)]
    pub revocations_version: u64,
    /// How many nodes it revokes.
    #[serde(default)]
    pub revoked: usize,
}

/// `GET /v1/fleet/revocations`: the fleet's revocation list this node holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevocationsView {
    /// The fleet.
    pub fleet: String,
    /// The version of the fleet root this node holds (a new list is made under it).
    pub root_version: u64,
    /// The root version the list was made under (0: none taken yet).
    pub list_root_version: u64,
    /// Its version (0: none taken yet, and no entries).
    pub version: u64,
    /// The key that signed it, hex.
    pub signer: Option<String>,
    /// The revoked nodes.
    pub entries: Vec<RevokedView>,
    /// The signed list, hex (what `p2pctl node revoke` builds the next one on).
    pub list_hex: Option<String>,
}

/// One revoked node ([`RevocationsView::entries`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedView {
    /// The node's id, hex.
    pub node: String,
    /// When it was revoked, unix seconds.
    pub at_unix_s: i64,
    /// Why.
    pub reason: String,
}

/// `POST /v1/fleet/revocations`: a newer signed revocation list to take and spread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevocationsRequest {
    /// The signed list, hex.
    pub list_hex: String,
}

/// `GET /v1/fleet/orders`: the fleet orders this node holds (pauses, resumes, aborts,
/// rollbacks, fleet-wide holds; `p2pctl rollout`, `rollback --to`, `hold --fleet`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrdersView {
    /// The fleet.
    pub fleet: String,
    /// The version of the fleet root this node holds (new orders are made under it).
    pub root_version: u64,
    /// The root version the orders were made under (0: none taken yet).
    pub orders_root_version: u64,
    /// Their version (0: none taken yet).
    pub version: u64,
    /// The operator key that signed them, hex.
    pub signer: Option<String>,
    /// The signed orders, hex (what `p2pctl` builds the next on and shows).
    pub orders_hex: Option<String>,
    /// What the orders just taken changed, one line each (empty for a GET).
    #[serde(default)]
    pub changes: Vec<String>,
}

/// `POST /v1/fleet/orders`: newer signed fleet orders to take and spread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrdersRequest {
    /// The signed orders, hex.
    pub orders_hex: String,
}

/// `POST /v1/rollback`: roll a channel back on this node (`p2pctl rollback CHANNEL`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The channel.
    pub channel: String,
    /// The version to go back to; the installed one before the newest when absent.
    pub to_version: Option<u64>,
    /// Why, for the audit log and status.
    pub reason: String,
}

/// What a rollback on this node did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackView {
    /// The channel.
    pub channel: String,
    /// The version left.
    pub from_version: u64,
    /// The version directory `current` points at now.
    pub to: String,
    /// Why (and, when applying the older version failed, that).
    pub reason: String,
}

/// `POST /v1/fleet/root`: newer fleet roots to take and spread, oldest first (each the
/// `root.json` text of one version).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootsRequest {
    /// The roots.
    pub roots_json: Vec<String>,
}

/// What `POST /v1/fleet/root` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootsView {
    /// The fleet.
    pub fleet: String,
    /// The version held before.
    pub from_version: u64,
    /// The version held now.
    pub to_version: u64,
}

/// `GET /v1/node/cert` and `POST /v1/node/cert` (a renewal to install): this node's
/// certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertText {
    /// The certificate file's text (armored).
    pub cert_text: String,
}

/// `POST /v1/publish`: stage a release from a path the daemon can read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    /// Absolute path of a file or directory.
    pub path: PathBuf,
    /// Channel.
    pub channel: String,
    /// Version, above the channel's highest.
    pub version: u64,
    /// Severity name.
    pub severity: String,
    /// CVSS score text, such as "9.8".
    pub cvss: Option<String>,
    /// Mark the release an emergency: nodes may download it outside their download windows.
    #[serde(default)]
    pub emergency: bool,
    /// Windows the release may download in (besides each node's own), each written
    /// `CRON for HH:MM[:SS] [in ZONE]`.
    #[serde(default)]
    pub download_windows: Vec<String>,
    /// Windows the release may be installed in (besides each node's own), same form.
    #[serde(default)]
    pub install_windows: Vec<String>,
    /// Validity from now, in seconds.
    pub expires_in_s: u64,
    /// The public key that will sign (`ed25519:<hex>`), checked before any byte is read.
    pub publisher_key: String,
    /// Which nodes install it, a selector such as `os=debian12,role!=atm` (empty: every node
    /// following the channel); the others still fetch and serve it for their site.
    #[serde(default)]
    pub target: String,
    /// Releases that must be installed first, such as `security/openssl>=3` (comma-separated);
    /// each must already be published.
    #[serde(default)]
    pub requires: String,
    /// Rings, such as `canary: labels ring=0; pilot: 5%; broad: rest` (empty: no rings).
    #[serde(default)]
    pub rings: String,
    /// The gate each ring must meet before the next starts, such as
    /// `installed>=95%,failed<=1%,soak=2h` (empty: that default).
    #[serde(default)]
    pub gate: String,
    /// Make no patches from earlier versions: every changed file moves as chunks
    /// (`--no-patches`).
    #[serde(default)]
    pub no_patches: bool,
}

/// `POST /v1/releases/{id}/remove`: what was removed and what the compaction after it
/// reclaimed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveReport {
    /// The release removed, hex.
    pub release: String,
    /// What the compaction did.
    pub reclaimed: store::retention::Reclaimed,
}

/// One line of the `POST /v1/publish` stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishEvent {
    /// The tree was scanned.
    Scanned {
        /// Files to read.
        files: u64,
        /// Bytes to read.
        total_bytes: u64,
    },
    /// Progress.
    Progress {
        /// Bytes chunked so far.
        bytes_done: u64,
        /// Files done.
        files_done: u64,
    },
    /// Everything is staged; sign `manifest_b64` and commit.
    Staged {
        /// Session to commit.
        session: u64,
        /// Base64 of the canonical manifest bytes to sign.
        manifest_b64: String,
        /// Release id the manifest will have.
        release_id: String,
        /// Bytes of new chunks written.
        new_bytes: u64,
        /// Bytes of chunks already stored.
        dedup_bytes: u64,
        /// Patches made from earlier versions of the channel.
        #[serde(default)]
        patches: u64,
        /// Their bytes.
        #[serde(default)]
        patch_bytes: u64,
        /// What the patched files would have moved as compressed chunks instead.
        #[serde(default)]
        patched_chunk_bytes: u64,
        /// Seconds making the patches took (finding the counterparts, making each patch,
        /// checking it rebuilds its file).
        #[serde(default)]
        patch_s: f64,
        /// Seconds until the session is dropped if not committed.
        expires_in_s: u64,
    },
    /// Staging failed; nothing was kept.
    Failed(ApiErrorDetail),
}

/// `POST /v1/publish/{session}/commit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRequest {
    /// Base64 of the encoded `SignedManifest`.
    pub envelope_b64: String,
    /// Hold the release until approvers' signatures bring it to the threshold its channel
    /// needs (`--hold-for-approval`), instead of refusing it short of the threshold.
    #[serde(default)]
    pub hold: bool,
}

/// A release held for approval: the signatures it has and needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalState {
    /// Valid signatures by keys allowed on its channel.
    pub have: u64,
    /// Signatures its channel needs.
    pub need: u64,
}

/// `GET /v1/approvals/{id}`: a release held for approval, here or on a connected peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldView {
    /// Release id (hex).
    pub id: String,
    /// The envelope with its signatures so far, hex (what an approver signs is the
    /// manifest inside).
    pub envelope_hex: String,
    /// Signatures it has and needs.
    pub approval: ApprovalState,
    /// Who signed so far, by name.
    pub signers: Vec<String>,
    /// Held on this node (else on a connected peer).
    pub local: bool,
    /// Released: it has the signatures it needs.
    pub released: bool,
}

/// `POST /v1/approvals/{id}`: an approver's signature over the held manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApproveRequest {
    /// The approver's key, `ed25519:HEX`.
    pub key: String,
    /// The ed25519 signature, hex.
    pub signature_hex: String,
}

/// A release as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseView {
    /// Release id (hex).
    pub id: String,
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: u64,
    /// Severity.
    pub severity: String,
    /// CVSS base score, such as 9.8 (a number, to one decimal).
    pub cvss: Option<f64>,
    /// Marked an emergency by its publisher.
    #[serde(default)]
    pub emergency: bool,
    /// The release's own download windows (`CRON for HH:MM [in ZONE]`).
    #[serde(default)]
    pub download_windows: Vec<String>,
    /// The release's own install windows.
    #[serde(default)]
    pub install_windows: Vec<String>,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Expiry time (RFC 3339).
    pub expires: String,
    /// Past its expiry: nodes refuse it, it is not served, fetched or installed any more.
    #[serde(default)]
    pub expired: bool,
    /// Files.
    pub files: u64,
    /// Bytes of all files.
    pub total_bytes: u64,
    /// Distinct chunks.
    pub unique_chunks: u64,
    /// Publishers whose signatures verified.
    pub signers: Vec<String>,
    /// Held for approval: not served until it has the signatures it needs.
    #[serde(default)]
    pub held: Option<ApprovalState>,
}

/// One entry of a release, as shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryView {
    /// Path.
    pub path: String,
    /// "file", "dir" or "symlink".
    pub kind: String,
    /// Permission bits (files and directories), in JSON as octal text such as "0755", as
    /// `p2pctl show` prints them.
    #[serde(with = "octal_mode", default)]
    pub mode: Option<u32>,
    /// Size (files).
    pub size: Option<u64>,
    /// Chunks (files).
    pub chunks: Option<u64>,
    /// Target (symlinks).
    pub target: Option<String>,
}

/// Permission bits as octal text ("0755") in JSON; a number is read too.
mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match mode {
            Some(m) => s.serialize_str(&format!("{m:04o}")),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Mode {
            Text(String),
            Number(u32),
        }
        match Option::<Mode>::deserialize(d)? {
            None => Ok(None),
            Some(Mode::Number(n)) => Ok(Some(n)),
            Some(Mode::Text(t)) => u32::from_str_radix(&t, 8)
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("mode {t:?} is not octal"))),
        }
    }
}

/// `GET /v1/releases/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseDetail {
    /// Summary.
    pub release: ReleaseView,
    /// Chunking parameters as "min/avg/max".
    pub chunking: String,
    /// Entries.
    pub entries: Vec<EntryView>,
}

/// `POST /v1/fleet/forget`: retire a silent node of this site from the fleet view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForgetRequest {
    /// The node's id, hex.
    pub node: String,
}

/// `POST /v1/holds`: hold a channel (and those under it) or a release from installing on
/// this node until `until_unix_s` (an exception, `p2pctl hold`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldRequest {
    /// A channel name, or a release id (or a unique prefix of at least 12 hex digits).
    pub target: String,
    /// Why (at most 200 bytes).
    pub reason: String,
    /// When it ends by itself, unix seconds (within a year).
    pub until_unix_s: i64,
}

/// `POST /v1/holds/lift`: ends a hold before its time (`p2pctl unhold`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiftHoldRequest {
    /// What it holds, as `GET /v1/holds` lists it (a release may be given by a prefix).
    pub target: String,
}

/// An install hold in force on this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldView {
    /// The channel, or the release id (hex).
    pub target: String,
    /// Why.
    pub reason: String,
    /// When it ends (RFC 3339).
    pub until: String,
    /// The same, unix seconds.
    pub until_unix_s: i64,
    /// When it was set, unix seconds.
    pub at_unix_s: i64,
}

/// What `POST /v1/fleet/forget` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForgetView {
    /// The node retired, hex.
    pub node: String,
    /// When its last record was made, unix seconds.
    pub last_record_unix_s: i64,
}

/// `POST /v1/releases/{id}/verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyView {
    /// Release id.
    pub id: String,
    /// Whether the signature still verifies against the current trust policy.
    pub signature_ok: bool,
    /// Why not, if not.
    pub signature_error: Option<String>,
    /// When the release expires (RFC 3339).
    #[serde(default)]
    pub expires: String,
    /// Past its expiry: intact or not, nodes refuse it.
    #[serde(default)]
    pub expired: bool,
    /// Distinct chunks checked.
    pub chunks_checked: u64,
    /// Bytes re-hashed.
    pub bytes_checked: u64,
    /// Missing chunk ids.
    pub missing: Vec<String>,
    /// Corrupt chunk ids.
    pub corrupt: Vec<String>,
}

/// `POST /v1/releases/{id}/export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportRequest {
    /// Absolute destination directory (must not exist, or be empty).
    pub dir: PathBuf,
}

/// A peer the data plane refused lately for want of a valid certificate, in a fleet with a
/// root (`GET /v1/peers/refused`, newest last).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusedPeerView {
    /// libp2p peer id.
    pub peer_id: String,
    /// Node id (hex ed25519 public key, the same key as the peer id).
    #[serde(default)]
    pub node_id: String,
    /// Where it connected from.
    pub address: String,
    /// Why it was refused (no certificate, another CA's, expired, another node's, ...).
    pub reason: String,
    /// When, unix seconds.
    pub at_unix_s: i64,
}

/// One connected data-plane peer (`GET /v1/peers`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerView {
    /// Its clock minus this node's, seconds (as its hello said).
    #[serde(default)]
    pub clock_offset_s: f64,
    /// libp2p peer id.
    pub peer_id: String,
    /// Node id (hex ed25519 public key; the same key as the peer id).
    pub node_id: String,
    /// Its site: its certificate's in a fleet with a root, else the one it declared.
    pub site: String,
    /// Its region (likewise).
    pub region: String,
    /// Address of the data-plane connection.
    pub address: String,
    /// Same site as this node.
    pub lan: bool,
    /// The data-plane protocol version the connection speaks (the newest both ends do).
    #[serde(default)]
    pub protocol: u16,
    /// Chunk bytes received from it, as they crossed the wire.
    pub bytes_in: u64,
    /// Chunk bytes sent to it, as they crossed the wire.
    pub bytes_out: u64,
    /// Seconds since it connected.
    pub connected_s: u64,
    /// Smoothed round-trip time.
    pub rtt_ms: f64,
}

/// Where a release's fetch stands on a node (`"fetching"` and so on in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FetchState {
    /// Chunks are being fetched.
    Fetching,
    /// Waiting for the download window to open.
    Paused,
    /// A newer version of the channel completed first; the fetch stopped.
    Superseded,
    /// Every chunk is stored and the release is committed.
    Complete,
    /// The fetch stopped on an error (`ReleaseProgress::error`).
    Failed,
}

impl FetchState {
    /// The word the API and `p2pctl` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fetching => "fetching",
            Self::Paused => "paused",
            Self::Superseded => "superseded",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for FetchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a release stands with installation (`"pending"` and so on in JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallState {
    /// Not complete yet.
    #[default]
    Pending,
    /// The install window is open and it is next in line.
    Due,
    /// Waiting for the install window (`InstallView::window_opens`).
    Waiting,
    /// Being installed now.
    Installing,
    /// Installed: `current` points at it.
    Installed,
    /// Installing failed; `current` was switched back.
    Failed,
    /// A newer version of the channel was installed instead.
    Superseded,
    /// Complete, held from installing by an exception (`p2pctl hold`): the reason is
    /// `InstallView::reason`, the end `InstallView::held_until`.
    Held,
    /// The release's target leaves this node out (`InstallView::reason` shows the
    /// selector): it fetches and serves it, never installs it.
    NotTargeted,
    /// Complete, waiting on the rollout: `InstallView::reason` says for what (a
    /// requirement, an earlier ring's gate, a halted rollout).
    Blocked,
    /// Installed, then rolled back (by a fleet order or on this node):
    /// `InstallView::reason` says by whom and why, `InstallView::rolled_back_to` what
    /// `current` points at now.
    RolledBack,
}

impl InstallState {
    /// The word the API and `p2pctl` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Due => "due",
            Self::Waiting => "waiting",
            Self::Installing => "installing",
            Self::Installed => "installed",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
            Self::Held => "held",
            Self::NotTargeted => "not targeted",
            Self::Blocked => "blocked",
            Self::RolledBack => "rolled back",
        }
    }
}

impl std::fmt::Display for InstallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where one release stands on this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseProgress {
    /// Release id.
    pub id: String,
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: u64,
    /// Where its fetch stands.
    pub state: FetchState,
    /// Why it failed.
    pub error: Option<String>,
    /// Unique chunks stored.
    pub chunks_have: u32,
    /// Unique chunks in the release.
    pub chunks_total: u32,
    /// Bytes of the chunks stored.
    pub bytes_have: u64,
    /// Bytes of all unique chunks.
    pub bytes_total: u64,
    /// Chunk bytes received from same-site peers (this run of the daemon).
    pub bytes_from_lan: u64,
    /// Chunk bytes received from other sites (this run of the daemon).
    pub bytes_from_wan: u64,
    /// What crossed the wire for `bytes_from_lan`: less where chunks moved compressed.
    #[serde(default)]
    pub bytes_wire_lan: u64,
    /// What crossed the wire for `bytes_from_wan`: less where chunks moved compressed.
    #[serde(default)]
    pub bytes_wire_wan: u64,
    /// Bytes the store already had from earlier releases when the fetch started.
    pub bytes_reused: u64,
    /// Bytes of chunks rebuilt from patches against earlier releases (this run).
    #[serde(default)]
    pub bytes_rebuilt: u64,
    /// Bytes of the patches they were rebuilt from (counted in `bytes_from_lan` and
    /// `bytes_from_wan`, as received).
    #[serde(default)]
    pub bytes_patches: u64,
    /// Receive rate over the last few seconds.
    pub rate_bytes_per_s: u64,
    /// Seconds from learning of the release to completing it (or to now).
    pub elapsed_s: Option<f64>,
    /// While paused: when the download windows next open (RFC 3339).
    #[serde(default)]
    pub download_opens: Option<String>,
    /// The same, unix seconds.
    #[serde(default)]
    pub download_opens_unix_s: Option<i64>,
    /// When the release was published (its manifest's creation time), unix seconds.
    #[serde(default)]
    pub published_unix_s: i64,
    /// Its severity (`critical`, `high`, `medium`, `low`).
    #[serde(default)]
    pub severity: String,
    /// Installation, when the node installs releases (`[install] target`).
    #[serde(default)]
    pub install: Option<InstallView>,
}

/// Where a release stands with installation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstallView {
    /// Where installation stands.
    pub state: InstallState,
    /// While waiting: when the install windows next open (RFC 3339).
    pub window_opens: Option<String>,
    /// The installed version directory.
    pub dir: Option<String>,
    /// When the install finished (RFC 3339).
    pub at: Option<String>,
    /// What failed.
    pub reason: Option<String>,
    /// The apply command's exit code, if it ran and exited.
    pub exit_code: Option<i32>,
    /// The last lines of the apply command's output (of the health check's, when that is
    /// what failed).
    #[serde(default)]
    pub output: Vec<String>,
    /// After a failure: the version directory `current` points at again (none: removed).
    pub rolled_back_to: Option<String>,
    /// While held: when the hold ends (RFC 3339).
    #[serde(default)]
    pub held_until: Option<String>,
    /// The same, unix seconds.
    #[serde(default)]
    pub held_until_unix_s: Option<i64>,
    /// Installed, but the channel's `current` points at this other version directory now
    /// (switched by hand): what is really in use. The next install replaces it, and says so
    /// in the audit log.
    #[serde(default)]
    pub current_elsewhere: Option<String>,
    /// The release's ring this node is in, by name (none: no rings, or not targeted).
    #[serde(default)]
    pub ring: Option<String>,
    /// The same, as its index in the release's rings.
    #[serde(default)]
    pub ring_index: Option<u8>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub node_id: String,
    /// The median of the connected peers' clocks minus this node's, seconds (none without
    /// peers). Far from zero, this node's clock is likely wrong: releases look expired or
    /// not yet valid to it.
    #[serde(default)]
    pub clock_offset_s: Option<f64>,
    /// libp2p peer id.
    pub peer_id: String,
    /// Site.
    pub site: String,
    /// Region.
    pub region: String,
    /// Data-plane peers connected.
    pub peers: usize,
    /// Peers banned now.
    pub banned: Vec<String>,
    /// Chunk bytes received from same-site peers.
    pub recv_lan_bytes: u64,
    /// Chunk bytes received from other sites.
    pub recv_wan_bytes: u64,
    /// Chunk bytes sent to same-site peers.
    pub sent_lan_bytes: u64,
    /// Chunk bytes sent to other sites.
    pub sent_wan_bytes: u64,
    /// Data-plane control messages sent and received, by kind.
    #[serde(default)]
    pub control: Vec<ControlBytesView>,
    /// This node's rank among its site's aggregators (0 publishes the site's summary).
    #[serde(default)]
    pub aggregator_rank: Option<usize>,
    /// Sites this node has figures of: its own and those whose summary it holds.
    #[serde(default)]
    pub fleet_sites: usize,
    /// Releases served or being fetched.
    pub releases: Vec<ReleaseProgress>,
    /// Releases refused recently (bad signature, expired, not newer, ...), newest first:
    /// nothing of them was fetched.
    #[serde(default)]
    pub refused: Vec<RefusedRelease>,
}

/// Bytes of one kind of data-plane control message (frames, length prefix included; the QUIC
/// packets around them are not counted here).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControlBytesView {
    /// Message kind (`hello`, `bitmap`, `have`, ...).
    pub kind: String,
    /// Sent to same-site peers.
    pub lan_sent: u64,
    /// Received from same-site peers.
    pub lan_received: u64,
    /// Sent to peers of other sites.
    pub wan_sent: u64,
    /// Received from peers of other sites.
    pub wan_received: u64,
}

/// A release this node would not fetch, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusedRelease {
    /// Release id.
    pub id: String,
    /// The verification error.
    pub reason: String,
}

/// `GET /v1/schedule`: what the node's schedules say now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleView {
    /// The instant the answer is for (RFC 3339, UTC).
    pub now: String,
    /// Rate per traffic class.
    pub classes: Vec<ClassRateView>,
    /// The download windows.
    pub download: WindowView,
    /// The install windows.
    pub install: WindowView,
    /// Critical releases at or above this CVSS score ignore the download window; `None`: off.
    pub emergency_critical_cvss: Option<f32>,
}

/// One traffic class's rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassRateView {
    /// `wan_ingress`, `wan_egress`, `lan_egress` or `total`.
    pub class: String,
    /// Bytes per second now; `None`: unlimited.
    pub bytes_per_s: Option<u64>,
    /// The rate, for people.
    pub rate: String,
    /// When the schedule next changes it (RFC 3339), if within a week.
    pub next_change: Option<String>,
}

/// A set of windows now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowView {
    /// Windows configured (0: always open).
    pub windows: usize,
    /// Open now.
    pub open: bool,
    /// When it closes, if open and known.
    pub closes: Option<String>,
    /// When it next opens, if closed and known.
    pub opens: Option<String>,
}

/// `GET /v1/audit/verify`: the node's audit log checked entry by entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerifyView {
    /// Whether the whole chain holds.
    pub intact: bool,
    /// Entries checked and found intact (all of them when `intact`).
    pub entries: u64,
    /// Hash of the last entry, hex, when intact.
    pub head: Option<String>,
    /// The first entry found changed, missing or out of place.
    pub broken_at: Option<u64>,
    /// What is wrong with it.
    pub reason: Option<String>,
}

impl AuditVerifyView {
    /// The view of a check's result.
    pub fn of(result: &Result<store::audit::Intact, store::audit::Broken>) -> Self {
        match result {
            Ok(i) => Self {
                intact: true,
                entries: i.entries,
                head: Some(hex::encode(i.head)),
                broken_at: None,
                reason: None,
            },
            Err(b) => Self {
                intact: false,
                entries: b.seq.saturating_sub(1),
                head: None,
                broken_at: Some(b.seq),
                reason: Some(b.reason.clone()),
            },
        }
    }
}
