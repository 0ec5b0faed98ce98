//! Chunks compressed for the wire: zstd at [`WIRE_LEVEL`], each chunk a frame of its own, and
//! the bounded decompression a receiver runs before it checks the chunk's id.
//!
//! A chunk moves compressed only where that saves at least one [`SAVING_DIVISOR`]th of its
//! bytes ([`compress`] answers `None` otherwise): already compressed data (archives,
//! packed installers, signed binaries with compressed sections) moves raw, and costs the
//! sender one failed attempt, which zstd makes at about 2 GB/s on incompressible input.
//!
//! The level is measured: on the typescript 5.5.4 tree's largest file cut into 64 KiB chunks,
//! level 1 makes 4.49 × at about 220 MB/s, level 3 4.77 × at about 180 MB/s (one core of the
//! development machine, `zstd -b1 -e3 -B65536`). Both are ten times what a branch WAN link
//! carries, and a server compresses a chunk once for every site it sends it to, so the
//! smaller output wins. The publisher prices a file's chunks at the same level when it
//! decides whether a patch pays (`store::patch`).

/// zstd level of chunks on the wire.
pub const WIRE_LEVEL: i32 = 3;

/// A chunk moves compressed only when that saves at least `len / SAVING_DIVISOR` bytes
/// (6.25 %): below it, the receiver's decompression costs more than the link saves.
pub const SAVING_DIVISOR: usize = 16;

/// Why a compressed chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The frame does not state its size, or states another than the one announced.
    #[error("compressed chunk states {stated:?} bytes, {expected} were announced")]
    WrongStatedSize {
        /// What the frame header says (`None`: nothing, or not a zstd frame).
        stated: Option<u64>,
        /// What the reply announced (and the manifest says).
        expected: usize,
    },
    /// Decompression failed or would pass the announced size (a bomb).
    #[error("compressed chunk does not decompress within {expected} bytes: {why}")]
    Corrupt {
        /// The announced size.
        expected: usize,
        /// zstd's word.
        why: String,
    },
    /// It decompressed to fewer bytes than announced.
    #[error("compressed chunk decompressed to {found} bytes, {expected} were announced")]
    Short {
        /// The announced size.
        expected: usize,
        /// What came out.
        found: usize,
    },
}

/// Whether `raw` bytes that compress to `compressed` move compressed: when that saves a
/// [`SAVING_DIVISOR`]th of them.
pub fn pays(raw: usize, compressed: usize) -> bool {
    compressed + raw / SAVING_DIVISOR <= raw
}

/// Compression (and decompression) contexts there are at most, each made once and reused:
/// enough for the serving threads of a 2-core node, and a bound on what they hold (about a
/// megabyte each at level 3). A caller past it waits for one: made by whichever of a
/// hundred blocking threads asked first, contexts would otherwise be allocated in as many
/// of the C allocator's per-thread arenas, which keep the memory once freed (an origin that
/// compressed 16,384 chunks stayed 14 MiB larger).
pub const CONTEXTS_KEPT: usize = 4;

/// At most [`CONTEXTS_KEPT`] contexts, made on first need and handed out in turn: a fresh
/// one per chunk would allocate and clear zstd's tables for every 64 KiB compressed, which
/// costs about what compressing it does.
struct Pool<T> {
    free: std::sync::Mutex<(Vec<T>, usize)>,
    returned: std::sync::Condvar,
}

impl<T> Pool<T> {
    const fn new() -> Self {
        Self {
            free: std::sync::Mutex::new((Vec::new(), 0)),
            returned: std::sync::Condvar::new(),
        }
    }

    /// Runs `f` with a context of the pool, made by `make` while fewer than
    /// [`CONTEXTS_KEPT`] exist, else waited for.
    fn with<R>(
        &self,
        make: impl FnOnce() -> std::io::Result<T>,
        f: impl FnOnce(&mut T) -> R,
    ) -> std::io::Result<R> {
        let lock = || self.free.lock().unwrap_or_else(|e| e.into_inner());
        let mut free = lock();
        let taken = loop {
            if let Some(c) = free.0.pop() {
                break Some(c);
            }
            if free.1 < CONTEXTS_KEPT {
                free.1 += 1;
                break None;
            }
            free = self.returned.wait(free).unwrap_or_else(|e| e.into_inner());
        };
        drop(free);
        let mut ctx = match taken {
            Some(c) => c,
            None => match make() {
                Ok(c) => c,
                Err(e) => {
                    lock().1 -= 1;
                    self.returned.notify_one();
                    return Err(e);
                }
            },
        };
        let r = f(&mut ctx);
        lock().0.push(ctx);
        self.returned.notify_one();
        Ok(r)
    }
}

