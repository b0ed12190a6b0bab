//! Building a v2 record batch one record at a time, as a producer does.
//!
//! Records are encoded straight into one buffer as they are appended (no intermediate record
//! structs), behind room left for the 61-byte header; [`BatchBuilder::finish`] fills the header in
//! and computes the CRC-32C, so an uncompressed batch is never copied. A compressed one is
//! compressed into a new buffer behind its header. The producer fields (id, epoch, base
//! sequence) are given at finish time, because an idempotent producer assigns sequences only when
//! a batch is sent.
//!
//! Invariants: offset deltas run 0, 1, 2… in append order; timestamps are deltas from the first
//! record's timestamp; the batch's max timestamp is the largest appended; a finished batch parses
//! and validates with [`crate::record_batch::RecordBatchView`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::record::{compress_records, RecordError};
use crate::record_batch::BATCH_HEADER_BYTES;

/// Producer fields of a batch header; [`ProducerFields::NONE`] for a non-idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    pub const NONE: Self = Self {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// An open batch: records appended so far, uncompressed.
#[derive(Debug)]
pub struct BatchBuilder {
    /// `BATCH_HEADER_BYTES` of room for the header, then the records.
    records: BytesMut,
    count: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl BatchBuilder {
    /// An empty batch with room for `capacity_bytes` (header included) before it reallocates.
    pub fn new(capacity_bytes: usize) -> Self {
        Self::with_buffer(BytesMut::with_capacity(
            capacity_bytes.max(BATCH_HEADER_BYTES),
        ))
    }

    /// An empty batch in `buffer` (its contents are discarded), so a producer can reuse the
    /// buffers of batches it has sent.
    pub fn with_buffer(mut records: BytesMut) -> Self {
        records.clear();
        records.resize(BATCH_HEADER_BYTES, 0);
        Self {
            records,
            count: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: -1,
        }
    }

    /// Records appended so far.
    pub fn record_count(&self) -> i32 {
        self.count
    }

    /// The batch's size if it were finished uncompressed now.
    pub fn size_bytes(&self) -> usize {
        self.records.len()
    }

    /// Upper bound of the bytes one record adds to a batch (its varints at their longest).
    pub fn record_size_upper_bound<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(K, Option<V>)],
    ) -> usize {
        let header_bytes: usize = headers
            .iter()
            .map(|(k, v)| 10 + k.as_ref().len() + v.as_ref().map_or(0, |v| v.as_ref().len()))
            .sum();
        // length, attributes, timestamp delta, offset delta, key and value lengths, header count
        5 + 1
            + 10
            + 5
            + 5
            + 5
            + 5
            + key.map_or(0, <[u8]>::len)
            + value.map_or(0, <[u8]>::len)
            + header_bytes
    }

    /// Appends one record at the next offset delta.
    pub fn append<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(K, Option<V>)],
    ) {
        if self.count == 0 {
            self.base_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let timestamp_delta = timestamp_ms.wrapping_sub(self.base_timestamp_ms);
        let offset_delta = self.count;
        let nullable_len = |b: Option<&[u8]>| match b {
            None => varint_len(-1),
            Some(b) => varint_len(b.len() as i64) + b.len(),
        };
        let mut body_len = 1
            + varint_len(timestamp_delta)
            + varint_len(offset_delta as i64)
            + nullable_len(key)
            + nullable_len(value)
            + varint_len(headers.len() as i64);
        for (k, v) in headers {
            body_len +=
                nullable_len(Some(k.as_ref())) + nullable_len(v.as_ref().map(|v| v.as_ref()));
        }
        let out = &mut self.records;
        out.reserve(body_len + 5);
        put_varint(out, body_len as i64);
        out.put_u8(0);
        put_varint(out, timestamp_delta);
        put_varint(out, offset_delta as i64);
        put_nullable(out, key);
        put_nullable(out, value);
        put_varint(out, headers.len() as i64);
        for (k, v) in headers {
            put_nullable(out, Some(k.as_ref()));
            put_nullable(out, v.as_ref().map(|v| v.as_ref()));
        }
        self.count += 1;
    }

    /// The finished batch at base offset 0: records compressed with `codec` (0 none, 1 gzip,
    /// 2 snappy, 3 lz4, 4 zstd), CreateTime timestamps, CRC computed. Uncompressed, the records
    /// stay where they were appended.
    pub fn finish(self, codec: i16, producer: ProducerFields) -> Result<Bytes, RecordError> {
        assert!(self.count > 0, "an empty batch is never finished");
        let mut out = if codec == 0 {
            self.records
        } else {
            let body = compress_records(codec, &self.records[BATCH_HEADER_BYTES..])?;
            let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + body.len());
            out.resize(BATCH_HEADER_BYTES, 0);
            out.extend_from_slice(&body);
            out
        };
        let batch_length = i32::try_from(out.len() - 12)
            .map_err(|_| RecordError::Malformed("batch larger than 2 GiB"))?;
        let mut header = &mut out[..BATCH_HEADER_BYTES];
        header.put_i64(0); // base offset: the broker assigns it
        header.put_i32(batch_length);
        header.put_i32(-1); // partition leader epoch
        header.put_i8(2); // magic
        header.put_u32(0); // CRC, below
        header.put_i16(codec & 0x07);
        header.put_i32(self.count - 1);
        header.put_i64(self.base_timestamp_ms);
        header.put_i64(self.max_timestamp_ms);
        header.put_i64(producer.producer_id);
        header.put_i16(producer.producer_epoch);
        header.put_i32(producer.base_sequence);
        header.put_i32(self.count);
        debug_assert!(header.is_empty());
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(out.freeze())
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn varint_len(v: i64) -> usize {
    let mut z = zigzag(v);
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn put_nullable(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{records_section, RecordIter};
    use crate::record_batch::RecordBatchView;
    use crate::records::RecordBatchDecoder;

    #[test]
    fn finished_batches_validate_and_decode_with_every_codec() {
        for codec in 0..=4i16 {
            let mut b = BatchBuilder::new(0);
            for i in 0..50i64 {
                let key = format!("key-{i}");
                let value = vec![b'x'; (i * 7) as usize];
                let headers: Vec<(&str, Option<&[u8]>)> = if i % 2 == 0 {
                    vec![("h", Some(b"v")), ("null", None)]
                } else {
                    vec![]
                };
                b.append(
                    1_000 + i * 3,
                    (i % 5 != 0).then_some(key.as_bytes()),
                    (i % 9 != 0).then_some(&value[..]),
                    &headers,
                );
            }
            let producer = ProducerFields {
                producer_id: 9,
                producer_epoch: 2,
                base_sequence: 100,
            };
            let bytes = b.finish(codec, producer).unwrap();
            let view = RecordBatchView::parse(&bytes).unwrap();
            view.validate().unwrap();
            assert_eq!(view.records_count(), 50);
            assert_eq!(view.last_offset_delta(), 49);
            assert_eq!(view.max_timestamp(), 1_000 + 49 * 3);
            assert_eq!(view.producer_id(), 9);
            assert_eq!(view.base_sequence(), 100);
            assert_eq!(view.compression_codec(), codec);
            let section = records_section(&view).unwrap();
            let records: Vec<_> = RecordIter::new(&section, 50)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(records[7].key, Some(&b"key-7"[..]));
            assert_eq!(records[7].value.unwrap().len(), 49);
            assert_eq!(records[9].value, None);
            assert_eq!(records[5].key, None);
            let headers: Vec<_> = records[4].headers().collect();
            assert_eq!(
                headers,
                vec![(&b"h"[..], Some(&b"v"[..])), (&b"null"[..], None)]
            );
            assert_eq!(records[3].headers().count(), 0);
            // The kafka-protocol crate's decoder (another implementation) agrees.
            let mut buf = bytes.clone();
            let set = RecordBatchDecoder::decode(&mut buf).unwrap();
            assert_eq!(set.records.len(), 50);
            assert_eq!(set.records[10].offset, 10);
            assert_eq!(set.records[10].timestamp, 1_030);
            assert_eq!(set.records[10].sequence, 110);
            assert_eq!(set.records[4].headers.len(), 2);
        }
    }

    #[test]
    fn size_bound_holds() {
        let mut b = BatchBuilder::new(0);
        let headers = [("k", Some(vec![1u8; 300]))];
        let value = vec![0u8; 200_000];
        let before = b.size_bytes();
        b.append(i64::MAX / 2, Some(b"key"), Some(&value), &headers);
        let bound = BatchBuilder::record_size_upper_bound(Some(b"key"), Some(&value), &headers);
        assert!(b.size_bytes() - before <= bound);
    }
}
