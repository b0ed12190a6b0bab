//! A view over Kafka's magic v2 record batches: read the header, validate, rewrite in place.
//!
//! Record data is opaque here: the broker never decodes records on the hot path. Validation
//! checks what can be checked from the header and the CRC-32C (which covers everything from the
//! attributes to the end of the batch). Rewriting touches only header fields; fields under the
//! CRC (attributes, max timestamp) are followed by a CRC update.
//!
//! Layout (big-endian), 61 header bytes:
//! `base_offset i64 | batch_length i32 | partition_leader_epoch i32 | magic i8 | crc u32 |
//!  attributes i16 | last_offset_delta i32 | base_timestamp i64 | max_timestamp i64 |
//!  producer_id i64 | producer_epoch i16 | base_sequence i32 | records_count i32 | records…`

/// Bytes before `batch_length` counts: base offset and the length itself.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Bytes of the v2 batch header, records excluded.
pub const BATCH_HEADER_BYTES: usize = 61;

const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch is truncated: {available} bytes where {needed} are needed")]
    Truncated { needed: usize, available: usize },
    #[error("record batch magic {0} is not supported (only v2)")]
    BadMagic(i8),
    #[error("record batch length {0} is invalid")]
    BadLength(i32),
    #[error("record batch CRC mismatch: header says {stored:#010x}, data gives {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch header is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Total bytes of the batch starting at `bytes[0]`, from its length field, if that much is known.
pub fn batch_size_bytes(bytes: &[u8]) -> Option<Result<usize, BatchError>> {
    if bytes.len() < LOG_OVERHEAD_BYTES {
        return None;
    }
    let batch_length = i32::from_be_bytes(bytes[8..12].try_into().ok()?);
    if batch_length < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return Some(Err(BatchError::BadLength(batch_length)));
    }
    Some(Ok(LOG_OVERHEAD_BYTES + batch_length as usize))
}

/// A read-only view of one whole batch.
#[derive(Clone, Copy)]
pub struct RecordBatchView<'a> {
    bytes: &'a [u8],
}

impl<'a> RecordBatchView<'a> {
    /// Takes the first batch off `bytes`, checking only that its header and declared length fit.
    /// Use [`RecordBatchView::validate`] for the full check.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let size = batch_size_bytes(bytes).expect("header length checked")?;
        if size > bytes.len() {
            return Err(BatchError::Truncated {
                needed: size,
                available: bytes.len(),
            });
        }
        let magic = bytes[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(BatchError::BadMagic(magic));
        }
        Ok(Self {
            bytes: &bytes[..size],
        })
    }

    /// Checks the CRC and the header's internal consistency.
    pub fn validate(&self) -> Result<(), BatchError> {
        let stored = self.crc();
        let computed = crc32c::crc32c(&self.bytes[ATTRIBUTES_AT..]);
        if stored != computed {
            return Err(BatchError::CrcMismatch { stored, computed });
        }
        if self.last_offset_delta() < 0 {
            return Err(BatchError::Inconsistent("negative last offset delta"));
        }
        if self.records_count() < 0 {
            return Err(BatchError::Inconsistent("negative record count"));
        }
        Ok(())
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }
    pub fn base_offset(&self) -> i64 {
        i64_at(self.bytes, 0)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + self.last_offset_delta() as i64
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        i32_at(self.bytes, PARTITION_LEADER_EPOCH_AT)
    }
    pub fn crc(&self) -> u32 {
        i32_at(self.bytes, CRC_AT) as u32
    }
    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes([self.bytes[ATTRIBUTES_AT], self.bytes[ATTRIBUTES_AT + 1]])
    }
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression_codec(&self) -> i16 {
        self.attributes() & COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & TIMESTAMP_TYPE_BIT != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        i32_at(self.bytes, LAST_OFFSET_DELTA_AT)
    }
    pub fn base_timestamp(&self) -> i64 {
        i64_at(self.bytes, BASE_TIMESTAMP_AT)
    }
    pub fn max_timestamp(&self) -> i64 {
        i64_at(self.bytes, MAX_TIMESTAMP_AT)
    }
    pub fn producer_id(&self) -> i64 {
        i64_at(self.bytes, PRODUCER_ID_AT)
    }
    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes([
            self.bytes[PRODUCER_EPOCH_AT],
            self.bytes[PRODUCER_EPOCH_AT + 1],
        ])
    }
    pub fn base_sequence(&self) -> i32 {
        i32_at(self.bytes, BASE_SEQUENCE_AT)
    }
    /// The sequence of the batch's last record; sequences wrap from `i32::MAX` to 0.
    pub fn last_sequence(&self) -> i32 {
        let (base, delta) = (self.base_sequence(), self.last_offset_delta());
        if base > i32::MAX - delta {
            delta - (i32::MAX - base) - 1
        } else {
            base + delta
        }
    }
    pub fn records_count(&self) -> i32 {
        i32_at(self.bytes, RECORDS_COUNT_AT)
    }
}

/// A mutable view of one whole batch, for the broker to stamp it as it appends.
pub struct RecordBatchViewMut<'a> {
    bytes: &'a mut [u8],
}

impl<'a> RecordBatchViewMut<'a> {
    /// `bytes` must be exactly one batch that [`RecordBatchView::parse`] accepted.
    pub fn new(bytes: &'a mut [u8]) -> Result<Self, BatchError> {
        let size = RecordBatchView::parse(bytes)?.size_bytes();
        if size != bytes.len() {
            return Err(BatchError::Inconsistent("slice is not exactly one batch"));
        }
        Ok(Self { bytes })
    }

