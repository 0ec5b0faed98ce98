//! Retention: removing releases and reclaiming the chunks only they referenced.
//!
//! [`Store::remove_release`] drops a release's manifest and summary (its activation record
//! stays, as history), audited `release_removed`; its chunks stay until [`Store::compact`].
//! A chunk (or a piece of a patch) is live while a stored release (held ones included) or a
//! release being fetched (`pending_releases`) names it.
//!
//! Compaction rewrites each pack that holds dead chunks: the live records are copied into a
//! new pack, which is fsynced (with its directory) before one redb transaction points the
//! live chunks at their new places, forgets the dead ones and drops the old pack from the
//! catalog; only then is the old file deleted. A crash at any instant leaves either the old
//! pack named and the new one not (the next open deletes the new file), or the new one
//! named and the old one not (the next open deletes the old file): never a chunk that the
//! index points at and the disk lacks. The live set is read again inside the transaction,
//! so a release that started fetching meanwhile keeps what it names; a pack whose live set
//! grew is left for the next run.
//!
//! Packs a session is writing are never touched: compaction takes the idle packs out of the
//! pool while it runs and skips the others that still have room. A reader that located a
//! chunk in a pack since deleted finds it again at its new place ([`Store::read_located`]);
//! one that already opened the old pack reads it through its handle.
//!
//! What is not protected: a publish staged (chunked, not yet signed) that found one of its
//! chunks already stored, when that chunk dies and is compacted before the signed commit:
//! the commit then fails with a missing chunk and nothing is stored; publish again.

use crate::audit::AuditEvent;
use crate::{
    CHUNKS, HELD, Location, PACK_BYTES_MAX, PACKS, PENDING, RECORD_HEADER_BYTES, RECORD_MAGIC,
    RELEASES, SUMMARIES, Store, StoreError, append_audit_in, sync_dir,
};
use protocol::{ChunkId, ReleaseId};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

/// Longest run of adjacent live records copied by one call: the kernel copies it without
/// bringing the bytes into this process (`copy_file_range`).
const COPY_RUN_BYTES_MAX: u64 = 64 << 20;

/// Buffer of the copy where the kernel cannot copy between the files itself.
const COPY_BUFFER_BYTES: usize = 8 << 20;

/// Copies `len` bytes at `from` in `src` to `at` in `dst`: in the kernel where it can
/// (`copy_file_range`), else through a buffer.
fn copy_range(
    src: &std::fs::File,
    mut from: u64,
    dst: &mut std::fs::File,
    mut at: u64,
    mut len: u64,
) -> std::io::Result<()> {
    while len > 0 {
        let want = len.min(COPY_RUN_BYTES_MAX) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut from), &*dst, Some(&mut at), want) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the pack ended before its records",
                ));
            }
            Ok(n) => len -= n as u64,
            Err(_) => break,
        }
    }
    let mut buf = vec![0u8; COPY_BUFFER_BYTES.min(len as usize)];
    while len > 0 {
        let n = (len as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], from)?;
        dst.write_all_at(&buf[..n], at)?;
        (from, at, len) = (from + n as u64, at + n as u64, len - n as u64);
    }
    Ok(())
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reclaimed {
    /// Packs rewritten.
    pub packs_rewritten: u64,
    /// Chunks forgotten (no release names them).
    pub chunks_removed: u64,
    /// Their bytes (record headers included): what the disk got back.
    pub bytes_reclaimed: u64,
    /// Bytes of live records copied into new packs.
    pub bytes_copied: u64,
    /// Committed pack bytes before and after.
    pub pack_bytes_before: u64,
    /// See `pack_bytes_before`.
    pub pack_bytes_after: u64,
}

/// The releases `[store] keep_versions` removes: of each channel, those below its `keep`
/// newest stored versions, except the `protected` ones (held for approval, the version
/// installed here, any still to install). `keep` 0 keeps everything.
pub fn beyond_keep(
    releases: &[crate::ReleaseSummary],
    keep: usize,
    protected: &HashSet<ReleaseId>,
) -> Vec<ReleaseId> {
    if keep == 0 {
        return Vec::new();
    }
    let mut by_channel: HashMap<&str, Vec<&crate::ReleaseSummary>> = HashMap::new();
    for r in releases {
        by_channel.entry(r.channel.as_str()).or_default().push(r);
    }
    let mut out = Vec::new();
    for list in by_channel.values_mut() {
        list.sort_by_key(|r| std::cmp::Reverse(r.version));
        out.extend(
            list.iter()
                .skip(keep)
                .filter(|r| !protected.contains(&r.id))
                .map(|r| r.id),
        );
    }
    out.sort_unstable();
    out
}

