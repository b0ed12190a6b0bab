//! The partition log: an ordered run of segments, the last one active.
//!
//! Owns the files of one partition directory. Validates each produced batch once (size, CRC,
//! header consistency), assigns offsets, appends, rolls segments, and serves reads as slices of the
//! mapped segments. It knows nothing of the network or of replication.
//!
//! Invariants: segments are keyed by base offset and each starts at or after the previous one's
//! next offset; only the last segment is written; `log_start_offset <= log_end_offset`.

pub mod mapped_file;
pub mod offset_index;
pub mod segment;
pub mod time_index;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use quipu_config::topic::{TimestampType, TopicConfig};
use quipu_protocol::record_batch::{BatchError, RecordBatchView};
use quipu_protocol::records::RecordBatchDecoder;
use segment::{Segment, SegmentSizes};

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    #[error("record batch of {size_bytes} bytes exceeds max.message.bytes {max_bytes}")]
    TooLarge { size_bytes: usize, max_bytes: i32 },
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum LogStartError {
    #[error(transparent)]
    OutOfRange(#[from] OffsetOutOfRange),
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
pub struct OffsetOutOfRange {
    pub offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp for LogAppendTime topics, -1 otherwise.
    pub log_append_time_ms: i64,
}

pub struct Log {
    dir: PathBuf,
    config: TopicConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    leader_epoch: i32,
}

impl Log {
    /// Opens the partition directory, creating it if needed. Closed segments are opened as they
    /// were left (falling back to a full scan when their indexes disagree); the last segment is
    /// always re-scanned with CRC checks and cut after its last valid batch.
    pub fn open(dir: &Path, config: TopicConfig, now_ms: i64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name
                .strip_suffix(".log")
                .and_then(|b| b.parse::<i64>().ok())
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let sizes = sizes_of(&config);
        let mut segments = BTreeMap::new();
        for (i, &base) in bases.iter().enumerate() {
            let active = i + 1 == bases.len();
            let segment = if active {
                let r = Segment::recover(dir, base, sizes, true, true, now_ms)?;
                if r.truncated_bytes > 0 {
                    tracing::warn!(dir = %dir.display(), base_offset = base, cut_bytes = r.truncated_bytes, next_offset = r.segment.next_offset(), "log recovery cut invalid bytes after the last valid batch");
                }
                r.segment
            } else {
                match Segment::open_closed(dir, base, sizes, now_ms) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), base_offset = base, error = %e, "rebuilding segment indexes");
                        Segment::recover(dir, base, sizes, false, true, now_ms)?.segment
                    }
                }
            };
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            segments.insert(0, Segment::create(dir, 0, sizes, now_ms)?);
        }
        let log_start_offset = *segments.keys().next().expect("at least one segment");
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            leader_epoch: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: TopicConfig) {
        self.config = config;
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log has an active segment")
    }

    /// Checks one produced batch as Kafka does before it is appended.
    pub fn validate_batch<'a>(
        &self,
        records: &'a [u8],
    ) -> Result<RecordBatchView<'a>, AppendError> {
        let batch = RecordBatchView::parse(records).map_err(|e| match e {
            BatchError::BadMagic(_) => AppendError::InvalidRecord(e.to_string()),
            _ => AppendError::Corrupt(e.to_string()),
        })?;
        if batch.size_bytes() != records.len() {
            return Err(AppendError::InvalidRecord(
                "produce requests must contain exactly one record batch".into(),
            ));
        }
        if batch.size_bytes() > self.config.max_message_bytes as usize {
            return Err(AppendError::TooLarge {
                size_bytes: batch.size_bytes(),
                max_bytes: self.config.max_message_bytes,
            });
        }
        batch
            .validate()
            .map_err(|e| AppendError::Corrupt(e.to_string()))?;
        if batch.base_offset() != 0 {
            return Err(AppendError::InvalidRecord(format!(
                "the base offset of the record batch should be 0, but it is {}",
                batch.base_offset()
            )));
        }
        if batch.records_count() != batch.last_offset_delta() + 1 {
            return Err(AppendError::InvalidRecord(
                "inconsistent batch offset range".into(),
            ));
        }
        if batch.is_control() {
            return Err(AppendError::InvalidRecord(
                "clients may not write control batches".into(),
            ));
        }
        if batch.is_transactional() {
            return Err(AppendError::InvalidRecord(
                "transactions are not supported yet".into(),
            ));
        }
        Ok(batch)
    }

    /// Validates and appends one produced batch, assigning its offsets.
    pub fn append(&mut self, records: &[u8], now_ms: i64) -> Result<AppendInfo, AppendError> {
        let batch = self.validate_batch(records)?;
        let base_offset = self.log_end_offset();
        let last_offset = base_offset + batch.last_offset_delta() as i64;
        let sizes = sizes_of(&self.config);
        let batch_max_timestamp = match self.config.message_timestamp_type {
            TimestampType::LogAppendTime => now_ms,
            TimestampType::CreateTime => batch.max_timestamp(),
        };
        let roll = self.active().should_roll(
            batch.size_bytes(),
            last_offset,
            batch_max_timestamp,
            sizes.capacity_bytes,
            self.config.segment_ms,
            now_ms,
        );
        if roll {
            self.roll(batch.size_bytes(), now_ms)?;
        }
        let log_append_time_ms = match self.config.message_timestamp_type {
            TimestampType::LogAppendTime => Some(now_ms),
            TimestampType::CreateTime => None,
        };
        let epoch = self.leader_epoch;
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        active.append(records, base_offset, epoch, log_append_time_ms);
        debug_assert_eq!(self.log_end_offset(), last_offset + 1);
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time_ms: log_append_time_ms.unwrap_or(-1),
        })
    }

    /// Closes the active segment and starts a new one at the log end offset, large enough for a
    /// batch of `next_batch_bytes` even when that exceeds `segment.bytes`.
    fn roll(&mut self, next_batch_bytes: usize, now_ms: i64) -> io::Result<()> {
        let base = self.log_end_offset();
        let mut sizes = sizes_of(&self.config);
        sizes.capacity_bytes = sizes.capacity_bytes.max(next_batch_bytes);
        let (old_base, old_size) = (self.active().base_offset(), self.active().size_bytes());
        if old_size == 0 {
            // Nothing in it yet: replace it rather than leave an empty segment behind.
            self.segments.remove(&old_base);
            for ext in ["log", "index", "timeindex"] {
                std::fs::remove_file(segment::file_path(&self.dir, old_base, ext))?;
            }
        } else {
            self.segments
                .get_mut(&old_base)
                .expect("active segment")
                .close()?;
        }
        tracing::debug!(dir = %self.dir.display(), base_offset = base, "rolled segment");
        self.segments
            .insert(base, Segment::create(&self.dir, base, sizes, now_ms)?);
        Ok(())
    }

    /// Whole batches from the one holding `offset` up to `max_offset` (exclusive) and
    /// `max_bytes`, at least one batch when `min_one`. `Ok(None)` at the log end.
    pub fn read(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Option<Bytes>, OffsetOutOfRange> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        let first = self
            .segments
            .range(..=offset)
            .next_back()
            .map(|(b, _)| *b)
            .unwrap_or(self.log_start_offset);
        for (_, segment) in self.segments.range(first..) {
            if let Some(bytes) = segment.read(offset, max_offset, max_bytes, min_one) {
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    /// The first record whose timestamp is at or after `target_ms`, as `(timestamp, offset)`.
    pub fn offset_for_timestamp(&self, target_ms: i64) -> Option<(i64, i64)> {
        for segment in self.segments.values() {
            if segment.max_timestamp() < target_ms {
                continue;
            }
            for batch in segment.batches_from_timestamp(target_ms) {
                if batch.max_timestamp() >= target_ms {
                    return first_record_at_or_after(&batch, target_ms);
                }
            }
        }
        None
    }

    /// The record with the largest timestamp (the first such), as `(timestamp, offset)`.
    pub fn max_timestamp_and_offset(&self) -> Option<(i64, i64)> {
        let mut best: Option<&Segment> = None;
        for s in self.segments.values() {
            if s.max_timestamp() >= 0 && best.is_none_or(|b| s.max_timestamp() > b.max_timestamp())
            {
                best = Some(s);
            }
        }
        let batch = best?.batch_with_max_timestamp()?;
        first_record_at_or_after(&batch, batch.max_timestamp())
    }

    /// Bytes held by all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size_bytes() as u64).sum()
    }

    /// Moves the log start offset forward to `offset` (DeleteRecords, or a checkpoint at start)
    /// and deletes the segments wholly below it. Offsets past the high watermark `limit` are out
    /// of range; an offset below the current start changes nothing.
    pub fn advance_log_start_offset(
        &mut self,
        offset: i64,
        limit: i64,
    ) -> Result<i64, LogStartError> {
        if offset > limit || offset < 0 {
            return Err(LogStartError::OutOfRange(OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: limit,
            }));
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            // Whole segments below the new start go; the active segment always stays.
            while self.segments.len() > 1 {
                let (&base, first) = self.segments.iter().next().expect("segments");
                if first.next_offset() > offset {
                    break;
                }
                let segment = self.segments.remove(&base).expect("present");
                segment.delete_files(&self.dir)?;
            }
        }
        Ok(self.log_start_offset)
    }

    /// Deletes the oldest closed segments that are past `retention.ms` (by their largest
    /// timestamp, or when they were last written if they carry none) or that put the log over
    /// `retention.bytes`; the active segment is never deleted. Returns the deleted base offsets.
    pub fn apply_retention(&mut self, now_ms: i64) -> io::Result<Vec<i64>> {
        let (retention_ms, retention_bytes) =
            (self.config.retention_ms, self.config.retention_bytes);
        let mut over_bytes = if retention_bytes < 0 {
            0
        } else {
            self.size_bytes() as i64 - retention_bytes
        };
        let mut deleted = Vec::new();
        while self.segments.len() > 1 {
            let (&base, first) = self.segments.iter().next().expect("segments");
            let age_ms = now_ms
                - if first.max_timestamp() >= 0 {
                    first.max_timestamp()
                } else {
                    first.last_modified_ms()
                };
            let expired = retention_ms >= 0 && age_ms > retention_ms;
            let too_big = over_bytes - first.size_bytes() as i64 >= 0 && retention_bytes >= 0;
            if !(expired || too_big) {
                break;
            }
            over_bytes -= first.size_bytes() as i64;
            let segment = self.segments.remove(&base).expect("present");
            let next_base = *self
                .segments
                .keys()
                .next()
                .expect("the active segment stays");
            self.log_start_offset = self.log_start_offset.max(next_base);
            segment.delete_files(&self.dir)?;
            deleted.push(base);
        }
        Ok(deleted)
    }

    /// Flushes everything written to disk (msync).
    pub fn flush(&self) -> io::Result<()> {
        self.segments.values().try_for_each(|s| s.flush())
    }

    /// Clean shutdown: the active segment and indexes are flushed and trimmed to their contents,
    /// leaving files exactly as Kafka would.
    pub fn close(&mut self) -> io::Result<()> {
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        active.close()
    }
}

fn sizes_of(config: &TopicConfig) -> SegmentSizes {
    SegmentSizes {
        capacity_bytes: config.segment_bytes as usize,
        index_max_bytes: config.segment_index_bytes as usize,
        index_interval_bytes: config.index_interval_bytes as usize,
    }
}

/// Looks inside one batch (decompressing it) for the first record at or after `target_ms`.
fn first_record_at_or_after(batch: &RecordBatchView<'_>, target_ms: i64) -> Option<(i64, i64)> {
    if batch.is_log_append_time() {
        return Some((batch.max_timestamp(), batch.base_offset()));
    }
    let mut bytes = Bytes::copy_from_slice(batch.as_bytes());
    match RecordBatchDecoder::decode(&mut bytes) {
        Ok(set) => set
            .records
            .iter()
            .find(|r| r.timestamp >= target_ms)
            .map(|r| (r.timestamp, r.offset)),
        Err(e) => {
            tracing::warn!(base_offset = batch.base_offset(), error = %e, "cannot decode batch for a timestamp lookup");
            Some((batch.max_timestamp(), batch.base_offset()))
        }
    }
}

#[cfg(test)]
mod tests;
