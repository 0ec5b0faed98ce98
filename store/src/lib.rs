//! What a p2pd node keeps on disk: the chunk store (packs and their redb catalog, releases,
//! activation records), the audit log ([`audit`]), the fleet table ([`fleet`]), keys
//! ([`identity`]), turning a tree into chunks ([`ingest`]) and a stored release back into
//! files ([`release`]).
//!
//! This crate depends on `protocol`, `chunking` and `scheduler` (a constant of the control
//! plane's cadence) only: it knows nothing of the network, the control API or the daemon.
//!
//! # The chunk store
//!
//! Append-only pack files holding chunk bytes, indexed in redb.
//!
//! ```text
//! <data>/store/index.redb          chunk -> (pack, offset, len); pack -> committed length;
//!                                  release -> signed manifest + summary; channel -> highest
//! <data>/store/packs/NNNNNNNN.pack records: "P2PC" | chunk id (32) | len (u32 LE) | bytes
//! ```
//!
//! **Durability rule**: chunk bytes are written and fsynced to their pack *before* the redb
//! transaction that points at them commits (redb commits are durable on return). So after a
//! crash the index never points at bytes that are not on disk. Bytes a crash left after a
//! pack's committed length are garbage by definition: [`Store::open`] truncates them, and
//! deletes pack files no commit ever named.
//!
//! **Atomic publish**: an [`IngestSession`] stages new chunks in packs it alone writes, and
//! [`IngestSession::commit`] inserts their index entries, the packs' new lengths, the release
//! and the channel's new highest version in one redb transaction. A release is listed only if
//! all its chunks are durable; an aborted or crashed publish leaves the store as it was.
//!
//! **Dedup**: a chunk already indexed (or staged in the same session) is never written again,
//! so a new version of a release costs only its changed chunks.
//!
//! **Verification in pairs**: chunk ids are computed by the pipeline before they are stored,
//! and every read re-hashes the bytes and refuses a mismatch ([`StoreError::Corrupt`]).

pub mod audit;
pub mod fleet;
pub mod gates;
pub mod held;
pub mod holds;
pub mod identity;
pub mod ingest;
pub mod orders;
pub mod patch;
pub mod release;
pub mod retention;
pub mod roots;

use crate::audit::{AuditEntry, AuditEvent, Broken, Intact};
use protocol::wire::Bitmap;
use protocol::{ChunkId, ChunkRef, Manifest, NodeId, ReleaseId, Severity, VerifiedRelease, codec};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const CHUNKS: TableDefinition<&[u8; 32], &[u8; 16]> = TableDefinition::new("chunks");
const PACKS: TableDefinition<u32, u64> = TableDefinition::new("packs");
const RELEASES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("releases");
const SUMMARIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("release_summaries");
const CHANNELS: TableDefinition<&str, u64> = TableDefinition::new("channels");
/// Releases verified and being fetched: release -> signed manifest. Removed in the
/// transaction that commits the release, so a restart resumes exactly the unfinished ones.
const PENDING: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("pending_releases");
/// Release id to its latest [`ActivationRecord`]: what installing it did.
const ACTIVATIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("activations");

/// The audit log ([`crate::audit`]): sequence number -> encoded [`AuditEntry`]. Only ever
/// appended to.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_log");

/// The fleet's status records ([`crate::fleet`]): node id -> its latest signed record.
const FLEET: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("fleet_status");

/// Other sites' summaries ([`crate::fleet`]): site name -> its latest signed summary.
const FLEET_SUMMARIES: TableDefinition<&str, &[u8]> = TableDefinition::new("fleet_summaries");
/// Node id -> that node's ledger ([`fleet::Stored::node_ledgers`]).
const FLEET_NODE_LEDGERS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("fleet_node_ledgers");
/// Site name -> that site's ledger ([`fleet::Stored::site_ledgers`]).
const FLEET_SITE_LEDGERS: TableDefinition<&str, &[u8]> = TableDefinition::new("fleet_site_ledgers");
/// Nodes retired from the fleet view (`p2pctl node forget`) → the time of their last record.
const FLEET_FORGOTTEN: TableDefinition<&[u8; 32], i64> = TableDefinition::new("fleet_forgotten");
/// The fleet roots this node took ([`roots`]): version -> signed root (wire form).
const ROOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("fleet_roots");
/// This node's certificate from the fleet CA ([`roots`]): one row, [`roots::OWN_CERT`].
const NODE_CERT: TableDefinition<&str, &[u8]> = TableDefinition::new("node_cert");
/// The fleet's revocation list this node took ([`roots`]): one row,
/// [`roots::REVOCATIONS_ROW`] → signed list (wire form).
const REVOCATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("fleet_revocations");
/// The fleet orders this node took ([`orders`]): one row, [`orders::ORDERS_ROW`] → signed
/// orders (wire form).
const ORDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("fleet_orders");
/// Releases held for approval (`p2pctl publish --hold-for-approval`): id → the envelope with
/// the signatures it has so far (also in `releases`, where it is not served from until the
/// row leaves this table).
const HELD: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("held_releases");
/// Install holds (exceptions, [`holds`]): target (a channel or a release id, hex) → the
/// hold.
const HOLDS: TableDefinition<&str, &[u8]> = TableDefinition::new("install_holds");
/// Releases whose ring this node saw start (release id → unix seconds): [`gates`].
const RING_STARTED: TableDefinition<&[u8; 32], i64> = TableDefinition::new("ring_started");
/// Releases this node accepted and then saw superseded before it held them whole (id →
/// version): when a peer announces one again it is superseded, not refused.
const SUPERSEDED: TableDefinition<&[u8; 32], u64> = TableDefinition::new("superseded_releases");