impl Store {
    /// Removes release `id`: its manifest and summary (and a held copy, a pending fetch),
    /// audited `release_removed`. False if the store has no such release. Its chunks are
    /// reclaimed by [`Store::compact`].
    pub fn remove_release(&self, id: &ReleaseId) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = {
            let summary = txn
                .open_table(SUMMARIES)?
                .remove(id.as_bytes())?
                .map(|v| v.value().to_vec());
            let found = txn.open_table(RELEASES)?.remove(id.as_bytes())?.is_some();
            txn.open_table(HELD)?.remove(id.as_bytes())?;
            let pending = txn.open_table(PENDING)?.remove(id.as_bytes())?.is_some();
            let (channel, version) = summary
                .and_then(|b| crate::ReleaseSummary::decode(&b).ok())
                .map(|s| (s.channel, s.version))
                .unwrap_or_default();
            if found || pending {
                append_audit_in(
                    &txn,
                    AuditEvent::ReleaseRemoved {
                        release: id.to_hex(),
                        channel,
                        version,
                    },
                )?;
            }
            found || pending
        };
        txn.commit()?;
        Ok(removed)
    }

    /// The chunks the releases of `tables` (the stored and the pending ones) name.
    fn live_chunks(
        tables: [impl ReadableTable<&'static [u8; 32], &'static [u8]>; 2],
    ) -> Result<HashSet<ChunkId>, StoreError> {
        let mut live = HashSet::new();
        for table in &tables {
            for row in table.iter()? {
                let (_, envelope) = row?;
                let m = crate::manifest_of_envelope(envelope.value())
                    .map_err(|e| StoreError::Damaged(format!("a stored release: {e}")))?;
                for (_, _, chunks) in m.files() {
                    live.extend(chunks.iter().map(|c| c.id));
                }
                // The pieces of its patches: peers that hold the base files fetch them.
                for p in &m.patches {
                    live.extend(p.pieces.iter().map(|c| c.id));
                }
            }
        }
        Ok(live)
    }

    /// Reclaims the chunks no stored or pending release names ([module docs](self)).
    /// Blocking; one compaction at a time.
    pub fn compact(&self) -> Result<Reclaimed, StoreError> {
        let _one = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        // The packs no session writes: the idle ones (taken out of the pool meanwhile) and
        // the full ones.
        let idle: Vec<(u32, u64)> = std::mem::take(&mut *lock(&self.idle_packs));
        let mut rewritten = Vec::new();
        let result = self.compact_packs(&idle, &mut rewritten);
        // Whatever was not rewritten goes back to the pool (a pack rewritten before an error
        // is gone, and never goes back).
        for (p, len) in idle {
            if !rewritten.contains(&p) {
                self.release_pack(p, len);
            }
        }
        result
    }

    /// Rewrites the packs with dead chunks among `idle` and the full ones, noting each one
    /// rewritten in `done` as soon as its transaction committed.
    fn compact_packs(
        &self,
        idle: &[(u32, u64)],
        done: &mut Vec<u32>,
    ) -> Result<Reclaimed, StoreError> {
        let mut out = Reclaimed::default();
        // What is stored: every chunk by pack, every pack's length, the live set.
        let (by_pack, lens, live) = {
            let read = self.db.begin_read()?;
            let mut by_pack: HashMap<u32, Vec<(ChunkId, Location)>> = HashMap::new();
            for row in read.open_table(CHUNKS)?.iter()? {
                let (k, v) = row?;
                let loc = Location::decode(v.value());
                by_pack
                    .entry(loc.pack)
                    .or_default()
                    .push((ChunkId(*k.value()), loc));
            }
            let mut lens = HashMap::new();
            for row in read.open_table(PACKS)?.iter()? {
                let (k, v) = row?;
                lens.insert(k.value(), v.value());
            }
            let live = Self::live_chunks([read.open_table(RELEASES)?, read.open_table(PENDING)?])?;
            (by_pack, lens, live)
        };
        out.pack_bytes_before = lens.values().sum();
        out.pack_bytes_after = out.pack_bytes_before;
        let idle: HashMap<u32, u64> = idle.iter().copied().collect();
        let mut candidates: Vec<u32> = lens
            .iter()
            .filter(|&(p, &len)| idle.get(p) == Some(&len) || len >= PACK_BYTES_MAX)
            .map(|(&p, _)| p)
            .collect();
        candidates.sort_unstable();
        for pack in candidates {
            let chunks = by_pack.get(&pack).map(Vec::as_slice).unwrap_or_default();
            let dead: Vec<&(ChunkId, Location)> =
                chunks.iter().filter(|(id, _)| !live.contains(id)).collect();
            let len = lens[&pack];
            let live_bytes: u64 = chunks
                .iter()
                .filter(|(id, _)| live.contains(id))
                .map(|(_, l)| RECORD_HEADER_BYTES + u64::from(l.len))
                .sum();
            // Nothing dead, and no bytes that no chunk accounts for: nothing to gain.
            if dead.is_empty() && live_bytes == len {
                continue;
            }
            if let Some(r) = self.rewrite(pack, len, chunks, &live)? {
                out.packs_rewritten += 1;
                out.chunks_removed += r.0;
                out.bytes_copied += r.1;
                out.bytes_reclaimed += len - r.1;
                out.pack_bytes_after = out.pack_bytes_after - len + r.1;
                done.push(pack);
            }
        }
        Ok(out)
    }

    /// Copies `pack`'s live records into a new pack and switches the index to it. Returns
    /// (chunks removed, bytes copied), or `None` if the live set grew meanwhile (the pack is
    /// left as it was).
    fn rewrite(
        &self,
        pack: u32,
        len: u64,
        chunks: &[(ChunkId, Location)],
        live: &HashSet<ChunkId>,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let mut keep: Vec<(ChunkId, Location)> = chunks
            .iter()
            .filter(|(id, _)| live.contains(id))
            .copied()
            .collect();
        keep.sort_unstable_by_key(|(_, l)| l.offset);
        let old = self.reader(pack)?;
        let (new_pack, new_path) = if keep.is_empty() {
            (None, None)
        } else {
            let number = {
                let mut last = lock(&self.last_pack);
                *last += 1;
                *last
            };
            (Some(number), Some(self.pack_path(number)))
        };
        let mut moved: Vec<(ChunkId, Location)> = Vec::with_capacity(keep.len());
        let mut copied = 0u64;
        if let (Some(number), Some(path)) = (new_pack, &new_path) {
            let mut file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(path)
                .map_err(|e| StoreError::io(path, e))?;
            let mut header = [0u8; RECORD_HEADER_BYTES as usize];
            let mut k = 0;
            while k < keep.len() {
                // A run of adjacent records, copied at once.
                let start = keep[k].1.offset - RECORD_HEADER_BYTES;
                let mut end = keep[k].1.offset + u64::from(keep[k].1.len);
                let mut j = k + 1;
                while j < keep.len() {
                    let s = keep[j].1.offset - RECORD_HEADER_BYTES;
                    let e = keep[j].1.offset + u64::from(keep[j].1.len);
                    if s != end || e - start > COPY_RUN_BYTES_MAX {
                        break;
                    }
                    end = e;
                    j += 1;
                }
                // Each record's header must be its chunk's; the bytes are verified against
                // the id on every read, as before the copy (hashing them here too would
                // halve the copy's speed and change nothing: a damaged chunk reads as
                // damaged either way).
                for (id, loc) in &keep[k..j] {
                    old.read_exact_at(&mut header, loc.offset - RECORD_HEADER_BYTES)
                        .map_err(|e| StoreError::io(&self.pack_path(pack), e))?;
                    if &header[..4] != RECORD_MAGIC
                        || header[4..36] != id.0
                        || header[36..40] != loc.len.to_le_bytes()
                    {
                        return Err(StoreError::Damaged(format!(
                            "pack {pack}: the record of chunk {id} has a wrong header"
                        )));
                    }
                    moved.push((
                        *id,
                        Location {
                            pack: number,
                            offset: copied + (loc.offset - start),
                            len: loc.len,
                        },
                    ));
                }
                copy_range(&old, start, &mut file, copied, end - start)
                    .map_err(|e| StoreError::io(path, e))?;
                copied += end - start;
                k = j;
            }
            file.sync_data().map_err(|e| StoreError::io(path, e))?;
            sync_dir(&self.packs_dir)?;
        }
        // One transaction: the live set read again, the index switched, the old pack gone.
        let txn = self.db.begin_write()?;
        let removed;
        {
            let live_now =
                Self::live_chunks([txn.open_table(RELEASES)?, txn.open_table(PENDING)?])?;
            if chunks
                .iter()
                .any(|(id, _)| live_now.contains(id) && !live.contains(id))
            {
                drop(txn);
                if let Some(path) = &new_path {
                    let _ = fs::remove_file(path);
                }
                return Ok(None);
            }
            let mut index = txn.open_table(CHUNKS)?;
            for (id, loc) in &moved {
                index.insert(id.as_bytes(), &loc.encode())?;
            }
            let mut n = 0;
            for (id, loc) in chunks {
                if !live.contains(id) {
                    // Only if it still points into this pack.
                    let here = index
                        .get(id.as_bytes())?
                        .is_some_and(|v| Location::decode(v.value()).pack == loc.pack);
                    if here {
                        index.remove(id.as_bytes())?;
                        n += 1;
                    }
                }
            }
            removed = n;
            let mut packs = txn.open_table(PACKS)?;
            packs.remove(pack)?;
            if let Some(number) = new_pack {
                packs.insert(number, copied)?;
            }
        }
        txn.commit()?;
        // The catalog no longer names the old pack: the next open deletes it if this fails.
        let old_path = self.pack_path(pack);
        lock(&self.readers).remove(&pack);
        drop(old);
        if let Err(e) = fs::remove_file(&old_path) {
            tracing::warn!(pack = %old_path.display(), error = %e,
                "old pack not deleted; the next start deletes it");
        } else if let Err(e) = sync_dir(&self.packs_dir) {
            tracing::warn!(error = %e, "packs directory not synced after a deletion");
        }
        if let Some(number) = new_pack {
            self.release_pack(number, copied);
        }
        tracing::info!(pack, new_pack = ?new_pack, removed, copied, reclaimed = len - copied,
            "pack compacted");
        Ok(Some((removed, copied)))
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
