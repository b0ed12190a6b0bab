//! The records inside a v2 batch: read them one by one, and rebuild a batch from some of them.
//!
//! The broker looks inside batches only where it must: the log cleaner (which keeps the last
//! record per key) and the key check of compacted topics. Everything else treats batches as
//! opaque. A record's bytes are kept as they were written (its offset and timestamp are deltas
//! from the batch header), so a rebuilt batch with the same base offset and base timestamp carries
//! each kept record byte for byte.
//!
//! Record layout: `length varint | attributes i8 | timestamp_delta varlong | offset_delta varint |
//! key_length varint | key | value_length varint | value | header_count varint | headers…`.
//!
//! Invariants: every length read is checked against the bytes at hand before it is used, so a
//! hostile or damaged batch gives an error, never a panic or an allocation sized by a length
//! field; a rebuilt batch keeps the original's base offset, last offset delta, epoch, producer
//! fields and attributes, so offsets and producer sequences survive compaction.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::record_batch::{RecordBatchView, BATCH_HEADER_BYTES};

pub use crate::record_error::RecordError;

/// One record of a batch, borrowed from the batch's (decompressed) records section.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The whole record, its length prefix included.
    pub raw: &'a [u8],
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's headers, already checked: `header_count` pairs of key and nullable value.
    pub header_count: i32,
    headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The record's headers as `(key, value)` pairs, in the order they were written.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            cursor: Cursor {
                bytes: self.headers,
                at: 0,
            },
            remaining: self.header_count,
        }
    }
}

/// The headers of one record (see [`RecordView::headers`]).
pub struct HeaderIter<'a> {
    cursor: Cursor<'a>,
    remaining: i32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        // The record parser walked these bytes already, so they cannot fail here; stop if they do.
        let key = self.cursor.nullable_bytes().ok().flatten()?;
        let value = self.cursor.nullable_bytes().ok()?;
        Some((key, value))
    }
}

/// Most bytes a batch's records may decompress to. Decompression stops there with an error, so
/// a small compressed batch cannot make the broker allocate gigabytes (a "compression bomb").
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 256 * 1024 * 1024;

/// The records section of a batch, decompressed when the batch is compressed, at most
/// [`MAX_DECOMPRESSED_BATCH_BYTES`].
pub fn records_section<'a>(batch: &RecordBatchView<'a>) -> Result<Cow<'a, [u8]>, RecordError> {
    records_section_limited(batch, MAX_DECOMPRESSED_BATCH_BYTES)
}

/// [`records_section`] with its own limit on the decompressed size.
pub fn records_section_limited<'a>(
    batch: &RecordBatchView<'a>,
    limit_bytes: usize,
) -> Result<Cow<'a, [u8]>, RecordError> {
    use std::io::Read;
    if batch.compression_codec() == 0 {
        // Uncompressed records are read in place: no copy on the produce path.
        return Ok(Cow::Borrowed(&batch.as_bytes()[BATCH_HEADER_BYTES..]));
    }
    let mut out = Vec::new();
    crate::decompression::decompressed(batch, limit_bytes)?
        .read_to_end(&mut out)
        .map_err(crate::decompression::codec_failed)?;
    if out.len() > limit_bytes {
        return Err(RecordError::TooLarge(limit_bytes));
    }
    Ok(Cow::Owned(out))
}

/// Walks the records of a records section; yields an error (and then stops) at the first
/// malformed record.
pub struct RecordIter<'a> {
    bytes: &'a [u8],
    remaining: i32,
}

impl<'a> RecordIter<'a> {
    /// `records_count` comes from the batch header; the walk stops at whichever ends first.
    pub fn new(section: &'a [u8], records_count: i32) -> Self {
        Self {
            bytes: section,
            remaining: records_count,
        }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 || self.bytes.is_empty() {
            return None;
        }
        self.remaining -= 1;
        let parsed = parse_record(self.bytes);
        match &parsed {
            Ok(r) => self.bytes = &self.bytes[r.raw.len()..],
            Err(_) => {
                self.remaining = 0;
                self.bytes = &[];
            }
        }
        Some(parsed)
    }
}

