//! Patches between a release's files and the files of earlier releases of its channel:
//! made when a release is published ([`make`]), applied when one is fetched ([`rebuild`]).
//!
//! # Which patches a release carries
//!
//! For each of the channel's [`PATCH_BASES_MAX`] newest releases below the new one that the
//! store holds ([`bases`]), and each file of the new release with a counterpart in it
//! ([`counterpart`]), a patch is made when the file changed, both are at most
//! [`PATCH_FILE_BYTES_MAX`], and it is smaller than what the file would otherwise move: its
//! chunks that the base release lacks, each compressed at [`CHUNK_COST_LEVEL`]. The patch
//! is applied once at the publisher and its result checked chunk by chunk against the
//! manifest, so that a publisher never signs a patch that does not rebuild its file. Its
//! pieces are staged like chunks and committed with the release.
//!
//! # Counterparts
//!
//! The same path, if the base has a file there; otherwise the base file in the same
//! directory whose name is the same once every ASCII digit is taken out (`libssl.so.3.0.20`
//! and `libssl.so.3.0.22`, `typescript-5.5.3.tgz` and `typescript-5.5.4.tgz`), the closest
//! in size if several are. A rename to another name moves as chunks.
//!
//! # Rebuilding
//!
//! [`rebuild`] reads the base file from the store (verifying its chunks), the patch's
//! pieces (verifying each), applies the patch bounded by the manifest's size, and cuts the
//! result at the manifest's chunk boundaries, verifying each chunk by its id. Anything
//! wrong is an error; the caller fetches the file's chunks instead.

use crate::{IngestSession, Store, StoreError};
use chunking::patch::{PatchError, RebuiltMismatch};
use chunking::{ReassembleError, reassemble_file};
use protocol::manifest::{PATCH_BASES_MAX, PATCH_FILE_BYTES_MAX, PATCH_PIECE_BYTES_MAX};
use protocol::{ChunkId, ChunkRef, Entry, EntryKind, FilePatch, Manifest, ReleaseId};
use std::collections::HashSet;

/// The zstd level a file's chunks are compressed at to judge whether a patch pays: the
/// level chunks move at on the wire when they are compressed.
pub const CHUNK_COST_LEVEL: i32 = chunking::compress::WIRE_LEVEL;

