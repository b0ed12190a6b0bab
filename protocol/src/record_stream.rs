//! A batch's records read as a stream: decompressed through a bounded reader and walked field by
//! field, so that looking at every record of a batch neither holds its records section in memory
//! nor allocates per record.
//!
//! The broker does this where it must see each record of a batch it otherwise keeps opaque: the
//! validation of a produced batch (as Kafka's LogValidator: record count, consecutive offset
//! deltas, every length inside the records, a known codec, keys on compacted topics) and the
//! timestamp lookup of ListOffsets.
//!
//! Invariants: at most `limit_bytes` are decompressed from one batch, and more is an error; the
//! memory a walk holds is bounded by the codec, not by the data: a 16 KiB read buffer, the zstd
//! window (at most `decompression::ZSTD_WINDOW_LOG_MAX`), the lz4 block (at most 4 MiB by the frame format),
//! the gzip window (32 KiB) or one snappy block, whose claimed size is checked against what its
//! compressed bytes can hold before it is allocated.

use std::io::BufRead;

use crate::decompression::{codec_failed, decompressed};
use crate::record_batch::RecordBatchView;
use crate::record_error::RecordError;

/// What a walk tells of one record: enough for validation and timestamp lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSummary {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub has_key: bool,
}

/// Why a batch's records are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecords {
    /// The bytes do not hold the records the header declares (lengths, counts, codec).
    #[error("{0}")]
    Malformed(RecordError),
    /// Well-formed records that break a rule (a missing key on a compacted topic, an offset
    /// delta out of sequence), each with its index in the batch: Produce v8+ reports them in
    /// `record_errors` (KIP-467).
    #[error("{} record errors, the first: {}", .0.len(), .0[0].1)]
    Refused(Vec<(i32, String)>),
    /// As `Refused`, with at least one record whose timestamp is out of range (Kafka answers
    /// INVALID_TIMESTAMP then).
    #[error("{} record errors, the first: {}", .0.len(), .0[0].1)]
    Timestamps(Vec<(i32, String)>),
}

/// What a produced batch's records must keep beyond their structure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordRules {
    /// Every record has a key (compacted topics).
    pub keys_required: bool,
    /// Each record's CreateTime timestamp lies within `[min, max]` ms, unless it is -1 (none).
    pub timestamp_range_ms: Option<(i64, i64)>,
}

/// Walks every record of `batch`, checking lengths, counts and offset deltas as Kafka's
/// LogValidator does, and that each record has a key when `keys_required` (compacted topics;
/// every keyless record is named). Decompresses at most `limit_bytes`. Returns the number of
/// records.
pub fn validate_records(
    batch: &RecordBatchView<'_>,
    limit_bytes: usize,
    keys_required: bool,
) -> Result<i32, InvalidRecords> {
    let rules = RecordRules {
        keys_required,
        timestamp_range_ms: None,
    };
    validate_records_with(batch, limit_bytes, rules)
}

