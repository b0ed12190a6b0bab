//! Criterion micro-benchmarks of the hot path: batch validation (CRC-32C), append, offset index
//! lookup, fetch read, and request decode.
//!
//! `cargo bench -p quipu-benches`; `-- --quick` for a short run.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;
use quipu_config::topic::TopicConfig;
use quipu_config::BrokerConfig;
use quipu_protocol::record_batch::RecordBatchView;
use quipu_storage::log::offset_index::OffsetIndex;
use quipu_storage::log::{check_records, Log};

/// A client-style batch of `count` records of `value_bytes` each, uncompressed.
fn batch(count: usize, value_bytes: usize) -> Vec<u8> {
    quipu_protocol::testing::batch(count, value_bytes, 1_000, Compression::None)
}

fn topic_config(overrides: &[(&str, &str)]) -> TopicConfig {
    let o: BTreeMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TopicConfig::with_overrides(&BrokerConfig::default(), &o).unwrap()
}

fn batch_validation(c: &mut Criterion) {
    let b = batch(16, 1000); // ~16 KiB
    let mut g = c.benchmark_group("batch_validation");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("parse_and_crc32c_16KiB", |bench| {
        bench.iter(|| {
            let v = RecordBatchView::parse(black_box(&b)).unwrap();
            v.validate().unwrap();
        })
    });
    // What a produced batch costs in full (CRC, header, every record walked, as Kafka's
    // LogValidator), next to the CRC alone above.
    g.bench_function("check_records_16KiB", |bench| {
        bench.iter(|| check_records(black_box(&b), false).unwrap())
    });
    g.finish();
    let mut g = c.benchmark_group("batch_validation_1MiB");
    for (name, compression) in [
        ("none", Compression::None),
        ("zstd", Compression::Zstd),
        ("lz4", Compression::Lz4),
    ] {
        let b = quipu_protocol::testing::batch(1000, 1000, 1_000, compression);
        g.throughput(Throughput::Bytes(1000 * 1000));
        g.bench_function(format!("check_records_{name}"), |bench| {
            bench.iter(|| check_records(black_box(&b), false).unwrap())
        });
    }
    g.finish();
}

fn append(c: &mut Criterion) {
    let b = batch(16, 1000);
    const BATCHES: usize = 2_000; // ~32 MiB a sample, in a fresh log each time
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Bytes((b.len() * BATCHES) as u64));
    g.sample_size(10);
    g.bench_function("16KiB_batches_into_fresh_log", |bench| {
        bench.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let log = Log::open(
                    dir.path(),
                    topic_config(&[("segment.bytes", "67108864")]),
                    None,
                    0,
                )
                .unwrap();
                (dir, log)
            },
            |(dir, mut log)| {
                for _ in 0..BATCHES {
                    log.append(black_box(&b), 0).unwrap();
                }
                (dir, log)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn index_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    const ENTRIES: i64 = 100_000;
    let mut index = OffsetIndex::open(
        &dir.path().join("0.index"),
        0,
        (ENTRIES as usize + 1) * 8,
        true,
    )
    .unwrap();
    for i in 1..=ENTRIES {
        assert!(index.append(i * 10, (i * 4096) as u32).unwrap());
    }
    let mut g = c.benchmark_group("offset_index");
    let mut target = 0i64;
    g.bench_function("lookup_in_100k_entries", |bench| {
        bench.iter(|| {
            target = (target + 7_919) % (ENTRIES * 10);
            black_box(index.lookup(black_box(target)))
        })
    });
    g.finish();
}

fn fetch_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(16, 1000);
    let mut log = Log::open(dir.path(), topic_config(&[]), None, 0).unwrap();
    const BATCHES: i64 = 4_096; // ~64 MiB
    for _ in 0..BATCHES {
        log.append(&b, 0).unwrap();
    }
    let end = log.log_end_offset();
    let mut g = c.benchmark_group("fetch_read");
    g.throughput(Throughput::Bytes(1 << 20));
    let mut offset = 0i64;
    g.bench_function("1MiB_zero_copy_slice", |bench| {
        bench.iter(|| {
            offset = (offset + 16 * 97) % (end - 16 * 70);
            let bytes = log
                .read(black_box(offset), end, 1 << 20, true)
                .unwrap()
                .unwrap();
            black_box(bytes.len())
        })
    });
    g.finish();
}

fn request_decode(c: &mut Criterion) {
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(Bytes::from(batch(16, 1000)));
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str("orders"));
    td.partition_data = vec![pd];
    let mut r = ProduceRequest::default();
    r.acks = 1;
    r.timeout_ms = 30_000;
    r.topic_data = vec![td];
    let mut body = BytesMut::new();
    r.encode(&mut body, 9).unwrap();
    let body = body.freeze();
    let mut g = c.benchmark_group("request_decode");
    g.bench_function("produce_v9_one_16KiB_batch", |bench| {
        bench.iter(|| {
            let mut b = body.clone();
            black_box(ProduceRequest::decode(&mut b, 9).unwrap())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    batch_validation,
    append,
    index_lookup,
    fetch_read,
    request_decode
);
criterion_main!(benches);
