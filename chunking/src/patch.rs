//! Patches between two versions of a file: the new file compressed by zstd with the old one
//! as a referenced prefix (what `zstd --patch-from=OLD NEW` makes), with long-distance
//! matching and a window that covers both, so that a rebuilt binary, which shares few whole
//! chunks with its predecessor but most of its bytes, moves as the bytes that differ.
//!
//! A patch is made at the publisher ([`make`]), where there is memory to spare, and applied
//! on a receiver that holds the old file ([`apply`]), whose memory is bounded by
//! [`PATCH_FILE_BYTES_MAX`]: the old file, the new one and zstd's window are in memory at
//! once, so a file above the bound moves as chunks. [`apply`] never writes more than the size
//! the caller expects (from the signed manifest), so a patch that claims more (a
//! decompression bomb) is refused before anything is allocated for it; what it rebuilds is
//! not trusted either: the caller cuts the result at the manifest's chunk boundaries and
//! verifies every chunk by its BLAKE3 id.

use std::io::{Read, Write};

pub use protocol::manifest::PATCH_FILE_BYTES_MAX;

/// The window a patch may use, as a power of two: it covers the old file and the new one
/// at [`PATCH_FILE_BYTES_MAX`] each. A patch that asks for more is refused when applied.
pub const PATCH_WINDOW_LOG_MAX: u32 = 27;

/// The compression level patches are made at by default. On real version pairs (`benches/
/// delta.sh`) level 19 made patches up to 2.2 × smaller than level 3 (a rebuilt native
/// library), at a cost paid once, at the publisher.
pub const PATCH_LEVEL_DEFAULT: i32 = 19;

/// The smallest window zstd takes, as a power of two.
const WINDOW_LOG_MIN: u32 = 10;

const _: () = assert!(PATCH_FILE_BYTES_MAX * 2 <= 1 << PATCH_WINDOW_LOG_MAX);

/// Why a patch was not made or not applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// A file is over [`PATCH_FILE_BYTES_MAX`].
    #[error("{what} is {len} bytes, over the {PATCH_FILE_BYTES_MAX} a patch covers")]
    TooLarge {
        /// Which file.
        what: &'static str,
        /// Its size.
        len: u64,
    },
    /// The patch does not decode against this base (damaged, or made for another base).
    #[error("patch does not apply: {0}")]
    Corrupt(String),
    /// The patch rebuilds another size than the file's.
    #[error("patch rebuilds {found} bytes or more, not the file's {expected}")]
    WrongSize {
        /// The size expected.
        expected: u64,
        /// What it rebuilt (at most one more than expected: it is cut there).
        found: u64,
    },
    /// zstd refused a parameter (not expected with the values used here).
    #[error("zstd: {0}")]
    Zstd(String),
}

fn zstd_err(e: std::io::Error) -> PatchError {
    PatchError::Zstd(e.to_string())
}

/// The window log that covers `base` and `new` back to back.
fn window_log(base: usize, new: usize) -> u32 {
    let span = (base + new).max(1) as u64;
    (u64::BITS - (span - 1).leading_zeros()).clamp(WINDOW_LOG_MIN, PATCH_WINDOW_LOG_MAX)
}

/// A patch that rebuilds `new` from `base` ([module docs](self)), at zstd `level`.
pub fn make(base: &[u8], new: &[u8], level: i32) -> Result<Vec<u8>, PatchError> {
    for (what, len) in [("the old file", base.len()), ("the new file", new.len())] {
        if len as u64 > PATCH_FILE_BYTES_MAX {
            return Err(PatchError::TooLarge {
                what,
                len: len as u64,
            });
        }
    }
    let mut out = Vec::with_capacity(new.len() / 8 + 64);
    let mut enc =
        zstd::stream::write::Encoder::with_ref_prefix(&mut out, level, base).map_err(zstd_err)?;
    enc.window_log(window_log(base.len(), new.len()))
        .map_err(zstd_err)?;
    enc.long_distance_matching(true).map_err(zstd_err)?;
    enc.include_contentsize(true).map_err(zstd_err)?;
    enc.set_pledged_src_size(Some(new.len() as u64))
        .map_err(zstd_err)?;
    enc.write_all(new).map_err(zstd_err)?;
    enc.finish().map_err(zstd_err)?;
    Ok(out)
}