/// [`validate_records`] with every rule of [`RecordRules`]: each record that breaks one is
/// named, timestamps as Kafka's LogValidator words it.
pub fn validate_records_with(
    batch: &RecordBatchView<'_>,
    limit_bytes: usize,
    rules: RecordRules,
) -> Result<i32, InvalidRecords> {
    let declared = batch.records_count();
    let mut index = 0;
    let mut refused = Vec::new();
    let mut bad_timestamp = false;
    let mut records = RecordWalk::open(batch, limit_bytes).map_err(InvalidRecords::Malformed)?;
    while let Some(record) = records.next_record().map_err(InvalidRecords::Malformed)? {
        if index >= declared {
            return Err(InvalidRecords::Malformed(RecordError::Malformed(
                "incorrect declared batch size, records still remaining",
            )));
        }
        if record.offset_delta != index {
            // Kafka re-numbers such records in a compressed batch and keeps them in a plain
            // one; both give offsets the header does not cover, so they are refused here.
            return Err(InvalidRecords::Refused(vec![(
                index,
                format!(
                    "record {index} has offset delta {}: inner record offsets must be consecutive",
                    record.offset_delta
                ),
            )]));
        }
        if rules.keys_required && !record.has_key {
            refused.push((
                index,
                "compacted topic cannot accept message without key".to_string(),
            ));
        }
        if let Some((min, max)) = rules.timestamp_range_ms {
            let timestamp = batch
                .base_timestamp()
                .saturating_add(record.timestamp_delta);
            if timestamp != -1 && !(min..=max).contains(&timestamp) {
                bad_timestamp = true;
                refused.push((
                    index,
                    format!(
                        "Timestamp {timestamp} of message with offset {index} is out of range. The timestamp should be within [{min}, {max}]"
                    ),
                ));
            }
        }
        index += 1;
    }
    if index != declared {
        return Err(InvalidRecords::Malformed(RecordError::Malformed(
            "incorrect declared batch size, premature end of the records",
        )));
    }
    if bad_timestamp {
        return Err(InvalidRecords::Timestamps(refused));
    }
    if !refused.is_empty() {
        return Err(InvalidRecords::Refused(refused));
    }
    Ok(index)
}

/// The first record whose timestamp is at or after `target_ms`, as `(timestamp, offset)`.
pub fn first_at_or_after(
    batch: &RecordBatchView<'_>,
    target_ms: i64,
    limit_bytes: usize,
) -> Result<Option<(i64, i64)>, RecordError> {
    let mut records = RecordWalk::open(batch, limit_bytes)?;
    let mut left = batch.records_count();
    while left > 0 {
        let Some(r) = records.next_record()? else {
            break;
        };
        left -= 1;
        let timestamp = batch.base_timestamp().saturating_add(r.timestamp_delta);
        if timestamp >= target_ms {
            let offset = batch
                .base_offset()
                .saturating_add(i64::from(r.offset_delta));
            return Ok(Some((timestamp, offset)));
        }
    }
    Ok(None)
}

/// The records of one batch, read one at a time from its (decompressed) records section.
pub struct RecordWalk<'a> {
    input: Box<dyn BufRead + 'a>,
    /// Bytes of the records section consumed so far.
    position: usize,
    limit_bytes: usize,
}

impl<'a> RecordWalk<'a> {
    /// Starts a walk over `batch`'s records; an unknown codec is an error here.
    pub fn open(batch: &RecordBatchView<'a>, limit_bytes: usize) -> Result<Self, RecordError> {
        Ok(Self {
            input: decompressed(batch, limit_bytes)?,
            position: 0,
            limit_bytes,
        })
    }

    /// The next record, `None` at the end of the section.
    pub fn next_record(&mut self) -> Result<Option<RecordSummary>, RecordError> {
        if self.at_end()? {
            return Ok(None);
        }
        let length = self.varint()?;
        let length =
            usize::try_from(length).map_err(|_| RecordError::Malformed("negative length"))?;
        let start = self.position;
        self.skip(1)?; // attributes, unused in v2
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varint()?;
        let has_key = self.nullable_bytes()?;
        self.nullable_bytes()?; // value
        let header_count = self.varint()?;
        if header_count < 0 {
            return Err(RecordError::Malformed("negative header count"));
        }
        for _ in 0..header_count {
            if !self.nullable_bytes()? {
                return Err(RecordError::Malformed("null header key"));
            }
            self.nullable_bytes()?;
            if self.position - start > length {
                break; // caught below; a header count cannot make the walk outrun the record
            }
        }
        if self.position - start != length {
            return Err(RecordError::Malformed(
                "record length does not match its fields",
            ));
        }
        Ok(Some(RecordSummary {
            offset_delta,
            timestamp_delta,
            has_key,
        }))
    }

    fn at_end(&mut self) -> Result<bool, RecordError> {
        Ok(self.input.fill_buf().map_err(codec_failed)?.is_empty())
    }

