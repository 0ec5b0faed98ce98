//! Which of a release's patches a node fetches: the decision the daemon and the simulator
//! both take, from what the node holds.
//!
//! A release's units are its distinct chunks, then the distinct pieces of its patches
//! ([`protocol::Manifest::units`]). For each file with patches, a node that holds the base
//! file of one of them fetches the smallest such patch instead of the file's chunks it
//! lacks, when the patch is smaller than those chunks; it then rebuilds the file and
//! verifies every chunk ([`crate::fetch::Fetch::use_patches`] drives it). Pieces of patches
//! it does not use are never fetched: they are not needed to complete the release.

use protocol::wire::Bitmap;
use protocol::{ChunkId, FilePatch, Manifest};
use std::collections::{HashMap, HashSet};

/// A patch a node fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Its index in the manifest's patches.
    pub patch: usize,
    /// The units of its pieces, in order.
    pub pieces: Vec<u32>,
    /// The units of the file's chunks it stands for: those the node lacks and no file
    /// fetched as chunks needs too.
    pub covers: Vec<u32>,
}

/// The patches node should fetch, given the release's `manifest`, the units it holds
/// (`have`, numbered as [`Manifest::units`]), and whether it holds a patch's base file
/// whole (`holds_base`). At most one per file; a file whose chunks are all held needs none.
pub fn choose(
    manifest: &Manifest,
    have: &Bitmap,
    mut holds_base: impl FnMut(&FilePatch) -> bool,
) -> Vec<Chosen> {
    if manifest.patches.is_empty() {
        return Vec::new();
    }
    let units = manifest.units();
    let index: HashMap<ChunkId, u32> = units
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, i as u32))
        .collect();
    let held = |id: &ChunkId| index.get(id).is_some_and(|&i| have.get(i));
    let files: HashMap<&str, &[protocol::ChunkRef]> =
        manifest.files().map(|(p, _, c)| (p, c)).collect();
    // Per file, the smallest patch whose base is held, if it beats the chunks lacked.
    let mut picked: Vec<(usize, &str)> = Vec::new();
    let mut i = 0;
    while i < manifest.patches.len() {
        let path = manifest.patches[i].path.as_str();
        let mut best: Option<usize> = None;
        while i < manifest.patches.len() && manifest.patches[i].path == path {
            let p = &manifest.patches[i];
            if best.is_none_or(|b| p.bytes() < manifest.patches[b].bytes()) && holds_base(p) {
                best = Some(i);
            }
            i += 1;
        }
        let Some(b) = best else { continue };
        let lacked: u64 = files.get(path).map_or(0, |chunks| {
            let mut seen = HashSet::new();
            chunks
                .iter()
                .filter(|c| !held(&c.id) && seen.insert(c.id))
                .map(|c| u64::from(c.len))
                .sum()
        });
        if manifest.patches[b].bytes() < lacked {
            picked.push((b, path));
        }
    }
    if picked.is_empty() {
        return Vec::new();
    }
    // Chunks of files fetched as chunks are fetched whatever a patch would rebuild.
    let patched: HashSet<&str> = picked.iter().map(|(_, p)| *p).collect();
    let needed: HashSet<ChunkId> = manifest
        .files()
        .filter(|(p, _, _)| !patched.contains(p))
        .flat_map(|(_, _, c)| c.iter().map(|c| c.id))
        .collect();
    picked
        .into_iter()
        .filter_map(|(k, path)| {
            let mut covers: Vec<u32> = files[path]
                .iter()
                .filter(|c| !held(&c.id) && !needed.contains(&c.id))
                .map(|c| index[&c.id])
                .collect();
            covers.sort_unstable();
            covers.dedup();
            // What it stands for once the shared chunks are counted out must still beat it.
            let covered: u64 = covers
                .iter()
                .map(|&i| u64::from(units[i as usize].len))
                .sum();
            (manifest.patches[k].bytes() < covered).then(|| Chosen {
                patch: k,
                pieces: manifest.patches[k]
                    .pieces
                    .iter()
                    .map(|c| index[&c.id])
                    .collect(),
                covers,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ChunkRef, Entry, EntryKind, ReleaseId};

    fn c(seed: u8, len: u32) -> ChunkRef {
        ChunkRef {
            id: ChunkId::of(&[seed]),
            len,
        }
    }

    fn file(path: &str, chunks: Vec<ChunkRef>) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                mode: 0o644,
                size: chunks.iter().map(|c| u64::from(c.len)).sum(),
                chunks,
            },
        }
    }

    fn patch(path: &str, base: u8, pieces: Vec<ChunkRef>) -> FilePatch {
        FilePatch {
            path: path.into(),
            base: ReleaseId([base; 32]),
            base_path: path.into(),
            base_size: 1,
            pieces,
        }
    }

    /// Files a (chunks 1, 2, 3), b (chunks 3, 4) and c (chunk 5); patches of a from bases 1
    /// and 2, of b from base 1, of c from base 2 (as large as its chunk).
    fn manifest() -> Manifest {
        Manifest {
            format_version: protocol::MANIFEST_FORMAT_VERSION,
            channel: "c".into(),
            version: 3,
            created_unix_s: 0,
            expires_unix_s: 1,
            severity: protocol::Severity::Low,
            cvss: None,
            emergency: false,
            download_windows: vec![],
            install_windows: vec![],
            chunking: Default::default(),
            entries: vec![
                file("a", vec![c(1, 100), c(2, 100), c(3, 100)]),
                file("b", vec![c(3, 100), c(4, 100)]),
                file("c", vec![c(5, 100)]),
            ],
            total_bytes: 600,
            rollout: Default::default(),
            patches: vec![
                patch("a", 1, vec![c(10, 30)]),
                patch("a", 2, vec![c(11, 20)]),
                patch("b", 1, vec![c(12, 10)]),
                patch("c", 2, vec![c(13, 100)]),
            ],
        }
    }

    #[test]
    fn a_node_takes_the_smallest_patch_whose_base_it_holds_when_it_saves_bytes() {
        let m = manifest();
        // Units: chunks 1..5 at 0..5, pieces 10..13 at 5..9.
        assert_eq!(m.units().len(), 9);
        let none = Bitmap::new(9);
        // Both bases held: the smaller patch of a (base 2), b's, and not c's (no saving).
        let all = choose(&m, &none, |_| true);
        assert_eq!(
            all,
            [
                Chosen {
                    patch: 1,
                    pieces: vec![6],
                    covers: vec![0, 1, 2],
                },
                Chosen {
                    patch: 2,
                    pieces: vec![7],
                    covers: vec![2, 3],
                },
            ]
        );
        // Base 1 only: a's larger patch.
        let one = choose(&m, &none, |p| p.base == ReleaseId([1; 32]));
        assert_eq!(one[0].patch, 0);
        assert_eq!(one[0].pieces, [5]);
        // No base: chunks.
        assert!(choose(&m, &none, |_| false).is_empty());
    }

    #[test]
    fn chunks_held_or_needed_elsewhere_are_not_left_to_a_patch() {
        let m = manifest();
        // Chunk 1 held: a lacks chunks 2 and 3, and b is fetched as chunks (no base for
        // it), so chunk 3 is not left to a's patch, which stands for chunk 2 alone.
        let mut have = Bitmap::new(9);
        have.set(0);
        let chosen = choose(&m, &have, |p| p.path == "a");
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].covers, [1]);
        // Chunk 2 held too: a's patch would stand for nothing b does not fetch anyway.
        have.set(1);
        assert!(choose(&m, &have, |p| p.path == "a").is_empty());
        // Every chunk of a held: no patch of it.
        have.set(2);
        assert!(choose(&m, &have, |p| p.path == "a").is_empty());
    }
}
