//! Chunking throughput: FastCDC boundary detection alone versus the in-memory pipeline
//! (boundaries and BLAKE3 per chunk on separate threads) over the same buffer, in the same
//! run; the streaming pipeline (with a reader copying into blocks) and one thread for context. The bar: pipeline ≥ 0.9 × boundaries alone, i.e. hashing hidden behind chunking.

use chunking::{ChunkSink, Chunker, PipelineConfig, run_pipeline};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use protocol::{ChunkId, ChunkingParams};
use rand::{RngCore, SeedableRng};
use std::hint::black_box;
use std::io::Cursor;

const BUFFER_BYTES: usize = 256 << 20;

struct CountSink(u64);

impl ChunkSink for CountSink {
    type Error = ();
    fn chunk(&mut self, _: usize, id: ChunkId, bytes: &[u8]) -> Result<(), ()> {
        self.0 += bytes.len() as u64 + u64::from(id.0[0]);
        Ok(())
    }
    fn source_done(&mut self, _: usize, _: u64) -> Result<(), ()> {
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let mut data = vec![0u8; BUFFER_BYTES];
    rand_chacha::ChaCha8Rng::seed_from_u64(1).fill_bytes(&mut data);
    let chunker = Chunker::new(ChunkingParams::default()).unwrap();
    let mut group = c.benchmark_group("chunking");
    group.throughput(Throughput::Bytes(BUFFER_BYTES as u64));
    group.sample_size(10);
    group.bench_function("fastcdc_boundaries_only", |b| {
        b.iter(|| black_box(chunker.ranges(&data).count()))
    });
    group.bench_function("pipeline_slice_chunk_and_hash", |b| {
        b.iter(|| {
            let mut sink = CountSink(0);
            chunking::run_pipeline_slice(&chunker, &data, &mut sink).unwrap();
            black_box(sink.0)
        })
    });
    group.bench_function("pipeline_read_chunk_and_hash", |b| {
        b.iter(|| {
            let mut sink = CountSink(0);
            run_pipeline(
                &chunker,
                PipelineConfig::default(),
                [Ok(Cursor::new(&data[..]))],
                &mut sink,
            )
            .unwrap();
            black_box(sink.0)
        })
    });
    group.bench_function("chunk_and_hash_one_thread", |b| {
        b.iter(|| black_box(chunking::chunk_and_hash(&chunker, &data).len()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