    fn byte(&mut self) -> Result<u8, RecordError> {
        let b =
            *self
                .input
                .fill_buf()
                .map_err(codec_failed)?
                .first()
                .ok_or(RecordError::Malformed(
                    "record runs past the end of the batch",
                ))?;
        self.input.consume(1);
        self.advance(1)?;
        Ok(b)
    }

    /// Passes over `n` bytes without copying them anywhere.
    fn skip(&mut self, mut n: usize) -> Result<(), RecordError> {
        while n > 0 {
            let available = self.input.fill_buf().map_err(codec_failed)?.len();
            if available == 0 {
                return Err(RecordError::Malformed(
                    "record runs past the end of the batch",
                ));
            }
            let step = available.min(n);
            self.input.consume(step);
            self.advance(step)?;
            n -= step;
        }
        Ok(())
    }

    fn advance(&mut self, n: usize) -> Result<(), RecordError> {
        self.position += n;
        if self.position > self.limit_bytes {
            return Err(RecordError::TooLarge(self.limit_bytes));
        }
        Ok(())
    }

    fn unsigned_varint(&mut self, max_bytes: usize) -> Result<u64, RecordError> {
        crate::wire::read_varint_with(max_bytes, || self.byte())?
            .ok_or(RecordError::Malformed("varint too long"))
    }

    fn varint(&mut self) -> Result<i32, RecordError> {
        Ok(crate::wire::zigzag_i32(self.unsigned_varint(5)? as u32))
    }

    fn varlong(&mut self) -> Result<i64, RecordError> {
        Ok(crate::wire::zigzag_i64(self.unsigned_varint(10)?))
    }

    /// Skips a length-prefixed field; returns whether it was present (not null).
    fn nullable_bytes(&mut self) -> Result<bool, RecordError> {
        match self.varint()? {
            -1 => Ok(false),
            n if n < 0 => Err(RecordError::Malformed("negative length")),
            n => self.skip(n as usize).map(|()| true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode_batch, plain_record};
    use crate::records::{Compression, Record};
    use bytes::Bytes;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn records(n: i64, value_bytes: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                plain_record(
                    i,
                    1_000 + i,
                    (i % 5 != 4).then(|| Bytes::from(format!("k{i}"))),
                    Some(Bytes::from(vec![b'v'; value_bytes])),
                )
            })
            .collect()
    }

