//! FastCDC v2020 boundary detection with the parameters a manifest records.
//!
//! [`Chunker::cut`] finds the end of the next chunk in a window of bytes. It looks at most
//! `max_bytes` ahead, so a caller that streams data only has to keep `max_bytes` of look-ahead
//! to cut exactly where a whole-buffer pass would: boundaries never depend on how the input
//! was split into reads.

use fastcdc::v2020::{self, Normalization};
use protocol::{ChunkId, ChunkRef, ChunkingParams, ManifestError};
use std::ops::Range;

/// The FastCDC v2020 boundary finder.
#[derive(Debug, Clone)]
pub struct Chunker {
    params: ChunkingParams,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// A chunker for `params` (checked first).
    pub fn new(params: ChunkingParams) -> Result<Self, ManifestError> {
        params.validate()?;
        let level = match params.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        };
        let (mask_s, mask_l) = v2020::select_masks(params.avg_bytes as usize, level);
        Ok(Self {
            params,
            mask_s,
            mask_l,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &ChunkingParams {
        &self.params
    }

    /// Largest chunk, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.params.max_bytes as usize
    }

    /// Length of the chunk that starts at `window[0]`. `window` must hold at least
    /// `max_bytes` bytes unless it runs to the end of the input. Returns 0 only for an
    /// empty window.
    pub fn cut(&self, window: &[u8]) -> usize {
        if window.is_empty() {
            return 0;
        }
        let (_, len) = v2020::cut(
            window,
            self.params.min_bytes as usize,
            self.params.avg_bytes as usize,
            self.params.max_bytes as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        len
    }

    /// The chunk ranges of a whole buffer, in order.
    pub fn ranges<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = Range<usize>> + 'a {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let len = self.cut(&data[pos..]);
            (len > 0).then(|| {
                let range = pos..pos + len;
                pos += len;
                range
            })
        })
    }
}

/// Chunks and hashes a whole buffer on the calling thread: the reference the pipeline is
/// tested and benchmarked against.
pub fn chunk_and_hash(chunker: &Chunker, data: &[u8]) -> Vec<ChunkRef> {
    chunker
        .ranges(data)
        .map(|r| ChunkRef {
            id: ChunkId::of(&data[r.clone()]),
            len: r.len() as u32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_buffer_within_size_bounds() {
        let chunker = Chunker::new(ChunkingParams::default()).unwrap();
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let ranges: Vec<_> = chunker.ranges(&data).collect();
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, data.len());
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        let p = chunker.params();
        for r in &ranges[..ranges.len() - 1] {
            assert!(r.len() >= p.min_bytes as usize && r.len() <= p.max_bytes as usize);
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let chunker = Chunker::new(ChunkingParams::default()).unwrap();
        assert_eq!(chunker.ranges(&[]).count(), 0);
        assert!(chunk_and_hash(&chunker, &[]).is_empty());
    }

    #[test]
    fn invalid_params_are_refused() {
        let p = ChunkingParams {
            avg_bytes: ChunkingParams::default().max_bytes,
            ..ChunkingParams::default()
        };
        assert!(Chunker::new(p).is_err());
    }
}
