//! Record batches built the way a client builds them (with the kafka-protocol crate's encoder),
//! for tests and benchmarks: base offset 0, records stamped `first_timestamp_ms + i`.

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record};

use crate::record::{encode_batch, plain_record};

/// `count` records keyed `key-<i>` with a `value_bytes` value and one header.
pub fn batch(
    count: usize,
    value_bytes: usize,
    first_timestamp_ms: i64,
    compression: Compression,
) -> Vec<u8> {
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let mut r = plain_record(
                i as i64,
                first_timestamp_ms + i as i64,
                Some(Bytes::from(format!("key-{i}"))),
                Some(Bytes::from(vec![b'v'; value_bytes])),
            );
            r.headers = [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]
            .into_iter()
            .collect();
            r
        })
        .collect();
    encode_batch(&records, compression).expect("a batch encodes")
}

/// A batch as an idempotent producer sends it: `count` records from sequence `first_sequence`.
pub fn idempotent_batch(
    count: usize,
    producer_id: i64,
    epoch: i16,
    first_sequence: i32,
) -> Vec<u8> {
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let sequence = first_sequence.wrapping_add(i as i32);
            let mut r = plain_record(
                i as i64,
                1_000 + i as i64,
                None,
                Some(Bytes::from(format!("{producer_id}-{epoch}-{sequence}"))),
            );
            r.producer_id = producer_id;
            r.producer_epoch = epoch;
            r.sequence = sequence;
            r
        })
        .collect();
    encode_batch(&records, Compression::None).expect("a batch encodes")
}

/// A batch of records with the given keys and values (`None`: a tombstone).
pub fn keyed_batch(
    entries: &[(&[u8], Option<&[u8]>)],
    first_timestamp_ms: i64,
    compression: Compression,
) -> Vec<u8> {
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (key, value))| {
            plain_record(
                i as i64,
                first_timestamp_ms + i as i64,
                Some(Bytes::copy_from_slice(key)),
                value.map(Bytes::copy_from_slice),
            )
        })
        .collect();
    encode_batch(&records, compression).expect("a batch encodes")
}
