//! Benchmarks of Quipu's hot path live in `benches/hot_path.rs` (run `cargo bench -p
//! quipu-benches`); the end-to-end scripts beside this crate measure whole brokers.