    pub fn view(&self) -> RecordBatchView<'_> {
        RecordBatchView { bytes: self.bytes }
    }

    /// Base offset is outside the CRC: no CRC update.
    pub fn set_base_offset(&mut self, base_offset: i64) {
        debug_assert!(base_offset >= 0);
        self.bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
    }

    /// Partition leader epoch is outside the CRC: no CRC update.
    pub fn set_partition_leader_epoch(&mut self, epoch: i32) {
        self.bytes[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
            .copy_from_slice(&epoch.to_be_bytes());
    }

    /// Stamps the producer id, epoch and base sequence (an idempotent producer sending a batch
    /// again in a new epoch) and updates the CRC, which covers them.
    pub fn set_producer_fields(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) {
        self.bytes[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
        self.bytes[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
            .copy_from_slice(&producer_epoch.to_be_bytes());
        self.bytes[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
            .copy_from_slice(&base_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&self.bytes[ATTRIBUTES_AT..]);
        self.bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        debug_assert!(self.view().validate().is_ok());
    }

    /// Marks the batch LogAppendTime with `timestamp_ms` as its max timestamp, as Kafka does, and
    /// updates the CRC, which covers both fields.
    pub fn set_log_append_time(&mut self, timestamp_ms: i64) {
        let attributes = self.view().attributes() | TIMESTAMP_TYPE_BIT;
        self.bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        self.bytes[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&timestamp_ms.to_be_bytes());
        let crc = crc32c::crc32c(&self.bytes[ATTRIBUTES_AT..]);
        self.bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        debug_assert!(self.view().validate().is_ok());
    }
}

/// Iterates over consecutive batches in `bytes`, yielding each with its position.
/// Stops with an error at the first batch that does not parse.
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> BatchIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }
    /// Bytes consumed by the batches yielded so far.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(usize, RecordBatchView<'a>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.bytes.len() {
            return None;
        }
        match RecordBatchView::parse(&self.bytes[self.position..]) {
            Ok(view) => {
                let at = self.position;
                self.position += view.size_bytes();
                Some(Ok((at, view)))
            }
            Err(e) => {
                // Yield the error once, then stop.
                self.position = self.bytes.len();
                Some(Err(e))
            }
        }
    }
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, RecordBatchDecoder, TimestampType};

    /// A real batch from the kafka-protocol crate's encoder.
    pub fn encoded_batch(count: usize, compression: Compression) -> Vec<u8> {
        crate::testing::batch(count, 100, 1_000, compression)
    }

    #[test]
    fn parses_and_validates_real_batches_for_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = encoded_batch(10, c);
            let v = RecordBatchView::parse(&b).unwrap();
            v.validate().unwrap();
            assert_eq!(v.size_bytes(), b.len());
            assert_eq!(v.last_offset_delta(), 9);
            assert_eq!(v.records_count(), 10);
            assert_eq!(v.max_timestamp(), 1_009);
        }
    }

    #[test]
    fn flipped_bit_fails_crc() {
        let mut b = encoded_batch(3, Compression::None);
        let n = b.len();
        b[n - 5] ^= 0x10;
        let v = RecordBatchView::parse(&b).unwrap();
        assert!(matches!(v.validate(), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn truncated_and_bad_magic_are_rejected() {
        let b = encoded_batch(3, Compression::None);
        assert!(matches!(
            RecordBatchView::parse(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            RecordBatchView::parse(&b[..20]),
            Err(BatchError::Truncated { .. })
        ));
        let mut m = b.clone();
        m[MAGIC_AT] = 1;
        assert_eq!(
            RecordBatchView::parse(&m).err(),
            Some(BatchError::BadMagic(1))
        );
        let mut l = b.clone();
        l[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(
            RecordBatchView::parse(&l).err(),
            Some(BatchError::BadLength(3))
        );
    }

    #[test]
    fn rewrites_keep_crc_valid_and_records_readable() {
        let mut b = encoded_batch(5, Compression::Lz4);
        {
            let mut m = RecordBatchViewMut::new(&mut b).unwrap();
            m.set_base_offset(1_000);
            m.set_partition_leader_epoch(7);
            m.set_log_append_time(42);
        }
        let v = RecordBatchView::parse(&b).unwrap();
        v.validate().unwrap();
        assert_eq!(
            (v.base_offset(), v.last_offset(), v.partition_leader_epoch()),
            (1_000, 1_004, 7)
        );
        assert!(v.is_log_append_time());
        let mut bytes = bytes::Bytes::from(b);
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(set.records.len(), 5);
        assert_eq!(set.records[4].offset, 1_004);
        assert_eq!(set.records[4].timestamp_type, TimestampType::LogAppend);
    }

    #[test]
    fn iterates_over_consecutive_batches_and_stops_at_garbage() {
        let mut all = encoded_batch(2, Compression::None);
        let first = all.len();
        all.extend(encoded_batch(3, Compression::Gzip));
        let second_end = all.len();
        all.extend([0u8; 30]);
        let mut it = BatchIter::new(&all);
        assert_eq!(it.next().unwrap().unwrap().0, 0);
        assert_eq!(it.next().unwrap().unwrap().0, first);
        assert_eq!(it.position(), second_end);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}