/// Why a file was not rebuilt from a patch.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The store does not hold the base release, the base file, or a piece.
    #[error("{0}")]
    Missing(String),
    /// The base file in the store is not the one the patch was made for, or is damaged.
    #[error("base file: {0}")]
    Base(String),
    /// A piece of the patch in the store is damaged.
    #[error("piece: {0}")]
    Piece(String),
    /// The patch does not apply.
    #[error(transparent)]
    Patch(#[from] PatchError),
    /// What it rebuilt is not the file.
    #[error(transparent)]
    Mismatch(#[from] RebuiltMismatch),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`make`] made.
#[derive(Debug, Default)]
pub struct Made {
    /// The patches, sorted by (path, base).
    pub patches: Vec<FilePatch>,
    /// Their bytes.
    pub patch_bytes: u64,
    /// What the patched files would move as compressed chunks, per patch, summed.
    pub chunk_bytes: u64,
}

/// The releases of `channel` below `version` that a release published now may patch from:
/// the newest [`PATCH_BASES_MAX`] the store holds whole, newest first.
pub fn bases(
    store: &Store,
    channel: &str,
    version: u64,
) -> Result<Vec<(ReleaseId, Manifest)>, StoreError> {
    let mut of_channel: Vec<_> = store
        .releases()?
        .into_iter()
        .filter(|r| r.channel == channel && r.version < version)
        .collect();
    of_channel.sort_by_key(|r| std::cmp::Reverse(r.version));
    let mut out = Vec::new();
    for r in of_channel {
        if out.len() == PATCH_BASES_MAX {
            break;
        }
        if let Some(m) = store.manifest(&r.id)? {
            out.push((r.id, m));
        }
    }
    Ok(out)
}

/// `name` without its ASCII digits: what [`counterpart`] matches renamed files by.
fn undigited(name: &str) -> String {
    name.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// The file of `base` that a patch of `path` (of `size` bytes) starts from, if any (see the
/// [module docs](self)): its path, size and chunks.
pub fn counterpart<'a>(
    base: &'a Manifest,
    path: &str,
    size: u64,
) -> Option<(&'a str, u64, &'a [ChunkRef])> {
    if let Some(same) = base.files().find(|(p, _, _)| *p == path) {
        return Some(same);
    }
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let want = undigited(name);
    base.files()
        .filter(|(p, _, _)| {
            let (d, n) = p.rsplit_once('/').unwrap_or(("", p));
            d == dir && n != name && undigited(n) == want
        })
        .min_by_key(|(_, s, _)| s.abs_diff(size))
}

/// Reads `refs` (a file's chunks, or a patch's pieces) from the store into one buffer,
/// checking each one's length and id (`chunking::reassemble_file`).
fn read_all(store: &Store, refs: &[ChunkRef], size: u64) -> Result<Vec<u8>, ReassembleError> {
    let mut out = Vec::with_capacity(size.min(PATCH_FILE_BYTES_MAX) as usize);
    reassemble_file(
        refs,
        |c| {
            store
                .read_chunk(&c.id)
                .map_err(|e| std::io::Error::other(e.to_string()))
        },
        &mut out,
    )?;
    Ok(out)
}

/// Reads file `chunks` from the store, verifying each (at most [`PATCH_FILE_BYTES_MAX`]).
fn read_file(store: &Store, chunks: &[ChunkRef]) -> Result<Vec<u8>, RebuildError> {
    let size: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    if size > PATCH_FILE_BYTES_MAX {
        return Err(RebuildError::Base(format!(
            "{size} bytes, over {PATCH_FILE_BYTES_MAX}"
        )));
    }
    read_all(store, chunks, size).map_err(|e| match e {
        ReassembleError::Missing(id) => RebuildError::Missing(format!("chunk {id} is not stored")),
        other => RebuildError::Base(other.to_string()),
    })
}

/// The bytes a file's chunks that `base_chunks` lack would move, each compressed at
/// [`CHUNK_COST_LEVEL`] (raw where that is smaller).
fn chunk_cost(
    file: &[u8],
    chunks: &[ChunkRef],
    base_chunks: &HashSet<ChunkId>,
) -> Result<u64, PatchError> {
    let mut at = 0usize;
    let mut seen = HashSet::new();
    let mut cost = 0u64;
    for c in chunks {
        let bytes = &file[at..at + c.len as usize];
        at += c.len as usize;
        if base_chunks.contains(&c.id) || !seen.insert(c.id) {
            continue;
        }
        let z = chunking::patch::compressed_len(bytes, CHUNK_COST_LEVEL)?;
        cost += z.min(bytes.len()) as u64;
    }
    Ok(cost)
}

/// Makes the patches of a release whose tree is `entries` from the files of `bases`
/// ([module docs](self)), at zstd `level`, staging their pieces in `session`. `read` gives
/// the bytes of a file of the new tree by path; a file whose bytes are not the ones its
/// chunks name (it changed since it was chunked) gets no patch.
pub fn make(
    session: &mut IngestSession,
    store: &Store,
    entries: &[Entry],
    bases: &[(ReleaseId, Manifest)],
    level: i32,
    mut read: impl FnMut(&str) -> std::io::Result<Vec<u8>>,
) -> Result<Made, StoreError> {
    let mut made = Made::default();
    let base_chunks: Vec<HashSet<ChunkId>> = bases
        .iter()
        .map(|(_, m)| m.unique_chunks().iter().map(|c| c.id).collect())
        .collect();
    for e in entries {
        let EntryKind::File { size, chunks, .. } = &e.kind else {
            continue;
        };
        if *size == 0 || *size > PATCH_FILE_BYTES_MAX {
            continue;
        }
        let mut new: Option<Vec<u8>> = None;
        for ((base_id, base), held) in bases.iter().zip(&base_chunks) {
            let Some((base_path, base_size, from)) = counterpart(base, &e.path, *size) else {
                continue;
            };
            if base_size > PATCH_FILE_BYTES_MAX || chunks.iter().all(|c| held.contains(&c.id)) {
                continue;
            }
            if new.is_none() {
                let Ok(bytes) = read(&e.path) else {
                    break;
                };
                if chunking::patch::cut_and_verify(&bytes, chunks).is_err() {
                    tracing::warn!(path = %e.path, "changed since it was chunked: no patch");
                    break;
                }
                new = Some(bytes);
            }
            let new = new.as_deref().expect("read above");
            let old = match read_file(store, from) {
                Ok(b) => b,
                Err(err) => {
                    tracing::warn!(path = %base_path, base = %base_id, error = %err,
                        "base file unreadable: no patch from it");
                    continue;
                }
            };
            let patched = (|| -> Result<Option<(Vec<u8>, u64)>, PatchError> {
                let cost = chunk_cost(new, chunks, held)?;
                let patch = chunking::patch::make(&old, new, level)?;
                if patch.len() as u64 >= cost.min(*size) {
                    return Ok(None);
                }
                // Never sign a patch that does not rebuild the file.
                let back = chunking::patch::apply(&old, &patch, *size)?;
                if chunking::patch::cut_and_verify(&back, chunks).is_err() {
                    return Err(PatchError::Corrupt("it does not rebuild the file".into()));
                }
                Ok(Some((patch, cost)))
            })();
            let (patch, cost) = match patched {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(path = %e.path, base = %base_id, error = %err, "no patch");
                    continue;
                }
            };
            let mut pieces = Vec::new();
            for piece in patch.chunks(PATCH_PIECE_BYTES_MAX as usize) {
                let id = ChunkId::of(piece);
                session.put_chunk(id, piece)?;
                pieces.push(ChunkRef {
                    id,
                    len: piece.len() as u32,
                });
            }
            made.patch_bytes += patch.len() as u64;
            made.chunk_bytes += cost;
            made.patches.push(FilePatch {
                path: e.path.clone(),
                base: *base_id,
                base_path: base_path.to_owned(),
                base_size,
                pieces,
            });
        }
    }
    made.patches
        .sort_by(|a, b| (&a.path, &a.base).cmp(&(&b.path, &b.base)));
    Ok(made)
}

/// Rebuilds the file `patch` makes, whose chunks are `chunks` (of `size` bytes), from the
/// base file and the patch's pieces in the store: its chunks, verified by their ids, in
/// file order ([module docs](self)).
pub fn rebuild(
    store: &Store,
    patch: &FilePatch,
    size: u64,
    chunks: &[ChunkRef],
) -> Result<Vec<(ChunkId, Vec<u8>)>, RebuildError> {
    let base = store
        .manifest(&patch.base)?
        .ok_or_else(|| RebuildError::Missing(format!("release {} is not stored", patch.base)))?;
    let (_, base_size, from) = base
        .files()
        .find(|(p, _, _)| *p == patch.base_path)
        .ok_or_else(|| RebuildError::Missing(format!("no file {} in the base", patch.base_path)))?;
    if base_size != patch.base_size {
        return Err(RebuildError::Base(format!(
            "{base_size} bytes, the patch was made for {}",
            patch.base_size
        )));
    }
    let old = read_file(store, from)?;
    let bytes = read_all(store, &patch.pieces, patch.bytes()).map_err(|e| match e {
        ReassembleError::Missing(id) => RebuildError::Missing(format!("piece {id} is not stored")),
        other => RebuildError::Piece(other.to_string()),
    })?;
    let new = chunking::patch::apply(&old, &bytes, size)?;
    // The base and the patch go before the chunks are copied out: at most the base, the
    // patch and the rebuilt file are in memory at once.
    drop((old, bytes));
    Ok(chunking::patch::cut_and_verify(&new, chunks)?
        .into_iter()
        .map(|(id, b)| (id, b.to_vec()))
        .collect())
}
