//! Operations on a stored release: re-check every chunk, and export the tree back to files.
//!
//! Export writes into a directory that must not exist yet (or be empty), creates every file
//! with `O_NOFOLLOW | O_EXCL` semantics, verifies every chunk before writing it, and sets
//! directory modes last (children first) so a read-only directory can still be filled.
//! Paths were checked when the manifest was verified; they are checked again here before any
//! is joined to the destination (assertions in pairs).

use crate::{Store, StoreError};
use chunking::{ReassembleError, reassemble_file};
use protocol::path::check_entry_path;
use protocol::{ChunkId, EntryKind, Manifest};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Outcome of re-hashing every chunk of a release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Distinct chunks checked.
    pub chunks_checked: u64,
    /// Bytes re-hashed.
    pub bytes_checked: u64,
    /// Chunks not in the store.
    pub missing: Vec<ChunkId>,
    /// Chunks whose bytes do not match their id.
    pub corrupt: Vec<ChunkId>,
}

impl VerifyReport {
    /// Whether every chunk is present and intact.
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty()
    }
}

/// Re-reads and re-hashes every distinct chunk of `manifest`.
pub fn verify_chunks(store: &Store, manifest: &Manifest) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    for chunk in manifest.unique_chunks() {
        report.chunks_checked += 1;
        match store.read_chunk(&chunk.id) {
            Ok(Some(bytes)) if bytes.len() == chunk.len as usize => {
                report.bytes_checked += bytes.len() as u64;
            }
            Ok(Some(_)) | Err(StoreError::Corrupt(_)) | Err(StoreError::Damaged(_)) => {
                report.corrupt.push(chunk.id);
            }
            Ok(None) => report.missing.push(chunk.id),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The destination exists and is not an empty directory.
    #[error("{0}: destination exists and is not empty; export into a new directory")]
    DestinationNotEmpty(PathBuf),
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A chunk is missing or corrupt.
    #[error("{path}: {source}")]
    Chunk {
        /// The file being written.
        path: PathBuf,
        /// What is wrong with the chunk.
        source: ReassembleError,
    },
    /// A path in the manifest breaks a rule (the manifest gate should have refused it).
    #[error("manifest path {0:?} is refused")]
    BadPath(String),
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReport {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes the release tree of `manifest` under `dest`.
pub fn export(
    store: &Store,
    manifest: &Manifest,
    dest: &Path,
) -> Result<ExportReport, ExportError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Io { path, source }
    };
    match fs::read_dir(dest) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(ExportError::DestinationNotEmpty(dest.to_owned()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(io_err(dest))?;
        }
        Err(e) => return Err(io_err(dest)(e)),
    }
    let mut report = ExportReport::default();
    let mut dir_modes = Vec::new();
    for entry in &manifest.entries {
        check_entry_path(&entry.path).map_err(|_| ExportError::BadPath(entry.path.clone()))?;
        let path = dest.join(&entry.path);
        match &entry.kind {
            EntryKind::Dir { mode } => {
                fs::create_dir(&path).map_err(io_err(&path))?;
                dir_modes.push((path, *mode));
                report.dirs += 1;
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path).map_err(io_err(&path))?;
                report.symlinks += 1;
            }
            EntryKind::File { mode, chunks, .. } => {
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err(&path))?;
                let mut out = BufWriter::with_capacity(1 << 20, file);
                let bytes = reassemble_file(
                    chunks,
                    |c| match store.read_chunk(&c.id) {
                        Ok(b) => Ok(b),
                        Err(StoreError::Corrupt(_)) => Ok(Some(Vec::new())),
                        Err(e) => Err(io::Error::other(e.to_string())),
                    },
                    &mut out,
                )
                .map_err(|source| match source {
                    // A corrupt stored chunk was mapped to empty bytes above; name it properly.
                    ReassembleError::LengthMismatch { id, .. } => ExportError::Chunk {
                        path: path.clone(),
                        source: ReassembleError::Corrupt(id),
                    },
                    source => ExportError::Chunk {
                        path: path.clone(),
                        source,
                    },
                })?;
                let file = out
                    .into_inner()
                    .map_err(|e| io_err(&path)(e.into_error()))?;
                file.set_permissions(fs::Permissions::from_mode(*mode))
                    .map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
                report.files += 1;
                report.bytes += bytes;
            }
        }
    }
    for (path, mode) in dir_modes.iter().rev() {
        fs::set_permissions(path, fs::Permissions::from_mode(*mode)).map_err(io_err(path))?;
    }
    Ok(report)
}
