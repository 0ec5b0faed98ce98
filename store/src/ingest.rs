//! Ingest: turn a file or a directory tree on this host into staged chunks and a manifest.
//!
//! [`scan`] walks the tree without following symlinks and refuses what a release cannot hold
//! (device files, FIFOs, sockets, non-UTF-8 names, symlinks that leave the tree) with an error
//! naming the path. [`ingest`] then streams every file through the chunking pipeline into an
//! [`IngestSession`]; each file is opened without following symlinks and checked before and
//! after reading (size, modification and change time), so a file changed while it was being
//! published is refused instead of published half old, half new.

use crate::{IngestSession, StoreError};
use chunking::{ChunkSink, Chunker, PipelineConfig, PipelineError, run_pipeline};
use protocol::path::{check_entry_path, resolve_symlink_target};
use protocol::{ChunkId, ChunkRef, ChunkingParams, Entry, EntryKind};
use std::collections::HashSet;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why ingesting failed. Each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The path to publish does not exist.
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    /// A path could not be read.
    #[error("{path}: cannot read: {source}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file changed while it was read.
    #[error("{0}: file changed while it was being published; publish again once it is stable")]
    Changed(PathBuf),
    /// A device file, FIFO or socket.
    #[error("{path}: is a {kind}; a release holds only files, directories and symlinks")]
    UnsupportedType {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A name that is not UTF-8 or breaks a path rule.
    #[error("{path}: {reason}")]
    BadName {
        /// The path.
        path: PathBuf,
        /// The rule.
        reason: String,
    },
    /// A symlink whose target leaves the release.
    #[error("{path}: symlink to {target:?} is refused: {reason}")]
    BadSymlink {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: String,
        /// The rule.
        reason: String,
    },
    /// Over a release limit.
    #[error("{0}")]
    Limit(String),
    /// The store failed (disk full among others).
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// One scanned entry: its release path, where it is on disk, and its metadata at scan time.
#[derive(Debug, Clone)]
pub struct ScannedEntry {
    /// Release-relative path.
    pub rel: String,
    /// Absolute path on this host.
    pub abs: PathBuf,
    /// What it is.
    pub kind: ScannedKind,
}

/// What a scanned entry is.
#[derive(Debug, Clone)]
pub enum ScannedKind {
    /// A directory with its mode.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file with what it looked like at scan time.
    File {
        /// Permission bits.
        mode: u32,
        /// Identity and freshness at scan time.
        stamp: FileStamp,
    },
    /// A symlink and its target.
    Symlink {
        /// Target.
        target: String,
    },
}

/// What identifies a file's content version: size, inode, modification and change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    size: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(m: &Metadata) -> Self {
        Self {
            size: m.len(),
            ino: m.ino(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// A tree to publish, scanned.
#[derive(Debug, Clone)]
pub struct ScannedTree {
    /// Entries sorted by release path (byte order, as the manifest requires).
    pub entries: Vec<ScannedEntry>,
    /// Sum of file sizes.
    pub total_bytes: u64,
}

impl ScannedTree {
    /// Number of regular files.
    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, ScannedKind::File { .. }))
            .count()
    }
}