/// The file `patch` rebuilds from `base`, which must be `size` bytes (the manifest's);
/// nothing beyond `size` is ever written. The result is not verified here: the caller checks
/// its chunks' ids.
pub fn apply(base: &[u8], patch: &[u8], size: u64) -> Result<Vec<u8>, PatchError> {
    if size > PATCH_FILE_BYTES_MAX {
        return Err(PatchError::TooLarge {
            what: "the new file",
            len: size,
        });
    }
    if base.len() as u64 > PATCH_FILE_BYTES_MAX {
        return Err(PatchError::TooLarge {
            what: "the old file",
            len: base.len() as u64,
        });
    }
    let mut dec = zstd::stream::read::Decoder::with_ref_prefix(patch, base)
        .map_err(|e| PatchError::Corrupt(e.to_string()))?;
    dec.window_log_max(PATCH_WINDOW_LOG_MAX).map_err(zstd_err)?;
    let mut out = Vec::with_capacity(size as usize);
    // One byte more than expected tells a patch that rebuilds too much.
    dec.take(size + 1)
        .read_to_end(&mut out)
        .map_err(|e| PatchError::Corrupt(e.to_string()))?;
    if out.len() as u64 != size {
        return Err(PatchError::WrongSize {
            expected: size,
            found: out.len() as u64,
        });
    }
    Ok(out)
}

/// The length of `data` compressed by zstd at `level`: what it would move compressed.
pub fn compressed_len(data: &[u8], level: i32) -> Result<usize, PatchError> {
    zstd::bulk::compress(data, level)
        .map(|z| z.len())
        .map_err(zstd_err)
}

/// A rebuilt file that does not match its manifest ([`cut_and_verify`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuiltMismatch {
    /// Its length is not the sum of its chunks'.
    #[error("rebuilt file is {found} bytes, its chunks add up to {expected}")]
    Length {
        /// The chunks' sum.
        expected: u64,
        /// The rebuilt file's.
        found: u64,
    },
    /// A chunk's bytes do not hash to its id.
    #[error("chunk {index} of the rebuilt file does not match its id {id}")]
    Chunk {
        /// Its position in the file.
        index: usize,
        /// The id the manifest gives.
        id: protocol::ChunkId,
    },
}