fn parse_record(bytes: &[u8]) -> Result<RecordView<'_>, RecordError> {
    let mut cur = Cursor { bytes, at: 0 };
    let length = cur.varint()?;
    let length = usize::try_from(length).map_err(|_| RecordError::Malformed("negative length"))?;
    let start = cur.at;
    let end = start
        .checked_add(length)
        .filter(|end| *end <= bytes.len())
        .ok_or(RecordError::Malformed("record longer than its batch"))?;
    let mut body = Cursor {
        bytes: &bytes[..end],
        at: start,
    };
    body.take(1)?; // attributes, unused in v2
    let timestamp_delta = body.varlong()?;
    let offset_delta = body.varint()?;
    let key = body.nullable_bytes()?;
    let value = body.nullable_bytes()?;
    let header_count = body.varint()?;
    if header_count < 0 {
        return Err(RecordError::Malformed("negative header count"));
    }
    let headers_start = body.at;
    for _ in 0..header_count {
        body.nullable_bytes()?
            .ok_or(RecordError::Malformed("null header key"))?;
        body.nullable_bytes()?;
    }
    if body.at != end {
        return Err(RecordError::Malformed(
            "record length does not match its fields",
        ));
    }
    Ok(RecordView {
        raw: &bytes[..end],
        timestamp_delta,
        offset_delta,
        key,
        value,
        header_count,
        headers: &bytes[headers_start..end],
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(RecordError::Malformed("field runs past the record"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn unsigned_varint(&mut self, max_bytes: usize) -> Result<u64, RecordError> {
        crate::wire::read_varint_with(max_bytes, || self.take(1).map(|b| b[0]))?
            .ok_or(RecordError::Malformed("varint too long"))
    }

    fn varint(&mut self) -> Result<i32, RecordError> {
        Ok(crate::wire::zigzag_i32(self.unsigned_varint(5)? as u32))
    }

    fn varlong(&mut self) -> Result<i64, RecordError> {
        Ok(crate::wire::zigzag_i64(self.unsigned_varint(10)?))
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(RecordError::Malformed("negative length")),
            n => self.take(n as usize).map(Some),
        }
    }
}

/// A batch holding only `kept` of `original`'s records (given in order, each taken from
/// `original`'s records section). Base offset, last offset delta, base timestamp, leader epoch,
/// attributes and producer fields stay; the record count, the max timestamp (for CreateTime), the
/// length and the CRC are computed anew, and the records are compressed again with the batch's
/// codec.
pub fn rebuild_batch(
    original: &RecordBatchView<'_>,
    kept: &[RecordView<'_>],
) -> Result<Vec<u8>, RecordError> {
    let header = &original.as_bytes()[..BATCH_HEADER_BYTES];
    let plain_len: usize = kept.iter().map(|r| r.raw.len()).sum();
    let mut plain = BytesMut::with_capacity(plain_len);
    for r in kept {
        plain.extend_from_slice(r.raw);
    }
    let body = compress_records(original.compression_codec(), &plain)?;
    let max_timestamp = if original.is_log_append_time() {
        original.max_timestamp()
    } else {
        kept.iter()
            .map(|r| original.base_timestamp().saturating_add(r.timestamp_delta))
            .max()
            .unwrap_or(original.base_timestamp())
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(header);
    out.extend_from_slice(&body);
    let batch_length = i32::try_from(out.len() - 12)
        .map_err(|_| RecordError::Malformed("rebuilt batch too large"))?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// `plain` records compressed with batch codec `codec` (0 none, 1 gzip, 2 snappy, 3 lz4,
/// 4 zstd), as they follow a batch header.
pub fn compress_records(codec: i16, plain: &[u8]) -> Result<BytesMut, RecordError> {
    let mut body = BytesMut::new();
    let fill = |tmp: &mut BytesMut| {
        tmp.extend_from_slice(plain);
        Ok(())
    };
    let compressed = match codec {
        0 => {
            body.extend_from_slice(plain);
            Ok(())
        }
        1 => Gzip::compress(&mut body, fill),
        2 => Snappy::compress(&mut body, fill),
        3 => Lz4::compress(&mut body, fill),
        4 => Zstd::compress(&mut body, fill),
        other => return Err(RecordError::UnknownCodec(other)),
    };
    compressed.map_err(|e| RecordError::Codec("compress records", format!("{e:#}")))?;
    Ok(body)
}

/// `plain` records compressed with batch codec `codec` at `level` (None: the codec's default),
/// as Kafka's `compression.gzip.level`, `compression.lz4.level` and `compression.zstd.level`
/// set it. Snappy has no level.
pub fn compress_records_at(
    codec: i16,
    plain: &[u8],
    level: Option<i32>,
) -> Result<BytesMut, RecordError> {
    use bytes::BufMut;
    use std::io::Write;
    let Some(level) = level else {
        return compress_records(codec, plain);
    };
    let failed = |e: std::io::Error| RecordError::Codec("compress records", e.to_string());
    let mut out = BytesMut::with_capacity(plain.len() / 2 + 64).writer();
    match codec {
        1 => {
            let level = flate2::Compression::new(level.clamp(1, 9) as u32);
            let mut e = flate2::write::GzEncoder::new(&mut out, level);
            e.write_all(plain).map_err(failed)?;
            e.finish().map_err(failed)?;
        }
        3 => {
            let mut e = lz4::EncoderBuilder::new()
                .level(level.clamp(1, 17) as u32)
                .block_mode(lz4::BlockMode::Independent)
                .build(&mut out)
                .map_err(failed)?;
            e.write_all(plain).map_err(failed)?;
            let (_, finished) = e.finish();
            finished.map_err(failed)?;
        }
        4 => zstd::stream::copy_encode(plain, &mut out, level).map_err(failed)?,
        _ => return compress_records(codec, plain),
    }
    Ok(out.into_inner())
}

/// `original` with its records compressed anew with `codec` at `level` (decompressing at most
/// `limit_bytes`): the header stays but for the codec bits, the length and the CRC, so offsets,
/// timestamps and producer fields are the producer's, as in Kafka's recompression.
pub fn recompress_batch(
    original: &RecordBatchView<'_>,
    codec: i16,
    level: Option<i32>,
    limit_bytes: usize,
) -> Result<Vec<u8>, RecordError> {
    let plain = records_section_limited(original, limit_bytes)?;
    let body = compress_records_at(codec, &plain, level)?;
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&original.as_bytes()[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&body);
    let batch_length = i32::try_from(out.len() - 12)
        .map_err(|_| RecordError::Malformed("recompressed batch too large"))?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (i16::from_be_bytes([out[21], out[22]]) & !0x07) | (codec & 0x07);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// A plain record (no producer id, no headers) at `offset` of the batch it will be encoded in,
/// for batches the broker writes itself and for tests. Its sequence is `offset - 1`, so a run of
/// such records encodes as one batch whose base sequence is -1.
pub fn plain_record(
    offset: i64,
    timestamp_ms: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: offset as i32 - 1,
        timestamp: timestamp_ms,
        key,
        value,
        headers: Default::default(),
    }
}

/// Encodes records as one v2 batch (the encoder starts a new batch wherever offset minus sequence
/// changes, so records built by [`plain_record`] stay in one).
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<Vec<u8>, RecordError> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| RecordError::Codec("encode records", format!("{e:#}")))?;
    Ok(buf.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RecordBatchDecoder;

    fn encoded(compression: Compression, n: i64) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let mut r = plain_record(
                    100 + i,
                    1_000 + i,
                    Some(Bytes::from(format!("k{}", i % 3))),
                    (i % 4 != 3).then(|| Bytes::from(vec![b'v'; i as usize])),
                );
                r.partition_leader_epoch = 3;
                r.producer_id = 77;
                r.producer_epoch = 1;
                r.sequence = 5 + i as i32;
                r.headers = [(
                    crate::StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"x")),
                )]
                .into_iter()
                .collect();
                r
            })
            .collect();
        encode_batch(&records, compression).unwrap()
    }

    #[test]
    fn walks_and_rebuilds_every_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = encoded(compression, 10);
            let batch = RecordBatchView::parse(&bytes).unwrap();
            let section = records_section(&batch).unwrap();
            let records: Vec<_> = RecordIter::new(&section, batch.records_count())
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(records.len(), 10);
            assert_eq!(records[4].key, Some(&b"k1"[..]));
            assert_eq!(records[3].value, None);
            assert_eq!(records[9].offset_delta, 9);
            // Keep the odd ones: offsets, sequence fields and the codec survive.
            let kept: Vec<_> = records
                .iter()
                .copied()
                .filter(|r| r.offset_delta % 2 == 1)
                .collect();
            let rebuilt = rebuild_batch(&batch, &kept).unwrap();
            let view = RecordBatchView::parse(&rebuilt).unwrap();
            view.validate().unwrap();
            assert_eq!(view.base_offset(), 100);
            assert_eq!(view.last_offset(), 109);
            assert_eq!(view.records_count(), 5);
            assert_eq!(view.compression_codec(), batch.compression_codec());
            assert_eq!(view.max_timestamp(), 1_009);
            let mut b = Bytes::from(rebuilt.clone());
            let set = RecordBatchDecoder::decode(&mut b).unwrap();
            let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, vec![101, 103, 105, 107, 109]);
            assert_eq!(set.records[0].producer_id, 77);
            assert_eq!(set.records[0].sequence, 6);
            assert_eq!(set.records[0].value, Some(Bytes::from(vec![b'v'; 1])));
        }
    }

    #[test]
    fn decompression_is_bounded() {
        // 2 MB of one repeated record, compressed to a few KB with every codec.
        let records: Vec<Record> = (0..2_000)
            .map(|i| {
                plain_record(
                    i,
                    0,
                    Some(Bytes::from_static(b"k")),
                    Some(Bytes::from(vec![0u8; 1_000])),
                )
            })
            .collect();
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = encode_batch(&records, compression).unwrap();
            assert!(bytes.len() < 200_000, "{compression:?} compresses");
            let batch = RecordBatchView::parse(&bytes).unwrap();
            let whole = records_section_limited(&batch, 4_000_000).unwrap();
            assert_eq!(
                RecordIter::new(&whole, batch.records_count()).count(),
                2_000
            );
            assert_eq!(
                records_section_limited(&batch, 100_000).unwrap_err(),
                RecordError::TooLarge(100_000),
                "{compression:?}"
            );
        }
        // A raw snappy block that claims 4 GB is refused before any allocation.
        let mut claim = vec![0u8; 61];
        claim[16] = 2; // magic
        claim[22] = 2; // snappy
        let mut huge = claim.clone();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
        let len = (huge.len() - 12) as i32;
        huge[8..12].copy_from_slice(&len.to_be_bytes());
        let batch = RecordBatchView::parse(&huge).unwrap();
        assert!(matches!(
            records_section(&batch),
            Err(RecordError::TooLarge(_))
        ));
    }

    #[test]
    fn malformed_records_are_errors() {
        let bytes = encoded(Compression::None, 3);
        let batch = RecordBatchView::parse(&bytes).unwrap();
        let section = records_section(&batch).unwrap();
        // Every truncation and every single-byte change parses or errors, never panics.
        for cut in 0..section.len() {
            let _ = RecordIter::new(&section[..cut], 3).count();
        }
        for i in 0..section.len() {
            let mut damaged = section.to_vec();
            damaged[i] ^= 0xff;
            for r in RecordIter::new(&damaged, 3) {
                let _ = r;
            }
        }
        let huge_key = [0x02, 0x00, 0x00, 0x00, 0xfe, 0xff, 0xff, 0xff, 0x0f];
        assert!(RecordIter::new(&huge_key, 1).next().unwrap().is_err());
    }
}