/// Walks `root`. A file becomes a one-entry release named after it; a directory's contents
/// (not the directory itself) become the release tree.
pub fn scan(root: &Path) -> Result<ScannedTree, IngestError> {
    let meta = fs::symlink_metadata(root).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => IngestError::NotFound(root.to_owned()),
        _ => IngestError::Unreadable {
            path: root.to_owned(),
            source: e,
        },
    })?;
    let mut entries = Vec::new();
    if meta.is_dir() {
        walk(root, "", &mut entries)?;
    } else {
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| IngestError::BadName {
                path: root.to_owned(),
                reason: "file name is not valid UTF-8".into(),
            })?
            .to_owned();
        let meta = fs::metadata(root).map_err(|e| IngestError::Unreadable {
            path: root.to_owned(),
            source: e,
        })?;
        entries.push(classify(root, name, &meta)?);
    }
    entries.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    if entries.len() > protocol::manifest::ENTRIES_PER_RELEASE_MAX {
        return Err(IngestError::Limit(format!(
            "{} holds {} entries, more than the limit of {} per release",
            root.display(),
            entries.len(),
            protocol::manifest::ENTRIES_PER_RELEASE_MAX
        )));
    }
    let dirs: HashSet<&str> = entries
        .iter()
        .filter(|e| matches!(e.kind, ScannedKind::Dir { .. }))
        .map(|e| e.rel.as_str())
        .collect();
    for e in &entries {
        if let ScannedKind::Symlink { target } = &e.kind {
            resolve_symlink_target(&e.rel, target, |p| dirs.contains(p)).map_err(|rule| {
                IngestError::BadSymlink {
                    path: e.abs.clone(),
                    target: target.clone(),
                    reason: rule.to_string(),
                }
            })?;
        }
    }
    let total_bytes = entries
        .iter()
        .map(|e| match &e.kind {
            ScannedKind::File { stamp, .. } => stamp.size,
            _ => 0,
        })
        .sum();
    Ok(ScannedTree {
        entries,
        total_bytes,
    })
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<ScannedEntry>) -> Result<(), IngestError> {
    let unreadable = |source| IngestError::Unreadable {
        path: dir.to_owned(),
        source,
    };
    for item in fs::read_dir(dir).map_err(unreadable)? {
        let item = item.map_err(unreadable)?;
        let abs = item.path();
        let name = item
            .file_name()
            .into_string()
            .map_err(|_| IngestError::BadName {
                path: abs.clone(),
                reason: "file name is not valid UTF-8".into(),
            })?;
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&abs).map_err(|source| IngestError::Unreadable {
            path: abs.clone(),
            source,
        })?;
        let entry = classify(&abs, rel, &meta)?;
        let is_dir = matches!(entry.kind, ScannedKind::Dir { .. });
        let rel = entry.rel.clone();
        out.push(entry);
        if out.len() > protocol::manifest::ENTRIES_PER_RELEASE_MAX {
            return Err(IngestError::Limit(format!(
                "more than {} entries per release",
                protocol::manifest::ENTRIES_PER_RELEASE_MAX
            )));
        }
        if is_dir {
            walk(&abs, &rel, out)?;
        }
    }
    Ok(())
}

fn classify(abs: &Path, rel: String, meta: &Metadata) -> Result<ScannedEntry, IngestError> {
    check_entry_path(&rel).map_err(|rule| IngestError::BadName {
        path: abs.to_owned(),
        reason: rule.to_string(),
    })?;
    let ft = meta.file_type();
    let mode = meta.permissions().mode() & protocol::manifest::MODE_BITS;
    let kind = if ft.is_dir() {
        ScannedKind::Dir { mode }
    } else if ft.is_file() {
        ScannedKind::File {
            mode,
            stamp: FileStamp::of(meta),
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(abs).map_err(|source| IngestError::Unreadable {
            path: abs.to_owned(),
            source,
        })?;
        let target = target
            .into_os_string()
            .into_string()
            .map_err(|_| IngestError::BadName {
                path: abs.to_owned(),
                reason: "symlink target is not valid UTF-8".into(),
            })?;
        ScannedKind::Symlink { target }
    } else {
        let kind = if ft.is_block_device() {
            "block device"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(IngestError::UnsupportedType {
            path: abs.to_owned(),
            kind,
        });
    };
    Ok(ScannedEntry {
        rel,
        abs: abs.to_owned(),
        kind,
    })
}

/// A file opened for publishing that refuses to finish if it changed since the scan.
struct GuardedFile {
    file: File,
    path: PathBuf,
    stamp: FileStamp,
    read: u64,
}

impl GuardedFile {
    fn open(path: &Path, stamp: FileStamp) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)?;
        let now = FileStamp::of(&file.metadata()?);
        if now != stamp {
            return Err(changed(path));
        }
        Ok(Self {
            file,
            path: path.to_owned(),
            stamp,
            read: 0,
        })
    }
}