/// Cuts a rebuilt file at its manifest's chunk boundaries and checks every chunk's BLAKE3
/// id: the slices to store, in file order, or the first mismatch (then the file's chunks
/// are fetched instead, and the peer that served the patch is struck).
pub fn cut_and_verify<'a>(
    rebuilt: &'a [u8],
    chunks: &[protocol::ChunkRef],
) -> Result<Vec<(protocol::ChunkId, &'a [u8])>, RebuiltMismatch> {
    let expected: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    if expected != rebuilt.len() as u64 {
        return Err(RebuiltMismatch::Length {
            expected,
            found: rebuilt.len() as u64,
        });
    }
    let mut at = 0usize;
    let mut out = Vec::with_capacity(chunks.len());
    for (index, c) in chunks.iter().enumerate() {
        let bytes = &rebuilt[at..at + c.len as usize];
        if blake3::hash(bytes).as_bytes() != &c.id.0 {
            return Err(RebuiltMismatch::Chunk { index, id: c.id });
        }
        out.push((c.id, bytes));
        at += c.len as usize;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    /// A "rebuilt" version: a few bytes changed throughout, a block inserted near the start
    /// (which shifts every later byte, so no fixed-size or content-defined chunk after it
    /// need match), and a tail cut.
    fn rebuilt(old: &[u8]) -> Vec<u8> {
        let mut new = old[..1000].to_vec();
        new.extend_from_slice(&random(3000, 99));
        new.extend_from_slice(&old[1000..old.len() - 5000]);
        for i in (0..new.len()).step_by(100_000) {
            new[i] ^= 0x5a;
        }
        new
    }

    #[test]
    fn a_patch_rebuilds_the_new_file_from_the_old_in_a_fraction_of_its_size() {
        let old = random(4 << 20, 1);
        let new = rebuilt(&old);
        let patch = make(&old, &new, PATCH_LEVEL_DEFAULT).unwrap();
        assert!(
            patch.len() < 8 << 10,
            "{} bytes of patch for {} bytes",
            patch.len(),
            new.len()
        );
        assert_eq!(apply(&old, &patch, new.len() as u64).unwrap(), new);
        // A file with no counterpart (an empty base) still round-trips.
        let alone = make(&[], &new, 3).unwrap();
        assert_eq!(apply(&[], &alone, new.len() as u64).unwrap(), new);
    }

    #[test]
    fn a_patch_for_another_base_or_damaged_or_of_another_size_is_refused_or_caught() {
        let old = random(1 << 20, 2);
        let new = rebuilt(&old);
        let patch = make(&old, &new, 3).unwrap();
        // Another base: either refused or different bytes, which the chunk ids catch.
        let other = random(1 << 20, 3);
        match apply(&other, &patch, new.len() as u64) {
            Ok(bytes) => assert_ne!(bytes, new),
            Err(PatchError::Corrupt(_) | PatchError::WrongSize { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        // Damaged: refused, never a panic.
        let mut damaged = patch.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0xff;
        damaged.truncate(damaged.len() - 7);
        assert!(apply(&old, &damaged, new.len() as u64).is_err());
        assert!(apply(&old, &[0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff], 10).is_err());
        // A size other than what it rebuilds.
        assert!(matches!(
            apply(&old, &patch, new.len() as u64 - 1),
            Err(PatchError::WrongSize { found, .. }) if found == new.len() as u64
        ));
        assert!(matches!(
            apply(&old, &patch, new.len() as u64 + 1),
            Err(PatchError::WrongSize { .. })
        ));
    }

    #[test]
    fn a_bomb_is_cut_at_the_expected_size_and_files_over_the_bound_are_refused() {
        // 64 MiB of zeros compress to a few KiB: expected to be 1 KiB, it is cut there.
        let zeros = vec![0u8; 64 << 20];
        let bomb = make(&[], &zeros, 3).unwrap();
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(
            apply(&[], &bomb, 1024),
            Err(PatchError::WrongSize {
                expected: 1024,
                found: 1025
            })
        ));
        let over = PATCH_FILE_BYTES_MAX + 1;
        assert!(matches!(
            apply(&[], &bomb, over),
            Err(PatchError::TooLarge { .. })
        ));
        let big = vec![0u8; over as usize];
        assert!(matches!(
            make(&big, &[], 3),
            Err(PatchError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_rebuilt_file_is_cut_at_its_chunks_and_each_is_verified() {
        let file = random(300_000, 4);
        let cuts = [0usize, 70_000, 190_000, 300_000];
        let chunks: Vec<protocol::ChunkRef> = cuts
            .windows(2)
            .map(|w| protocol::ChunkRef {
                id: protocol::ChunkId(*blake3::hash(&file[w[0]..w[1]]).as_bytes()),
                len: (w[1] - w[0]) as u32,
            })
            .collect();
        let cut = cut_and_verify(&file, &chunks).unwrap();
        assert_eq!(cut.len(), 3);
        assert_eq!(cut[1].1, &file[70_000..190_000]);
        let mut wrong = file.clone();
        wrong[200_000] ^= 1;
        assert_eq!(
            cut_and_verify(&wrong, &chunks),
            Err(RebuiltMismatch::Chunk {
                index: 2,
                id: chunks[2].id
            })
        );
        assert!(matches!(
            cut_and_verify(&file[..299_999], &chunks),
            Err(RebuiltMismatch::Length { .. })
        ));
    }

    #[test]
    fn the_window_covers_both_files_within_its_bounds() {
        assert_eq!(window_log(0, 0), WINDOW_LOG_MIN);
        assert_eq!(window_log(1 << 20, 1 << 20), 21);
        assert_eq!(window_log((1 << 20) + 1, 1 << 20), 22);
        assert_eq!(
            window_log(PATCH_FILE_BYTES_MAX as usize, PATCH_FILE_BYTES_MAX as usize),
            PATCH_WINDOW_LOG_MAX
        );
    }
}
