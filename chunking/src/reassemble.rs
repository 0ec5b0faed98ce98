//! Reassembly: write a file back from its ordered chunk list, checking every chunk.
//!
//! The caller supplies chunk bytes by id (from the store, from a peer); each is checked
//! against its BLAKE3 id and its declared length before a byte of it is written, so a
//! corrupt or substituted chunk never reaches the output.

use protocol::{ChunkId, ChunkRef};
use std::io::{self, Write};

/// Why a file could not be reassembled.
#[derive(Debug, thiserror::Error)]
pub enum ReassembleError {
    /// The chunk is not available.
    #[error("chunk {0} is missing")]
    Missing(ChunkId),
    /// The chunk's bytes do not hash to its id.
    #[error("chunk {0} is corrupt: its bytes do not match its id")]
    Corrupt(ChunkId),
    /// The chunk has another length than the manifest says.
    #[error("chunk {id} is {actual} bytes, the manifest says {expected}")]
    LengthMismatch {
        /// The chunk.
        id: ChunkId,
        /// Length in the manifest.
        expected: u32,
        /// Length found.
        actual: usize,
    },
    /// Reading a chunk or writing the output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Writes the concatenation of `chunks` to `out`, fetching each with `fetch` (which returns
/// `Ok(None)` for a chunk it does not have) and verifying it first. Returns the bytes written.
pub fn reassemble_file<B: AsRef<[u8]>>(
    chunks: &[ChunkRef],
    mut fetch: impl FnMut(&ChunkRef) -> io::Result<Option<B>>,
    out: &mut impl Write,
) -> Result<u64, ReassembleError> {
    let mut written = 0u64;
    for chunk in chunks {
        let bytes = fetch(chunk)?.ok_or(ReassembleError::Missing(chunk.id))?;
        let bytes = bytes.as_ref();
        if bytes.len() != chunk.len as usize {
            return Err(ReassembleError::LengthMismatch {
                id: chunk.id,
                expected: chunk.len,
                actual: bytes.len(),
            });
        }
        if !chunk.id.matches(bytes) {
            return Err(ReassembleError::Corrupt(chunk.id));
        }
        out.write_all(bytes)?;
        written += bytes.len() as u64;
    }
    Ok(written)
}
