//! The publish pipeline: chunk and hash any number of byte streams in bounded memory, using
//! every core the work can use.
//!
//! ```text
//!  reader thread          chunker thread             hasher thread        caller's thread
//!  read() into a free  -> FastCDC boundaries,     -> BLAKE3 per chunk  -> ChunkSink::chunk
//!  block buffer           carry the tail (< max)                           (store writes),
//!        ^                into the next block                             block back to pool
//!        +----------------------------- free blocks ----------------------------+
//! ```
//!
//! Memory is a fixed pool of [`PipelineConfig::blocks_in_flight`] buffers of
//! `block_bytes + max_chunk` bytes, allocated once and recycled: a 20 GiB input uses the same
//! memory as a 20 MiB one. Boundary detection is the slowest stage (FastCDC ~2.9 GiB/s,
//! BLAKE3 ~6.8 GiB/s on one core here), so on two cores hashing and writing hide behind it.
//!
//! Each block begins with [`Chunker::max_bytes`] bytes of headroom. Bytes after the last cut
//! of a block that is not the end of its source (fewer than `max_bytes`) are copied into the
//! headroom of the next block, so every chunk lies whole in one block and cuts are exactly
//! those of a whole-buffer pass. Chunks never span sources: each source is chunked on its own,
//! as each file of a release is.
//!
//! Chunks reach the sink in order: source by source, chunk by chunk.

use crate::cdc::Chunker;
use crossbeam_channel::{Receiver, Sender, bounded};
use protocol::ChunkId;
use std::io::{self, Read};
use std::ops::Range;
use std::sync::Mutex;

/// Sizes of the pipeline's buffer pool.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Bytes read per block. Larger blocks mean fewer hand-offs between threads; 8 MiB makes
    /// the per-block cost (channel messages, tail copy) negligible.
    pub block_bytes: usize,
    /// Blocks in the pool: one being read, one chunked, one hashed, one written, and slack so
    /// a stage that stalls briefly does not stall the others.
    pub blocks_in_flight: usize,
}

impl PipelineConfig {
    /// Default block size.
    pub const BLOCK_BYTES_DEFAULT: usize = 8 << 20;
    /// Default pool size: 6 × (8 MiB + max chunk) ≈ 50 MiB at most, whatever the input size.
    pub const BLOCKS_IN_FLIGHT_DEFAULT: usize = 6;
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            block_bytes: Self::BLOCK_BYTES_DEFAULT,
            blocks_in_flight: Self::BLOCKS_IN_FLIGHT_DEFAULT,
        }
    }
}

/// Receives chunks in order. Runs on the thread that called [`run_pipeline`].
pub trait ChunkSink {
    /// The sink's error.
    type Error;