/// The largest output buffer a pooled compression context keeps between chunks (a 64 KiB
/// chunk's bound is a little more): a larger one, for a chunk of megabytes, is let go.
pub const BUFFER_KEPT_BYTES: usize = 256 << 10;

/// A compression context with the buffer it writes into, so that a chunk that does not
/// shrink costs no allocation at all.
static COMPRESSORS: Pool<(zstd::bulk::Compressor<'static>, Vec<u8>)> = Pool::new();
static DECOMPRESSORS: Pool<zstd::bulk::Decompressor<'static>> = Pool::new();

/// `data` compressed for the wire, or `None` where that does not pay ([`pays`]).
pub fn compress(data: &[u8]) -> Option<Vec<u8>> {
    COMPRESSORS
        .with(
            || Ok((zstd::bulk::Compressor::new(WIRE_LEVEL)?, Vec::new())),
            |(c, buf)| {
                buf.clear();
                buf.reserve(zstd::zstd_safe::compress_bound(data.len()));
                let done = c.compress_to_buffer(data, buf).is_ok();
                let z = (done && pays(data.len(), buf.len())).then(|| buf.to_vec());
                if buf.capacity() > BUFFER_KEPT_BYTES {
                    *buf = Vec::new();
                }
                z
            },
        )
        .ok()?
}

/// The chunk `z` compresses, which must be exactly `raw_len` bytes: the frame must state that
/// size before anything is allocated, and decompression writes into a buffer of that
/// capacity and fails rather than grow it, so no input makes it allocate more than the
/// caller announced (checked against the manifest before the call). The result's id is the
/// caller's to check.
pub fn decompress(z: &[u8], raw_len: usize) -> Result<Vec<u8>, DecompressError> {
    let stated = zstd::zstd_safe::get_frame_content_size(z).ok().flatten();
    if stated != Some(raw_len as u64) {
        return Err(DecompressError::WrongStatedSize {
            stated,
            expected: raw_len,
        });
    }
    let out = DECOMPRESSORS
        .with(zstd::bulk::Decompressor::new, |d| d.decompress(z, raw_len))
        .and_then(|r| r)
        .map_err(|e| DecompressError::Corrupt {
            expected: raw_len,
            why: e.to_string(),
        })?;
    if out.len() != raw_len {
        return Err(DecompressError::Short {
            expected: raw_len,
            found: out.len(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let line = b"function patch(base, next) { return base + next; }\n";
        (0..n).map(|i| line[i % line.len()]).collect()
    }

    #[test]
    fn compressible_chunks_round_trip_and_incompressible_ones_stay_raw() {
        let t = text(64 << 10);
        let z = compress(&t).expect("text compresses");
        assert!(z.len() < t.len() / 10);
        assert_eq!(decompress(&z, t.len()).unwrap(), t);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..64 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(compress(&noise), None);
    }

    #[test]
    fn a_bomb_or_a_lie_about_the_size_is_refused_before_it_grows() {
        let t = text(64 << 10);
        let z = compress(&t).unwrap();
        // Announced smaller than it is: the stated size disagrees.
        assert!(matches!(
            decompress(&z, 1 << 10),
            Err(DecompressError::WrongStatedSize { .. })
        ));
        // A frame that states no size (streamed) is refused whatever it holds.
        let mut streamed = Vec::new();
        {
            use std::io::Write;
            let mut enc = zstd::stream::write::Encoder::new(&mut streamed, 3).unwrap();
            enc.include_contentsize(false).unwrap();
            enc.write_all(&vec![0u8; 64 << 20]).unwrap();
            enc.finish().unwrap();
        }
        assert!(streamed.len() < 64 << 10);
        assert!(matches!(
            decompress(&streamed, 64 << 10),
            Err(DecompressError::WrongStatedSize { stated: None, .. })
        ));
        // A frame that states the announced size, followed by a second frame that would
        // pass it: decompression stops at the bound.
        let small = zstd::bulk::compress(&t[..1 << 10], 3).unwrap();
        let mut two = small.clone();
        two.extend_from_slice(&zstd::bulk::compress(&vec![0u8; 16 << 20], 3).unwrap());
        assert!(matches!(
            decompress(&two, 1 << 10),
            Err(DecompressError::Corrupt { .. })
        ));
        // Garbage.
        assert!(decompress(b"not zstd at all", 15).is_err());
        // Fewer bytes than stated: a truncated frame.
        assert!(decompress(&z[..z.len() / 2], t.len()).is_err());
    }
}