    /// Rewrites a header field and the CRC, as a lying client would.
    fn with_field(mut bytes: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
        bytes[at..at + value.len()].copy_from_slice(value);
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn every_codec_validates_and_finds_timestamps() {
        for codec in CODECS {
            let bytes = encode_batch(&records(20, 100), codec).unwrap();
            let batch = RecordBatchView::parse(&bytes).unwrap();
            assert_eq!(
                validate_records(&batch, 1 << 20, false),
                Ok(20),
                "{codec:?}"
            );
            assert_eq!(
                first_at_or_after(&batch, 1_007, 1 << 20),
                Ok(Some((1_007, 7)))
            );
            assert_eq!(first_at_or_after(&batch, 5_000, 1 << 20), Ok(None));
            let Err(InvalidRecords::Refused(refused)) = validate_records(&batch, 1 << 20, true)
            else {
                panic!("keyless records are refused one by one");
            };
            let indexes: Vec<i32> = refused.iter().map(|(i, _)| *i).collect();
            assert_eq!(indexes, vec![4, 9, 14, 19], "{codec:?}");
        }
    }

    #[test]
    fn a_count_that_lies_is_refused() {
        for codec in CODECS {
            let bytes = encode_batch(&records(3, 10), codec).unwrap();
            for count in [0i32, 2, 4, 1000, i32::MAX] {
                let lying = with_field(bytes.clone(), 57, &count.to_be_bytes());
                let batch = RecordBatchView::parse(&lying).unwrap();
                assert!(
                    matches!(
                        validate_records(&batch, 1 << 20, false),
                        Err(InvalidRecords::Malformed(_))
                    ),
                    "{codec:?} count {count}"
                );
            }
        }
    }

    #[test]
    fn offset_deltas_must_be_consecutive() {
        let bytes = encode_batch(&records(3, 10), Compression::None).unwrap();
        let batch = RecordBatchView::parse(&bytes).unwrap();
        let section = crate::record::records_section(&batch).unwrap();
        let third: usize = crate::record::RecordIter::new(&section, 3)
            .take(2)
            .map(|r| r.unwrap().raw.len())
            .sum();
        // One-byte length, attributes and timestamp delta, then the offset delta (zigzag 2 = 4).
        let at = 61 + third + 3;
        assert_eq!(bytes[at], 4);
        let lying = with_field(bytes.clone(), at, &[10]);
        let batch = RecordBatchView::parse(&lying).unwrap();
        assert!(matches!(
            validate_records(&batch, 1 << 20, false),
            Err(InvalidRecords::Refused(r)) if r[0].0 == 2
        ));
    }

    #[test]
    fn an_unknown_codec_and_garbage_payloads_are_refused() {
        let bytes = encode_batch(&records(3, 10), Compression::Gzip).unwrap();
        let unknown = with_field(bytes.clone(), 21, &[0, 6]);
        let batch = RecordBatchView::parse(&unknown).unwrap();
        assert_eq!(
            validate_records(&batch, 1 << 20, false),
            Err(InvalidRecords::Malformed(RecordError::UnknownCodec(6)))
        );
        for codec in 1..=4u8 {
            let mut garbage = bytes[..61].to_vec();
            garbage.extend((0..200u32).map(|i| (i * 7919 % 251) as u8));
            let len = (garbage.len() - 12) as i32;
            garbage[8..12].copy_from_slice(&len.to_be_bytes());
            let garbage = with_field(garbage, 21, &[0, codec]);
            let batch = RecordBatchView::parse(&garbage).unwrap();
            assert!(
                validate_records(&batch, 1 << 20, false).is_err(),
                "codec {codec}"
            );
        }
    }

    #[test]
    fn every_damaged_byte_is_an_error_or_a_valid_batch_never_a_panic() {
        for codec in CODECS {
            let bytes = encode_batch(&records(4, 30), codec).unwrap();
            for i in 61..bytes.len() {
                let mut damaged = bytes.clone();
                damaged[i] ^= 0x5a;
                let batch = RecordBatchView::parse(&damaged).unwrap();
                let _ = validate_records(&batch, 1 << 20, false);
                let _ = first_at_or_after(&batch, 0, 1 << 20);
            }
        }
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        for codec in &CODECS[1..] {
            let bytes = encode_batch(&records(2_000, 1_000), *codec).unwrap();
            let batch = RecordBatchView::parse(&bytes).unwrap();
            assert_eq!(validate_records(&batch, 4_000_000, false), Ok(2_000));
            assert_eq!(
                validate_records(&batch, 100_000, false),
                Err(InvalidRecords::Malformed(RecordError::TooLarge(100_000))),
                "{codec:?}"
            );
            assert_eq!(
                first_at_or_after(&batch, i64::MAX, 100_000),
                Err(RecordError::TooLarge(100_000))
            );
        }
    }

    #[test]
    fn a_snappy_block_that_claims_more_than_it_can_hold_is_refused_before_allocating() {
        let mut claim = vec![0u8; 61];
        claim[16] = 2;
        claim[22] = 2;
        claim.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 0x00, 0x00]); // 256 MiB from 2 bytes
        let len = (claim.len() - 12) as i32;
        claim[8..12].copy_from_slice(&len.to_be_bytes());
        let batch = RecordBatchView::parse(&claim).unwrap();
        assert!(matches!(
            validate_records(&batch, usize::MAX / 2, false),
            Err(InvalidRecords::Malformed(RecordError::Malformed(_)))
        ));
    }
}