    /// Chunk `bytes` of source `source`, whose BLAKE3 id is `id`.
    fn chunk(&mut self, source: usize, id: ChunkId, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Source `source` ended after `total_bytes` bytes (called for empty sources too).
    fn source_done(&mut self, source: usize, total_bytes: u64) -> Result<(), Self::Error>;
}

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError<E> {
    /// Opening or reading source `source` failed.
    #[error("reading source {source_index}: {error}")]
    Read {
        /// Index of the source in the order given.
        source_index: usize,
        /// The IO error.
        error: io::Error,
    },
    /// The sink refused a chunk.
    #[error("{0}")]
    Sink(E),
}

struct Block {
    buf: Vec<u8>,
    source: usize,
    /// Bytes of the block that belong to chunks or to the tail: `data.start` may lie inside
    /// the headroom when a tail was carried in.
    data: Range<usize>,
    /// Last block of its source.
    eof: bool,
    /// Chunk ranges within `buf`, filled by the chunker.
    chunks: Vec<Range<usize>>,
    /// Chunk ids, filled by the hasher.
    ids: Vec<ChunkId>,
}

/// Chunks and hashes every source in order, handing chunks to `sink`. `sources` yields each
/// source opened (or the error opening it); it is consumed on the reader thread.
pub fn run_pipeline<R, I, S>(
    chunker: &Chunker,
    config: PipelineConfig,
    sources: I,
    sink: &mut S,
) -> Result<(), PipelineError<S::Error>>
where
    R: Read,
    I: IntoIterator<Item = io::Result<R>>,
    I::IntoIter: Send,
    S: ChunkSink,
{
    let headroom = chunker.max_bytes();
    let block_bytes = config.block_bytes.max(headroom);
    let pool = config.blocks_in_flight.max(3);
    let read_error: Mutex<Option<(usize, io::Error)>> = Mutex::new(None);
    let sources = sources.into_iter();

    let result = std::thread::scope(|scope| {
        let (free_tx, free_rx) = bounded::<Block>(pool);
        let (read_tx, read_rx) = bounded::<Block>(pool);
        let (cut_tx, cut_rx) = bounded::<Block>(pool);
        let (hashed_tx, hashed_rx) = bounded::<Block>(pool);
        for _ in 0..pool {
            free_tx
                .send(Block {
                    buf: vec![0; headroom + block_bytes],
                    source: 0,
                    data: 0..0,
                    eof: false,
                    chunks: Vec::new(),
                    ids: Vec::new(),
                })
                .expect("the pool channel holds every block");
        }

        let read_error = &read_error;
        scope.spawn(move || read_stage(sources, headroom, free_rx, read_tx, read_error));
        scope.spawn(move || cut_stage(chunker, read_rx, cut_tx));
        scope.spawn(move || hash_stage(cut_rx, hashed_tx));

        // Sink stage, on the caller's thread. Returning drops `hashed_rx` and `free_tx`, which
        // unblocks and ends the other stages if they are still running.
        let mut source_total: u64 = 0;
        for mut block in hashed_rx.iter() {
            for (range, id) in block.chunks.iter().zip(&block.ids) {
                source_total += range.len() as u64;
                sink.chunk(block.source, *id, &block.buf[range.clone()])
                    .map_err(PipelineError::Sink)?;
            }
            if block.eof {
                sink.source_done(block.source, source_total)
                    .map_err(PipelineError::Sink)?;
                source_total = 0;
            }
            block.chunks.clear();
            block.ids.clear();
            // The reader may have stopped (error or end); a closed pool is not an error.
            let _ = free_tx.send(block);
        }
        Ok(())
    });
    if let Some((source_index, error)) = read_error.into_inner().unwrap_or_else(|e| e.into_inner())
    {
        return Err(PipelineError::Read {
            source_index,
            error,
        });
    }
    result
}

fn read_stage<R: Read>(
    sources: impl Iterator<Item = io::Result<R>>,
    headroom: usize,
    free_rx: Receiver<Block>,
    read_tx: Sender<Block>,
    read_error: &Mutex<Option<(usize, io::Error)>>,
) {
    let fail = |index: usize, error: io::Error| {
        *read_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((index, error));
    };
    for (index, source) in sources.enumerate() {
        let mut reader = match source {
            Ok(r) => r,
            Err(e) => return fail(index, e),
        };
        loop {
            let Ok(mut block) = free_rx.recv() else {
                return;
            };
            let end = match fill(&mut reader, &mut block.buf[headroom..]) {
                Ok(n) => headroom + n,
                Err(e) => return fail(index, e),
            };
            block.source = index;
            block.data = headroom..end;
            block.eof = end < block.buf.len();
            let eof = block.eof;
            if read_tx.send(block).is_err() {
                return;
            }
            if eof {
                break;
            }
        }
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn cut_stage(chunker: &Chunker, read_rx: Receiver<Block>, cut_tx: Sender<Block>) {
    let max = chunker.max_bytes();
    let mut carry: Vec<u8> = Vec::with_capacity(max);
    for mut block in read_rx.iter() {
        // Prepend the previous block's tail, if any, in the headroom.
        if !carry.is_empty() {
            let start = block.data.start - carry.len();
            block.buf[start..block.data.start].copy_from_slice(&carry);
            block.data.start = start;
            carry.clear();
        }
        let mut pos = block.data.start;
        let end = block.data.end;
        while pos < end {
            let remaining = end - pos;
            if remaining < max && !block.eof {
                break;
            }
            let len = chunker.cut(&block.buf[pos..end]);
            block.chunks.push(pos..pos + len);
            pos += len;
        }
        carry.extend_from_slice(&block.buf[pos..end]);
        if cut_tx.send(block).is_err() {
            return;
        }
    }
}

fn hash_stage(cut_rx: Receiver<Block>, hashed_tx: Sender<Block>) {
    for mut block in cut_rx.iter() {
        let Block {
            buf, chunks, ids, ..
        } = &mut block;
        ids.extend(chunks.iter().map(|r| ChunkId::of(&buf[r.clone()])));
        if hashed_tx.send(block).is_err() {
            return;
        }
    }
}

/// Chunk ranges handed from the boundary thread to the hasher per message: enough to make
/// channel costs negligible (~8 MiB of data at the default average), few enough to keep both
/// threads busy from the start.
const SLICE_BATCH_CHUNKS: usize = 128;

/// Batches in flight between stages of [`run_pipeline_slice`].
const SLICE_BATCHES_IN_FLIGHT: usize = 4;

/// The pipeline over a buffer already in memory: no reader stage and no copies. Boundaries
/// are found on a second thread while the calling thread hashes each batch of chunks and
/// hands them to `sink` in order, all as source 0. Two threads, not three: on two cores a
/// separate hasher thread would compete with the boundary thread for no gain.
pub fn run_pipeline_slice<S: ChunkSink>(
    chunker: &Chunker,
    data: &[u8],
    sink: &mut S,
) -> Result<(), S::Error> {
    std::thread::scope(|scope| {
        let (cut_tx, cut_rx) = bounded::<Vec<Range<usize>>>(SLICE_BATCHES_IN_FLIGHT);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(SLICE_BATCH_CHUNKS);
            for range in chunker.ranges(data) {
                batch.push(range);
                if batch.len() == SLICE_BATCH_CHUNKS {
                    let full =
                        std::mem::replace(&mut batch, Vec::with_capacity(SLICE_BATCH_CHUNKS));
                    if cut_tx.send(full).is_err() {
                        return;
                    }
                }
            }
            let _ = cut_tx.send(batch);
        });
        // Returning early drops `cut_rx`, which ends the boundary thread.
        let mut total = 0u64;
        for batch in cut_rx.iter() {
            for range in batch {
                total += range.len() as u64;
                let bytes = &data[range];
                sink.chunk(0, ChunkId::of(bytes), bytes)?;
            }
        }
        sink.source_done(0, total)
    })
}
