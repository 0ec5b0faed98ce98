//! Integration tests of the chunking crate: the streaming pipeline cuts exactly as a
//! whole-buffer pass does, chunk → reassemble is the identity, and an edit moves only the
//! chunks around it.

use chunking::{
    ChunkSink, Chunker, PipelineConfig, PipelineError, ReassembleError, chunk_and_hash,
    reassemble_file, run_pipeline,
};
use proptest::prelude::*;
use protocol::{ChunkId, ChunkRef, ChunkingParams};
use rand::{RngCore, SeedableRng};
use std::collections::HashMap;
use std::io::{self, Cursor, Read};

/// Small chunks so that tests see many boundaries in little data.
fn small_chunker() -> Chunker {
    Chunker::new(ChunkingParams {
        min_bytes: 256,
        avg_bytes: 1024,
        max_bytes: 4096,
        ..ChunkingParams::default()
    })
    .unwrap()
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Collects every chunk per source and keeps the bytes by id.
#[derive(Default)]
struct Collect {
    per_source: HashMap<usize, Vec<ChunkRef>>,
    totals: HashMap<usize, u64>,
    bytes: HashMap<ChunkId, Vec<u8>>,
    fail_after: Option<usize>,
    seen: usize,
}

impl ChunkSink for Collect {
    type Error = String;

    fn chunk(&mut self, source: usize, id: ChunkId, bytes: &[u8]) -> Result<(), String> {
        self.seen += 1;
        if self.fail_after.is_some_and(|n| self.seen > n) {
            return Err("sink full".into());
        }
        self.per_source.entry(source).or_default().push(ChunkRef {
            id,
            len: bytes.len() as u32,
        });
        self.bytes.entry(id).or_insert_with(|| bytes.to_vec());
        Ok(())
    }

    fn source_done(&mut self, source: usize, total_bytes: u64) -> Result<(), String> {
        assert!(
            self.totals.insert(source, total_bytes).is_none(),
            "source ended twice"
        );
        Ok(())
    }
}

/// A reader that hands out at most `step` bytes per call, to vary read sizes.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn pipeline(chunker: &Chunker, block_bytes: usize, sources: &[Vec<u8>], step: usize) -> Collect {
    let mut sink = Collect::default();
    let config = PipelineConfig {
        block_bytes,
        blocks_in_flight: 3,
    };
    let readers = sources.iter().map(|d| Ok(Trickle { data: d, step }));
    run_pipeline(chunker, config, readers, &mut sink).unwrap();
    sink
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Streaming with any block and read size cuts exactly like a whole-buffer pass.
    #[test]
    fn pipeline_matches_whole_buffer_chunking(
        seed in any::<u64>(),
        lens in prop::collection::vec(0usize..60_000, 1..4),
        block_bytes in 4096usize..20_000,
        step in 1usize..9000,
    ) {
        let chunker = small_chunker();
        let sources: Vec<Vec<u8>> =
            lens.iter().enumerate().map(|(i, &l)| random_bytes(seed ^ i as u64, l)).collect();
        let out = pipeline(&chunker, block_bytes, &sources, step);
        for (i, data) in sources.iter().enumerate() {
            let expected = chunk_and_hash(&chunker, data);
            prop_assert_eq!(out.per_source.get(&i).cloned().unwrap_or_default(), expected);
            prop_assert_eq!(out.totals[&i], data.len() as u64);
        }
    }

    /// chunk → reassemble is the identity.
    #[test]
    fn chunk_then_reassemble_is_identity(seed in any::<u64>(), len in 0usize..200_000) {
        let chunker = small_chunker();
        let data = random_bytes(seed, len);
        let out = pipeline(&chunker, 16_384, std::slice::from_ref(&data), 1 << 20);
        let chunks = out.per_source.get(&0).cloned().unwrap_or_default();
        let mut rebuilt = Vec::new();
        let n = reassemble_file(&chunks, |c| Ok(out.bytes.get(&c.id).cloned()), &mut rebuilt)
            .unwrap();
        prop_assert_eq!(n, data.len() as u64);
        prop_assert_eq!(rebuilt, data);
    }

    /// Inserting bytes in the middle changes only the chunks around the insertion: with the
    /// default parameters, the new chunk list is the old one's prefix, a short run of new
    /// chunks, and the old one's suffix.
    #[test]
    fn insertion_changes_only_nearby_chunks(
        seed in any::<u64>(),
        at_permille in 100usize..900,
        inserted in prop::collection::vec(any::<u8>(), 1..200),
    ) {
        let chunker = Chunker::new(ChunkingParams::default()).unwrap();
        let old = random_bytes(seed, 128 * 64 * 1024);
        let at = old.len() * at_permille / 1000;
        let mut new = old[..at].to_vec();
        new.extend_from_slice(&inserted);
        new.extend_from_slice(&old[at..]);
        let before = chunk_and_hash(&chunker, &old);
        let after = chunk_and_hash(&chunker, &new);
        let prefix = before.iter().zip(&after).take_while(|(a, b)| a == b).count();
        let suffix = before
            .iter()
            .rev()
            .zip(after.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        prop_assert!(prefix + suffix <= after.len());
        let changed = &after[prefix..after.len() - suffix];
        let changed_bytes: u64 = changed.iter().map(|c| u64::from(c.len)).sum();
        // 400 seeded trials here: one new chunk in 99 %, at most 4 (1.3 x max bytes).
        prop_assert!(changed.len() <= 6, "{} of {} chunks changed", changed.len(), after.len());
        prop_assert!(changed_bytes <= 4 * u64::from(chunker.params().max_bytes));
        // The chunks before the insertion point are untouched.
        let before_at: usize = before[..prefix].iter().map(|c| c.len as usize).sum();
        prop_assert!(before_at <= at && at - before_at <= chunker.params().max_bytes as usize);
    }
}

#[test]
fn slice_pipeline_matches_whole_buffer_chunking() {
    let chunker = small_chunker();
    for len in [0usize, 1, 255, 5000, 300_000, 1_000_000] {
        let data = random_bytes(len as u64, len);
        let mut sink = Collect::default();
        chunking::run_pipeline_slice(&chunker, &data, &mut sink).unwrap();
        assert_eq!(
            sink.per_source.get(&0).cloned().unwrap_or_default(),
            chunk_and_hash(&chunker, &data)
        );
        assert_eq!(sink.totals[&0], len as u64);
    }
    // A sink error stops it without hanging.
    let data = random_bytes(9, 4 << 20);
    let mut sink = Collect {
        fail_after: Some(3),
        ..Collect::default()
    };
    assert!(chunking::run_pipeline_slice(&chunker, &data, &mut sink).is_err());
}

#[test]
fn reassembly_refuses_corrupt_short_or_missing_chunks() {
    let chunker = small_chunker();
    let data = random_bytes(1, 50_000);
    let chunks = chunk_and_hash(&chunker, &data);
    let store: HashMap<ChunkId, Vec<u8>> = chunker
        .ranges(&data)
        .map(|r| (ChunkId::of(&data[r.clone()]), data[r].to_vec()))
        .collect();
    let target = chunks[1];

    let mut corrupt = store.clone();
    corrupt.get_mut(&target.id).unwrap()[0] ^= 1;
    let err = reassemble_file(
        &chunks,
        |c| Ok(corrupt.get(&c.id).cloned()),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, ReassembleError::Corrupt(id) if id == target.id));

    let mut short = store.clone();
    short.get_mut(&target.id).unwrap().pop();
    let err =
        reassemble_file(&chunks, |c| Ok(short.get(&c.id).cloned()), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ReassembleError::LengthMismatch { .. }));

    let mut missing = store;
    missing.remove(&target.id);
    let mut out = Vec::new();
    let err = reassemble_file(&chunks, |c| Ok(missing.get(&c.id).cloned()), &mut out).unwrap_err();
    assert!(matches!(err, ReassembleError::Missing(id) if id == target.id));
    // Nothing after the missing chunk was written.
    assert_eq!(out.len(), chunks[0].len as usize);
}