/// Most superseded releases remembered ([`Store::supersede_pending`]): years of a busy
/// fleet's releases at a few bytes each. Past it, a superseded release announced again is
/// refused as older than the channel's version, as one never accepted is.
pub const SUPERSEDED_KEPT_MAX: u64 = 65_536;

/// Largest encoded activation record: a path, a reason and the bounded output tail
/// (activation keeps 8 KB of it at most, the daemon's `activate::OUTPUT_TAIL_BYTES_MAX`) fit in a few
/// KiB.
pub const ACTIVATION_BYTES_MAX: usize = 64 << 10;

/// A pack grows to at most this size before a new one is started: large enough that a store
/// holds few files, small enough that a later compaction rewrites one in seconds.
pub const PACK_BYTES_MAX: u64 = 1 << 30;

/// Magic at the start of every pack record, so a pack can be scanned without the index.
pub const RECORD_MAGIC: &[u8; 4] = b"P2PC";
/// Bytes of a record header: magic, chunk id, length.
pub const RECORD_HEADER_BYTES: u64 = 4 + 32 + 4;

/// Pack writes are gathered in a buffer of this size before a `write` call.
const PACK_WRITE_BUFFER_BYTES: usize = 4 << 20;

/// A chunk at least this large is written by its own `write` call instead of being copied
/// into the buffer first: the call's cost is small next to copying that many bytes.
const DIRECT_WRITE_BYTES: usize = 64 << 10;

/// Largest release summary record (they are a few hundred bytes).
const SUMMARY_BYTES_MAX: usize = 64 << 10;

/// What activating one release did, as the store keeps it (the activation loop writes it,
/// `p2pctl status` shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationRecord {
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: u64,
    /// The version's directory.
    pub dir: PathBuf,
    /// When the activation finished, unix seconds.
    pub at_unix_s: i64,
    /// The version directory `current` pointed to before (its name).
    pub previous: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
}

/// How an activation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// `current` points at the release and the apply command (if any) succeeded.
    Installed,
    /// Something failed; `current` was switched back.
    Failed {
        /// What failed, in words.
        reason: String,
        /// The apply command's exit code, if it exited.
        exit_code: Option<i32>,
        /// The last lines of its output.
        output: Vec<String>,
        /// The version directory `current` points at now (`None`: it was removed).
        rolled_back_to: Option<String>,
    },
    /// It was installed, then rolled back: `current` points at an older version now, and
    /// this one is not installed again (a newer one is).
    RolledBack {
        /// Who: an operator's fleet order, or this node's own operator.
        by: RollbackBy,
        /// Why, as the operator gave it (and, when applying the older version failed, that).
        reason: String,
        /// The version directory `current` points at now.
        to: String,
    },
}

/// Who rolled an installed version back ([`Outcome::RolledBack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RollbackBy {
    /// A fleet order signed by an operator (`p2pctl rollback CHANNEL --to VERSION`).
    Fleet,
    /// This node's operator (`p2pctl rollback CHANNEL` on it).
    Local,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full.
    #[error("disk full while writing {path}: free space and publish again; the store is unchanged")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// Another IO error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The index database failed.
    #[error("index database: {0}")]
    Db(String),
    /// Stored bytes do not match their chunk id.
    #[error("chunk {0} is corrupt in the store: its bytes do not match its id")]
    Corrupt(ChunkId),
    /// A stored record does not decode.
    #[error("store record is damaged: {0}")]
    Damaged(String),
    /// The release's version is not above the channel's highest (checked again at commit).
    #[error(
        "version {version} on channel {channel:?} is not above the highest stored, {highest}: the next valid version is {}",
        highest.saturating_add(1)
    )]
    VersionNotNewer {
        /// Channel.
        channel: String,
        /// Version.
        version: u64,
        /// Highest stored.
        highest: u64,
    },
    /// A chunk of the release is neither stored nor staged.
    #[error("chunk {0} of the release is not in the store")]
    MissingChunk(ChunkId),
}

impl StoreError {
    fn io(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::StorageFull {
            Self::DiskFull {
                path: path.to_owned(),
            }
        } else {
            Self::Io {
                path: path.to_owned(),
                source,
            }
        }
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Where a chunk lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Pack number.
    pub pack: u32,
    /// Offset of the chunk's bytes (after the record header).
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

impl Location {
    fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&self.pack.to_le_bytes());
        b[4..12].copy_from_slice(&self.offset.to_le_bytes());
        b[12..].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    fn decode(b: &[u8; 16]) -> Self {
        let pack = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        let offset = u64::from_le_bytes(b[4..12].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(b[12..].try_into().expect("4 bytes"));
        Self { pack, offset, len }
    }
}

/// What `p2pctl releases` lists, kept beside the manifest so listing never decodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSummary {
    /// Release id.
    pub id: ReleaseId,
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: u64,
    /// Severity.
    pub severity: Severity,
    /// CVSS in tenths.
    pub cvss_tenths: Option<u8>,
    /// Marked an emergency by its publisher.
    pub emergency: bool,
    /// The release's own download windows.
    pub download_windows: Vec<protocol::ReleaseWindow>,
    /// The release's own install windows.
    pub install_windows: Vec<protocol::ReleaseWindow>,
    /// Creation time.
    pub created_unix_s: i64,
    /// Expiry time.
    pub expires_unix_s: i64,
    /// Files in the release.
    pub files: u64,
    /// Bytes of all files.
    pub total_bytes: u64,
    /// Distinct chunks.
    pub unique_chunks: u64,
    /// When this store committed it.
    pub stored_unix_s: i64,
    /// Names of the publishers whose signatures verified.
    pub signers: Vec<String>,
}

impl ReleaseSummary {
    /// Decodes a stored summary (at most `SUMMARY_BYTES_MAX`).
    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        codec::decode::<Self, SUMMARY_BYTES_MAX>(bytes, "release summary")
            .map_err(|e| StoreError::Damaged(e.to_string()))
    }