fn changed(path: &Path) -> io::Error {
    io::Error::other(ChangedMarker(path.to_owned()))
}

#[derive(Debug)]
struct ChangedMarker(PathBuf);

impl std::fmt::Display for ChangedMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} changed while being read", self.0.display())
    }
}

impl std::error::Error for ChangedMarker {}

impl Read for GuardedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Never read past the size seen at scan time: growth is a change.
        let n = self.file.read(buf)?;
        self.read += n as u64;
        if self.read > self.stamp.size {
            return Err(changed(&self.path));
        }
        if n == 0 && !buf.is_empty() {
            let now = FileStamp::of(&self.file.metadata()?);
            if now != self.stamp || self.read != self.stamp.size {
                return Err(changed(&self.path));
            }
        }
        Ok(n)
    }
}

/// Progress counters shared with whoever reports progress.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes chunked so far.
    pub bytes_done: AtomicU64,
    /// Files finished so far.
    pub files_done: AtomicU64,
}

struct StoreSink<'a> {
    session: &'a mut IngestSession,
    /// Chunk lists, one per file in scan order.
    chunks: Vec<Vec<ChunkRef>>,
    progress: &'a Progress,
}

impl ChunkSink for StoreSink<'_> {
    type Error = StoreError;

    fn chunk(&mut self, source: usize, id: ChunkId, bytes: &[u8]) -> Result<(), StoreError> {
        self.session.put_chunk(id, bytes)?;
        self.chunks[source].push(ChunkRef {
            id,
            len: bytes.len() as u32,
        });
        self.progress
            .bytes_done
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn source_done(&mut self, _source: usize, _total_bytes: u64) -> Result<(), StoreError> {
        self.progress.files_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Chunks every file of `tree` into `session`; returns the manifest entries, in order.
pub fn ingest(
    tree: &ScannedTree,
    params: ChunkingParams,
    session: &mut IngestSession,
    progress: &Arc<Progress>,
) -> Result<Vec<Entry>, IngestError> {
    let chunker = Chunker::new(params).map_err(|e| IngestError::Limit(e.to_string()))?;
    let files: Vec<&ScannedEntry> = tree
        .entries
        .iter()
        .filter(|e| matches!(e.kind, ScannedKind::File { .. }))
        .collect();
    let sources = files.iter().map(|e| match &e.kind {
        ScannedKind::File { stamp, .. } => GuardedFile::open(&e.abs, *stamp),
        _ => unreachable!("filtered to files"),
    });
    let mut sink = StoreSink {
        session,
        chunks: vec![Vec::new(); files.len()],
        progress,
    };
    run_pipeline(&chunker, PipelineConfig::default(), sources, &mut sink).map_err(|e| match e {
        PipelineError::Read {
            source_index,
            error,
        } => {
            let path = files[source_index].abs.clone();
            // A file that vanished after the scan changed too.
            let vanished = error.kind() == io::ErrorKind::NotFound;
            if vanished || error.get_ref().is_some_and(|e| e.is::<ChangedMarker>()) {
                IngestError::Changed(path)
            } else {
                IngestError::Unreadable {
                    path,
                    source: error,
                }
            }
        }
        PipelineError::Sink(e) => IngestError::Store(e),
    })?;
    let mut per_file = sink.chunks.into_iter();
    let entries = tree
        .entries
        .iter()
        .map(|e| Entry {
            path: e.rel.clone(),
            kind: match &e.kind {
                ScannedKind::Dir { mode } => EntryKind::Dir { mode: *mode },
                ScannedKind::Symlink { target } => EntryKind::Symlink {
                    target: target.clone(),
                },
                ScannedKind::File { mode, stamp } => EntryKind::File {
                    mode: *mode,
                    size: stamp.size,
                    chunks: per_file.next().expect("one chunk list per file"),
                },
            },
        })
        .collect();
    Ok(entries)
}