struct FailingReader;

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("disk on fire"))
    }
}

#[test]
fn read_error_names_the_source_and_stops_the_pipeline() {
    let chunker = small_chunker();
    let data = random_bytes(2, 100_000);
    let sources: Vec<io::Result<Box<dyn Read + Send>>> = vec![
        Ok(Box::new(Cursor::new(data))),
        Ok(Box::new(FailingReader)),
        Err(io::Error::other("never opened")),
    ];
    let mut sink = Collect::default();
    let err = run_pipeline(&chunker, PipelineConfig::default(), sources, &mut sink).unwrap_err();
    match err {
        PipelineError::Read {
            source_index,
            error,
        } => {
            assert_eq!(source_index, 1);
            assert_eq!(error.to_string(), "disk on fire");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!sink.totals.contains_key(&1));
}

#[test]
fn open_error_is_reported_for_its_source() {
    let chunker = small_chunker();
    let sources: Vec<io::Result<Cursor<Vec<u8>>>> = vec![
        Ok(Cursor::new(vec![1; 10])),
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "no")),
    ];
    let err = run_pipeline(
        &chunker,
        PipelineConfig::default(),
        sources,
        &mut Collect::default(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        PipelineError::Read {
            source_index: 1,
            ..
        }
    ));
}

#[test]
fn sink_error_stops_the_pipeline_without_hanging() {
    let chunker = small_chunker();
    // Far more data than the pool holds, so the other stages are blocked when the sink fails.
    let data = random_bytes(3, 4 << 20);
    let mut sink = Collect {
        fail_after: Some(10),
        ..Collect::default()
    };
    let config = PipelineConfig {
        block_bytes: 64 << 10,
        blocks_in_flight: 3,
    };
    let err = run_pipeline(&chunker, config, [Ok(Cursor::new(data))], &mut sink).unwrap_err();
    assert!(matches!(err, PipelineError::Sink(ref e) if e == "sink full"));
    assert_eq!(sink.seen, 11);
}

#[test]
fn empty_sources_are_reported_done_with_zero_bytes() {
    let chunker = small_chunker();
    let out = pipeline(&chunker, 8192, &[vec![], vec![7; 5000], vec![]], 100);
    assert_eq!(out.totals[&0], 0);
    assert_eq!(out.totals[&1], 5000);
    assert_eq!(out.totals[&2], 0);
    assert!(!out.per_source.contains_key(&0));
}

#[test]
fn default_params_cut_exactly_like_whole_buffer_on_large_input() {
    let chunker = Chunker::new(ChunkingParams::default()).unwrap();
    let data = random_bytes(4, 40 << 20);
    let mut sink = Collect::default();
    run_pipeline(
        &chunker,
        PipelineConfig::default(),
        [Ok(Cursor::new(&data[..]))],
        &mut sink,
    )
    .unwrap();
    assert_eq!(sink.per_source[&0], chunk_and_hash(&chunker, &data));
}
