//! p2pd benchmarks. Micro-benchmarks are criterion benches in `benches/` (run with
//! `cargo bench -p benches`); macro benchmarks are scripts beside them (`benches/publish.sh`)
//! that measure the product against an anchor in the same run and report ratios.
