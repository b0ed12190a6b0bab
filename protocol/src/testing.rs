//! Record batches built the way a client builds them (with the kafka-protocol crate's encoder),
//! for tests and benchmarks: base offset 0, `count` records keyed `key-<i>` with a `value_bytes`
//! value and one header, stamped `first_timestamp_ms + i`.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub fn batch(
    count: usize,
    value_bytes: usize,
    first_timestamp_ms: i64,
    compression: Compression,
) -> Vec<u8> {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch where offset minus sequence changes.
            sequence: i as i32,
            timestamp: first_timestamp_ms + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'v'; value_bytes])),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    encode(&records, compression)
}

/// A batch as an idempotent producer sends it: `count` records from sequence `first_sequence`.
pub fn idempotent_batch(
    count: usize,
    producer_id: i64,
    epoch: i16,
    first_sequence: i32,
) -> Vec<u8> {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_sequence.wrapping_add(i as i32),
            timestamp: 1_000 + i as i64,
            key: None,
            value: Some(Bytes::from(format!(
                "{producer_id}-{epoch}-{}",
                first_sequence.wrapping_add(i as i32)
            ))),
            headers: Default::default(),
        })
        .collect();
    encode(&records, Compression::None)
}

/// A client-style batch of records with the given keys and values (`None`: a tombstone).
pub fn keyed_batch(
    entries: &[(&[u8], Option<&[u8]>)],
    first_timestamp_ms: i64,
    compression: Compression,
) -> Vec<u8> {
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: first_timestamp_ms + i as i64,
            key: Some(Bytes::copy_from_slice(key)),
            value: value.map(Bytes::copy_from_slice),
            headers: Default::default(),
        })
        .collect();
    encode(&records, compression)
}

fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("a batch encodes");
    buf.to_vec()
}