    fn of(release: &VerifiedRelease, stored_unix_s: i64) -> Self {
        let m: &Manifest = &release.manifest;
        Self {
            id: release.id,
            channel: m.channel.clone(),
            version: m.version,
            severity: m.severity,
            cvss_tenths: m.cvss.map(|c| c.0),
            emergency: m.emergency,
            download_windows: m.download_windows.clone(),
            install_windows: m.install_windows.clone(),
            created_unix_s: m.created_unix_s,
            expires_unix_s: m.expires_unix_s,
            files: m.files().count() as u64,
            total_bytes: m.total_bytes,
            unique_chunks: m.unique_chunks().len() as u64,
            stored_unix_s,
            signers: release.signers.clone(),
        }
    }
}

/// Space used by the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Indexed chunks.
    pub chunks: u64,
    /// Bytes of indexed chunk data (headers excluded).
    pub chunk_bytes: u64,
    /// Committed pack bytes (headers included).
    pub pack_bytes: u64,
    /// Releases.
    pub releases: u64,
}

/// The chunk store. Cheap to share behind an `Arc`; every method is blocking IO.
pub struct Store {
    packs_dir: PathBuf,
    db: Database,
    /// Read handles of packs, opened on first use.
    readers: Mutex<HashMap<u32, Arc<File>>>,
    /// Packs not being written by a session, with their committed lengths, that still have
    /// room; a new session appends to one of these before it starts a new pack.
    idle_packs: Mutex<Vec<(u32, u64)>>,
    /// Highest pack number in use or reserved.
    last_pack: Mutex<u32>,
    /// Held while a compaction runs ([`retention`]): one at a time.
    compacting: Mutex<()>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, and recovers from any crash: packs are
    /// truncated to their committed length and uncommitted packs are removed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let packs_dir = dir.join("packs");
        fs::create_dir_all(&packs_dir).map_err(|e| StoreError::io(&packs_dir, e))?;
        let db_path = dir.join("index.redb");
        let db = Database::create(&db_path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Db(format!(
                "{} is in use by another process (is another p2pd running on this data directory?)",
                db_path.display()
            )),
            other => StoreError::Db(other.to_string()),
        })?;
        let txn = db.begin_write()?;
        {
            txn.open_table(CHUNKS)?;
            txn.open_table(RELEASES)?;
            txn.open_table(SUMMARIES)?;
            txn.open_table(CHANNELS)?;
            txn.open_table(PACKS)?;
            txn.open_table(PENDING)?;
            txn.open_table(ACTIVATIONS)?;
            txn.open_table(AUDIT)?;
            txn.open_table(FLEET)?;
            txn.open_table(FLEET_SUMMARIES)?;
            txn.open_table(FLEET_NODE_LEDGERS)?;
            txn.open_table(FLEET_SITE_LEDGERS)?;
            txn.open_table(FLEET_FORGOTTEN)?;
            txn.open_table(ROOTS)?;
            txn.open_table(NODE_CERT)?;
            txn.open_table(REVOCATIONS)?;
            txn.open_table(ORDERS)?;
            txn.open_table(HELD)?;
            txn.open_table(HOLDS)?;
            txn.open_table(RING_STARTED)?;
            txn.open_table(SUPERSEDED)?;
        }
        txn.commit()?;

        let committed: HashMap<u32, u64> = {
            let read = db.begin_read()?;
            let table = read.open_table(PACKS)?;
            table
                .iter()?
                .map(|r| r.map(|(k, v)| (k.value(), v.value())))
                .collect::<Result<_, _>>()?
        };
        let mut idle = Vec::new();
        let mut last_pack = committed.keys().copied().max().unwrap_or(0);
        for entry in fs::read_dir(&packs_dir).map_err(|e| StoreError::io(&packs_dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(&packs_dir, e))?;
            let path = entry.path();
            let Some(number) = parse_pack_name(&path) else {
                continue;
            };
            last_pack = last_pack.max(number);
            match committed.get(&number) {
                None => {
                    tracing::info!(pack = %path.display(), "removing pack of an unfinished publish");
                    fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                }
                Some(&len) => {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| StoreError::io(&path, e))?;
                    let actual = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
                    if actual > len {
                        tracing::info!(pack = %path.display(), committed = len, actual,
                            "truncating bytes of an unfinished publish");
                        file.set_len(len).map_err(|e| StoreError::io(&path, e))?;
                        file.sync_all().map_err(|e| StoreError::io(&path, e))?;
                    } else if actual < len {
                        tracing::error!(pack = %path.display(), committed = len, actual,
                            "pack is shorter than committed: chunks in it will read as damaged");
                    }
                    if len < PACK_BYTES_MAX {
                        idle.push((number, len));
                    }
                }
            }
        }
        sync_dir(&packs_dir)?;
        Ok(Self {
            packs_dir,
            db,
            readers: Mutex::new(HashMap::new()),
            idle_packs: Mutex::new(idle),
            last_pack: Mutex::new(last_pack),
            compacting: Mutex::new(()),
        })
    }

    fn pack_path(&self, pack: u32) -> PathBuf {
        self.packs_dir.join(format!("{pack:08}.pack"))
    }

    /// Where `id` is stored, if it is.
    pub fn locate(&self, id: &ChunkId) -> Result<Option<Location>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(CHUNKS)?;
        Ok(table
            .get(id.as_bytes())?
            .map(|v| Location::decode(v.value())))
    }

    /// Whether `id` is stored.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.locate(id)?.is_some())
    }

    fn reader(&self, pack: u32) -> Result<Arc<File>, StoreError> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = readers.get(&pack) {
            return Ok(f.clone());
        }
        let path = self.pack_path(pack);
        let file = Arc::new(File::open(&path).map_err(|e| StoreError::io(&path, e))?);
        readers.insert(pack, file.clone());
        Ok(file)
    }

    /// Reads chunk `id`, verifying its bytes against the id. `Ok(None)` if it is not stored.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, StoreError> {
        match self.locate(id)? {
            Some(loc) => self.read_located(id, loc).map(Some),
            None => Ok(None),
        }
    }

    /// Reads chunk `id` at `loc` (from [`Self::locate`]), verifying its bytes against the id.
    pub fn read_located(&self, id: &ChunkId, loc: Location) -> Result<Vec<u8>, StoreError> {
        let file = match self.reader(loc.pack) {
            Ok(f) => f,
            // A compaction moved it since it was located: read it where it is now.
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return match self.locate(id)? {
                    Some(now) if now.pack != loc.pack => self.read_located(id, now),
                    _ => Err(StoreError::Damaged(format!(
                        "chunk {id}: pack {} is gone",
                        loc.pack
                    ))),
                };
            }
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut buf, loc.offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StoreError::Damaged(format!("chunk {id} lies past the end of its pack"))
            } else {
                StoreError::io(&self.pack_path(loc.pack), e)
            }
        })?;
        if !id.matches(&buf) {
            return Err(StoreError::Corrupt(*id));
        }
        Ok(buf)
    }

    /// Which of `chunks` are stored, as a bitmap in their order (one read transaction).
    pub fn have_bitmap(&self, chunks: &[ChunkRef]) -> Result<Bitmap, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(CHUNKS)?;
        let mut bits = Bitmap::new(chunks.len() as u32);
        for (i, c) in chunks.iter().enumerate() {
            if table.get(c.id.as_bytes())?.is_some() {
                bits.set(i as u32);
            }
        }
        Ok(bits)
    }

    /// Records `release` as verified and being fetched (idempotent).
    ///
    /// The first time, the log records that the release was accepted
    /// ([`AuditEvent::announced`]), in the same transaction: a fetch resumed after a restart
    /// finds it pending and writes nothing again. Returns whether it was new.
    pub fn add_pending(&self, release: &VerifiedRelease) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let new = txn
            .open_table(PENDING)?
            .insert(release.id.as_bytes(), release.envelope.encode().as_slice())?
            .is_none();
        if new {
            append_audit_in(&txn, AuditEvent::announced(release))?;
        }
        txn.commit()?;
        Ok(new)
    }

    /// Forgets a pending release (given up on: refused, expired or superseded).
    pub fn remove_pending(&self, id: &ReleaseId) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(PENDING)?.remove(id.as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// Forgets a pending release because a newer version of its channel superseded it, and
    /// remembers that it was accepted (at most [`SUPERSEDED_KEPT_MAX`] are).
    pub fn supersede_pending(&self, id: &ReleaseId, version: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(PENDING)?.remove(id.as_bytes())?;
        {
            let mut table = txn.open_table(SUPERSEDED)?;
            if table.len()? < SUPERSEDED_KEPT_MAX {
                table.insert(id.as_bytes(), version)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether release `id` was accepted here and then superseded
    /// ([`Store::supersede_pending`]).
    pub fn was_superseded(&self, id: &ReleaseId) -> Result<bool, StoreError> {
        let read = self.db.begin_read()?;
        Ok(read.open_table(SUPERSEDED)?.get(id.as_bytes())?.is_some())
    }

    /// Signed manifests of the releases being fetched.
    pub fn pending(&self) -> Result<Vec<(ReleaseId, Vec<u8>)>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(PENDING)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((ReleaseId(*k.value()), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Whether release `id` is committed.
    pub fn has_release(&self, id: &ReleaseId) -> Result<bool, StoreError> {
        let read = self.db.begin_read()?;
        Ok(read.open_table(RELEASES)?.get(id.as_bytes())?.is_some())
    }

    /// Starts staging chunks for a publish.
    pub fn begin_ingest(self: &Arc<Self>) -> IngestSession {
        IngestSession {
            store: self.clone(),
            current: None,
            touched: Vec::new(),
            staged: HashMap::new(),
            buffer: Vec::with_capacity(PACK_WRITE_BUFFER_BYTES),
            new_bytes: 0,
            dedup_bytes: 0,
            finished: false,
            audit: None,
            held: false,
        }
    }

    /// Highest version committed on `channel`.
    pub fn highest_version(&self, channel: &str) -> Result<Option<u64>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(CHANNELS)?;
        Ok(table.get(channel)?.map(|v| v.value()))
    }

    /// All releases, newest first.
    pub fn releases(&self) -> Result<Vec<ReleaseSummary>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(SUMMARIES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(ReleaseSummary::decode(v.value())?);
        }
        out.sort_by(|a, b| {
            b.stored_unix_s
                .cmp(&a.stored_unix_s)
                .then_with(|| a.channel.cmp(&b.channel))
                .then_with(|| b.version.cmp(&a.version))
        });
        Ok(out)
    }

    /// The summary of release `id`.
    pub fn summary(&self, id: &ReleaseId) -> Result<Option<ReleaseSummary>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(SUMMARIES)?;
        table
            .get(id.as_bytes())?
            .map(|v| ReleaseSummary::decode(v.value()))
            .transpose()
    }

    /// The signed manifest of release `id`, as received.
    pub fn signed_manifest(&self, id: &ReleaseId) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(RELEASES)?;
        Ok(table.get(id.as_bytes())?.map(|v| v.value().to_vec()))
    }

    /// The manifest of release `id`, decoded from its stored envelope.
    pub fn manifest(&self, id: &ReleaseId) -> Result<Option<Manifest>, StoreError> {
        let Some(envelope) = self.signed_manifest(id)? else {
            return Ok(None);
        };
        manifest_of_envelope(&envelope)
            .map(Some)
            .map_err(|e| StoreError::Damaged(format!("stored release {id} is damaged: {e}")))
    }

    /// Records what activating release `id` did, replacing any earlier record of it.
    pub fn record_activation(
        &self,
        id: &ReleaseId,
        record: &ActivationRecord,
    ) -> Result<(), StoreError> {
        let bytes = codec::encode(record);
        if bytes.len() > ACTIVATION_BYTES_MAX {
            return Err(StoreError::Damaged(format!(
                "activation record of {id} is {} bytes, over {ACTIVATION_BYTES_MAX}",
                bytes.len()
            )));
        }
        let txn = self.db.begin_write()?;
        txn.open_table(ACTIVATIONS)?
            .insert(id.as_bytes(), bytes.as_slice())?;
        // The audit entry commits with the record: one is never there without the other.
        let (release, channel, version) = (id.to_hex(), record.channel.clone(), record.version);
        let event = match &record.outcome {
            Outcome::Installed => AuditEvent::Activated {
                release,
                channel,
                version,
            },
            Outcome::Failed { reason, .. } => AuditEvent::ActivationFailed {
                release,
                channel,
                version,
                reason: crate::audit::bounded_reason(reason),
            },
            Outcome::RolledBack { by, reason, to } => AuditEvent::RolledBack {
                release,
                channel,
                version,
                to: to.clone(),
                fleet: *by == RollbackBy::Fleet,
                reason: crate::audit::bounded_reason(reason),
            },
        };
        append_audit_in(&txn, event)?;
        txn.commit()?;
        Ok(())
    }

    /// Drops the record of release `id`'s failed install, so the installer tries it once
    /// more (a fleet order resumed the release after the failure); audited. `false` when
    /// its record is not a failure (nothing done).
    pub fn retry_failed_install(
        &self,
        id: &ReleaseId,
        resumed_at: i64,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ACTIVATIONS)?;
            let record: Option<ActivationRecord> = match table.get(id.as_bytes())? {
                Some(v) => Some(
                    codec::decode::<_, ACTIVATION_BYTES_MAX>(v.value(), "activation record")
                        .map_err(|e| StoreError::Damaged(e.to_string()))?,
                ),
                None => None,
            };
            let Some(record) = record.filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
            else {
                return Ok(false);
            };
            table.remove(id.as_bytes())?;
            append_audit_in(
                &txn,
                AuditEvent::InstallRetried {
                    release: id.to_hex(),
                    channel: record.channel,
                    version: record.version,
                    resumed_unix_s: resumed_at,
                },
            )?;
        }
        txn.commit()?;
        Ok(true)
    }

    /// Appends `event` to the audit log, in a transaction of its own.
    pub fn append_audit(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        let txn = self.db.begin_write()?;
        let entry = append_audit_in(&txn, event)?;
        txn.commit()?;
        Ok(entry)
    }

    /// The audit log's entries appended at or after `since_unix_ms` (all if `None`), oldest
    /// first, at most [`crate::audit::LIST_ENTRIES_MAX`]; and the whole log's length and last
    /// hash, for the seal.
    pub fn audit_entries(
        &self,
        since_unix_ms: Option<i64>,
    ) -> Result<(Vec<AuditEntry>, Intact), StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(AUDIT)?;
        let mut entries = Vec::new();
        // Entries are appended in time order (up to clock steps): the first one at or after
        // `since` is found by a binary search over sequence numbers.
        let total = table.last()?.map_or(0, |(k, _)| k.value());
        let first = match since_unix_ms {
            None => 1,
            Some(since) => {
                let (mut lo, mut hi) = (1u64, total + 1);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    let at = match table.get(mid)? {
                        Some(v) => decode_audit(mid, v.value())?.at_unix_ms,
                        None => i64::MIN,
                    };
                    if at < since {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                lo
            }
        };
        for row in table.range(first..)? {
            let (k, v) = row?;
            let e = decode_audit(k.value(), v.value())?;
            if since_unix_ms.is_none_or(|s| e.at_unix_ms >= s) {
                entries.push(e);
            }
            if entries.len() == crate::audit::LIST_ENTRIES_MAX {
                break;
            }
        }
        let head = match table.last()? {
            Some((_, v)) => crate::audit::hash_encoded(v.value()),
            None => crate::audit::GENESIS,
        };
        Ok((
            entries,
            Intact {
                entries: total,
                head,
            },
        ))
    }

    /// Walks the whole audit log as stored ([`crate::audit::verify`]); an entry that no
    /// longer decodes, or sits under another number than its own, is where it broke.
    pub fn verify_audit(&self) -> Result<Result<Intact, Broken>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(AUDIT)?;
        let mut entries = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let seq = k.value();
            match codec::decode::<AuditEntry, { crate::audit::ENTRY_BYTES_MAX }>(
                v.value(),
                "audit entry",
            ) {
                Ok(e) if e.seq == seq => entries.push(e),
                Ok(e) => {
                    return Ok(Err(Broken {
                        seq,
                        reason: format!("it is stored as entry {seq} but says {}", e.seq),
                    }));
                }
                Err(e) => {
                    return Ok(Err(Broken {
                        seq,
                        reason: format!("it does not decode: {e}"),
                    }));
                }
            }
        }
        Ok(crate::audit::verify(entries.iter().map(|e| (e, None))))
    }

    /// Replaces the stored status records, summaries and ledgers of these nodes and sites,
    /// in one transaction (so a ledger never lags the record it was merged from).
    pub fn put_fleet(&self, changed: &fleet::Stored) -> Result<(), StoreError> {
        if changed.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            // Retired nodes first: a node that came back is written again below.
            let mut tombs = txn.open_table(FLEET_FORGOTTEN)?;
            let mut records = txn.open_table(FLEET)?;
            let mut ledgers = txn.open_table(FLEET_NODE_LEDGERS)?;
            for (node, at) in &changed.forgotten {
                match at {
                    Some(at) => {
                        tombs.insert(&node.0, *at)?;
                        records.remove(&node.0)?;
                        ledgers.remove(&node.0)?;
                    }
                    None => {
                        tombs.remove(&node.0)?;
                    }
                }
            }
            drop((tombs, records, ledgers));
            let mut table = txn.open_table(FLEET)?;
            for (node, bytes) in &changed.records {
                table.insert(&node.0, bytes.as_slice())?;
            }
            let mut table = txn.open_table(FLEET_NODE_LEDGERS)?;
            for (node, bytes) in &changed.node_ledgers {
                table.insert(&node.0, bytes.as_slice())?;
            }
            let mut table = txn.open_table(FLEET_SUMMARIES)?;
            for (site, bytes) in &changed.summaries {
                table.insert(site.as_str(), bytes.as_slice())?;
            }
            let mut table = txn.open_table(FLEET_SITE_LEDGERS)?;
            for (site, bytes) in &changed.site_ledgers {
                table.insert(site.as_str(), bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Everything stored of the fleet (each record and summary is verified again, and each
    /// ledger checked, when loaded): at most [`fleet::SITE_RECORDS_MAX`] nodes and
    /// [`fleet::SITES_MAX`] sites.
    pub fn fleet(&self) -> Result<fleet::Stored, StoreError> {
        let read = self.db.begin_read()?;
        let by_node = |def: TableDefinition<&[u8; 32], &[u8]>| -> Result<_, StoreError> {
            let table = read.open_table(def)?;
            let mut out = Vec::new();
            for row in table.iter()?.take(fleet::SITE_RECORDS_MAX) {
                let (k, v) = row?;
                out.push((NodeId(*k.value()), v.value().to_vec()));
            }
            Ok(out)
        };
        let by_site = |def: TableDefinition<&str, &[u8]>| -> Result<_, StoreError> {
            let table = read.open_table(def)?;
            let mut out = Vec::new();
            for row in table.iter()?.take(fleet::SITES_MAX) {
                let (k, v) = row?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        };
        Ok(fleet::Stored {
            records: by_node(FLEET)?,
            summaries: by_site(FLEET_SUMMARIES)?,
            node_ledgers: by_node(FLEET_NODE_LEDGERS)?,
            site_ledgers: by_site(FLEET_SITE_LEDGERS)?,
            forgotten: {
                let table = read.open_table(FLEET_FORGOTTEN)?;
                let mut out = Vec::new();
                for row in table.iter()?.take(fleet::FORGOTTEN_MAX) {
                    let (k, v) = row?;
                    out.push((NodeId(*k.value()), Some(v.value())));
                }
                out
            },
        })
    }

    /// Every activation record, by release.
    pub fn activations(&self) -> Result<Vec<(ReleaseId, ActivationRecord)>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(ACTIVATIONS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let record = codec::decode::<_, ACTIVATION_BYTES_MAX>(v.value(), "activation record")
                .map_err(|e| StoreError::Damaged(e.to_string()))?;
            out.push((ReleaseId(*k.value()), record));
        }
        Ok(out)
    }

    /// Releases whose id starts with the hex prefix `prefix`.
    pub fn find_releases(&self, prefix: &str) -> Result<Vec<ReleaseId>, StoreError> {
        let prefix = prefix.to_ascii_lowercase();
        Ok(self
            .releases()?
            .into_iter()
            .map(|s| s.id)
            .filter(|id| id.to_hex().starts_with(&prefix))
            .collect())
    }

    /// Space used.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let read = self.db.begin_read()?;
        let chunks = read.open_table(CHUNKS)?;
        let mut stats = StoreStats::default();
        for row in chunks.iter()? {
            let (_, v) = row?;
            stats.chunks += 1;
            stats.chunk_bytes += u64::from(Location::decode(v.value()).len);
        }
        for row in read.open_table(PACKS)?.iter()? {
            stats.pack_bytes += row?.1.value();
        }
        stats.releases = read.open_table(RELEASES)?.len()?;
        Ok(stats)
    }

    fn reserve_pack(&self) -> (u32, u64) {
        if let Some(p) = self
            .idle_packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
        {
            return p;
        }
        let mut last = self.last_pack.lock().unwrap_or_else(|e| e.into_inner());
        *last += 1;
        (*last, 0)
    }

    fn release_pack(&self, pack: u32, committed_len: u64) {
        if committed_len < PACK_BYTES_MAX {
            self.idle_packs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((pack, committed_len));
        }
    }
}

/// The manifest of a stored envelope (the store checked it when it was stored).
fn manifest_of_envelope(envelope: &[u8]) -> Result<Manifest, protocol::ManifestError> {
    let signed: protocol::SignedManifest = codec::decode::<
        _,
        { protocol::envelope::ENVELOPE_BYTES_MAX },
    >(envelope, "stored envelope")?;
    Manifest::decode(&signed.manifest_bytes)
}

fn parse_pack_name(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".pack")?.parse().ok()
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// A pack a session writes: its number, file, committed length when the session took it,
/// and the length written so far.
struct OpenPack {
    pack: u32,
    file: File,
    path: PathBuf,
    start_len: u64,
    len: u64,
}

/// Chunks staged for one publish. Nothing is visible to readers until [`Self::commit`];
/// dropping the session without committing rolls its packs back.
pub struct IngestSession {
    store: Arc<Store>,
    current: Option<OpenPack>,
    /// Packs this session wrote and finished (rolled over), not yet committed.
    touched: Vec<OpenPack>,
    staged: HashMap<ChunkId, Location>,
    buffer: Vec<u8>,
    new_bytes: u64,
    dedup_bytes: u64,
    finished: bool,
    /// Appended to the audit log in the commit's transaction.
    audit: Option<AuditEvent>,
    /// The release committed is held for approval ([`IngestSession::hold`]).
    held: bool,
}

impl IngestSession {
    /// Has [`IngestSession::commit`] append `event` to the audit log in its transaction, so
    /// that the release and its audit entry are stored together or not at all.
    pub fn audit_on_commit(&mut self, event: AuditEvent) {
        self.audit = Some(event);
    }

    /// Has [`IngestSession::commit`] record the release as held for approval: stored, its
    /// version taken, but not served until [`Store::approve`] completes it.
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Bytes of chunks this session wrote (not already stored).
    pub fn new_bytes(&self) -> u64 {
        self.new_bytes
    }

    /// Bytes of chunks that were already stored or staged (dedup savings).
    pub fn dedup_bytes(&self) -> u64 {
        self.dedup_bytes
    }

    /// Stages chunk `id` with `bytes` unless the store or this session already has it.
    /// Returns whether it was written. The caller computed `id` from `bytes`.
    pub fn put_chunk(&mut self, id: ChunkId, bytes: &[u8]) -> Result<bool, StoreError> {
        debug_assert!(id.matches(bytes), "caller must pass the id of the bytes");
        if self.staged.contains_key(&id) || self.store.has_chunk(&id)? {
            self.dedup_bytes += bytes.len() as u64;
            return Ok(false);
        }
        let record = RECORD_HEADER_BYTES + bytes.len() as u64;
        let needs_new = match &self.current {
            None => true,
            Some(p) => p.len + record > PACK_BYTES_MAX && p.len > p.start_len,
        };
        if needs_new {
            self.roll_pack()?;
        }
        let pack = self.current.as_mut().expect("roll_pack opened a pack");
        let offset = pack.len + RECORD_HEADER_BYTES;
        pack.len += record;
        let location = Location {
            pack: pack.pack,
            offset,
            len: bytes.len() as u32,
        };
        self.buffer.extend_from_slice(RECORD_MAGIC);
        self.buffer.extend_from_slice(id.as_bytes());
        self.buffer
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        if bytes.len() >= DIRECT_WRITE_BYTES {
            // Large enough for its own write call: no copy into the buffer.
            self.flush()?;
            let pack = self.current.as_mut().expect("roll_pack opened a pack");
            pack.file
                .write_all(bytes)
                .map_err(|e| StoreError::io(&pack.path, e))?;
        } else {
            self.buffer.extend_from_slice(bytes);
            if self.buffer.len() >= PACK_WRITE_BUFFER_BYTES {
                self.flush()?;
            }
        }
        self.staged.insert(id, location);
        self.new_bytes += bytes.len() as u64;
        Ok(true)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if let Some(pack) = self.current.as_mut() {
            if !self.buffer.is_empty() {
                pack.file
                    .write_all(&self.buffer)
                    .map_err(|e| StoreError::io(&pack.path, e))?;
                self.buffer.clear();
            }
        }
        Ok(())
    }

    fn roll_pack(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        if let Some(done) = self.current.take() {
            done.file
                .sync_data()
                .map_err(|e| StoreError::io(&done.path, e))?;
            self.touched.push(done);
        }
        let (pack, start_len) = self.store.reserve_pack();
        let path = self.store.pack_path(pack);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        // A reused pack may hold bytes past its committed length if an earlier session of
        // this process failed to roll back; never append after garbage.
        file.set_len(start_len)
            .map_err(|e| StoreError::io(&path, e))?;
        self.current = Some(OpenPack {
            pack,
            file,
            path,
            start_len,
            len: start_len,
        });
        Ok(())
    }

    /// Makes every staged chunk durable and indexes it, and keeps the session open: a fetch
    /// calls this every few megabytes so that what it verified survives a crash.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.sync_staged()?;
        let txn = self.store.db.begin_write()?;
        self.index_staged(&mut txn.open_table(CHUNKS)?, &mut txn.open_table(PACKS)?)?;
        txn.commit()?;
        for pack in self.touched.drain(..) {
            self.store.release_pack(pack.pack, pack.len);
        }
        if let Some(pack) = self.current.as_mut() {
            pack.start_len = pack.len;
        }
        self.staged.clear();
        Ok(())
    }

    /// Writes out the buffer and fsyncs the pack being written and the packs directory (a
    /// new pack file's directory entry must be durable too). Finished packs were synced when
    /// the session rolled over from them.
    fn sync_staged(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        if let Some(pack) = &self.current {
            pack.file
                .sync_data()
                .map_err(|e| StoreError::io(&pack.path, e))?;
        }
        sync_dir(&self.store.packs_dir)
    }

    /// Inserts the staged chunks' locations and the written packs' new lengths.
    fn index_staged(
        &self,
        chunks: &mut redb::Table<'_, &'static [u8; 32], &'static [u8; 16]>,
        packs: &mut redb::Table<'_, u32, u64>,
    ) -> Result<(), StoreError> {
        for (id, loc) in &self.staged {
            chunks.insert(id.as_bytes(), &loc.encode())?;
        }
        for pack in self.touched.iter().chain(&self.current) {
            packs.insert(pack.pack, pack.len)?;
        }
        Ok(())
    }

    /// Makes every staged chunk durable and, in one transaction, indexes them and (if given)
    /// records `release`. Checks again that every chunk of the release is stored or staged
    /// and that its version is above the channel's highest.
    pub fn commit(
        mut self,
        release: Option<&VerifiedRelease>,
        now_unix_s: i64,
    ) -> Result<(), StoreError> {
        self.sync_staged()?;
        let txn = self.store.db.begin_write()?;
        {
            let mut chunks = txn.open_table(CHUNKS)?;
            self.index_staged(&mut chunks, &mut txn.open_table(PACKS)?)?;
            if let Some(release) = release {
                let m = &release.manifest;
                for c in m.unique_chunks() {
                    if !self.staged.contains_key(&c.id) && chunks.get(c.id.as_bytes())?.is_none() {
                        return Err(StoreError::MissingChunk(c.id));
                    }
                }
                let mut channels = txn.open_table(CHANNELS)?;
                if let Some(highest) = channels.get(m.channel.as_str())?.map(|v| v.value()) {
                    if m.version <= highest {
                        return Err(StoreError::VersionNotNewer {
                            channel: m.channel.clone(),
                            version: m.version,
                            highest,
                        });
                    }
                }
                channels.insert(m.channel.as_str(), m.version)?;
                txn.open_table(PENDING)?.remove(release.id.as_bytes())?;
                let envelope = release.envelope.encode();
                txn.open_table(RELEASES)?
                    .insert(release.id.as_bytes(), envelope.as_slice())?;
                let summary = codec::encode(&ReleaseSummary::of(release, now_unix_s));
                txn.open_table(SUMMARIES)?
                    .insert(release.id.as_bytes(), summary.as_slice())?;
                if self.held {
                    txn.open_table(HELD)?
                        .insert(release.id.as_bytes(), envelope.as_slice())?;
                }
            }
            if let Some(event) = self.audit.take() {
                append_audit_in(&txn, event)?;
            }
        }
        txn.commit()?;
        self.finished = true;
        for pack in self.touched.drain(..).chain(self.current.take()) {
            self.store.release_pack(pack.pack, pack.len);
        }
        Ok(())
    }

    fn rollback(&mut self) {
        self.buffer.clear();
        for pack in self.touched.drain(..).chain(self.current.take()) {
            // Best effort: if this fails the bytes stay past the committed length, and the
            // next open (or the next session that takes this pack) truncates them.
            if let Err(e) = pack.file.set_len(pack.start_len) {
                tracing::warn!(pack = %pack.path.display(), error = %e, "rollback truncate failed");
            }
            if pack.start_len == 0 {
                let _ = fs::remove_file(&pack.path);
            } else {
                self.store.release_pack(pack.pack, pack.start_len);
            }
        }
        self.staged.clear();
    }
}

/// Appends `event` to the audit log inside `txn`: the next number, chained to the last entry's
/// stored bytes (which are its canonical encoding, so no decode is needed to extend a log).
fn append_audit_in(
    txn: &redb::WriteTransaction,
    event: AuditEvent,
) -> Result<AuditEntry, StoreError> {
    let mut table = txn.open_table(AUDIT)?;
    let (seq, prev) = match table.last()? {
        Some((k, v)) => (k.value() + 1, crate::audit::hash_encoded(v.value())),
        None => (1, crate::audit::GENESIS),
    };
    let entry = AuditEntry {
        seq,
        at_unix_ms: jiff::Timestamp::now().as_millisecond(),
        prev,
        event,
    };
    let bytes = codec::encode(&entry);
    if bytes.len() > crate::audit::ENTRY_BYTES_MAX {
        return Err(StoreError::Damaged(format!(
            "audit entry of {} bytes, over {}",
            bytes.len(),
            crate::audit::ENTRY_BYTES_MAX
        )));
    }
    table.insert(seq, bytes.as_slice())?;
    Ok(entry)
}

fn decode_audit(seq: u64, bytes: &[u8]) -> Result<AuditEntry, StoreError> {
    codec::decode::<AuditEntry, { crate::audit::ENTRY_BYTES_MAX }>(bytes, "audit entry")
        .map_err(|e| StoreError::Damaged(format!("audit entry {seq}: {e}")))
}

impl Drop for IngestSession {
    fn drop(&mut self) {
        if !self.finished {
            self.rollback();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_superseded_release_is_remembered_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (ReleaseId([1; 32]), ReleaseId([2; 32]));
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(!store.was_superseded(&a).unwrap());
            store.supersede_pending(&a, 3).unwrap();
            assert!(store.was_superseded(&a).unwrap());
            assert!(!store.was_superseded(&b).unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(store.was_superseded(&a).unwrap());
        assert!(store.pending().unwrap().is_empty());
    }
}
