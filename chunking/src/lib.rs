//! Content-defined chunking for p2pd: FastCDC v2020 boundaries, BLAKE3 chunk ids, the
//! parallel publish pipeline, and verified reassembly.
//!
//! This crate knows bytes and chunk ids, not the network and not the store's layout: the
//! pipeline hands each chunk to a [`ChunkSink`] the caller provides, and reassembly asks the
//! caller for chunk bytes by id.
//!
//! # Layout
//!
//! * [`cdc`]: [`Chunker`], the FastCDC v2020 boundary finder configured from a manifest's
//!   [`protocol::ChunkingParams`], and single-threaded whole-buffer helpers.
//! * [`pipeline`]: [`run_pipeline`], streaming over any number of `Read` sources in bounded
//!   memory, with reading, boundary detection and hashing on their own threads;
//!   [`run_pipeline_slice`], the same without a reader or copies for a buffer in memory.
//! * [`compress`]: chunks compressed for the wire, and their bounded decompression.
//! * [`patch`]: zstd patches between two versions of a file, and the check of a rebuilt
//!   file's chunks.
//! * [`reassemble`]: [`reassemble_file`], which writes a file from its chunk list and checks
//!   every chunk against its id and length.

pub mod cdc;
pub mod compress;
pub mod patch;
pub mod pipeline;
pub mod reassemble;

pub use cdc::{Chunker, chunk_and_hash};
pub use pipeline::{ChunkSink, PipelineConfig, PipelineError, run_pipeline, run_pipeline_slice};
pub use reassemble::{ReassembleError, reassemble_file};
