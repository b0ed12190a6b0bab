//! The partition log: an ordered run of segments, the last one active.
//!
//! Owns the files of one partition directory. Validates each produced batch once (size, CRC,
//! header consistency), assigns offsets, appends, rolls segments, and serves reads as slices of the
//! mapped segments. It knows nothing of the network or of replication.
//!
//! Invariants: segments are keyed by base offset and each starts at or after the previous one's
//! next offset; only the last segment is written; `log_start_offset <= log_end_offset`.

pub mod cleaner;
mod follower;
pub use follower::ReplicaAppend;
pub mod index_file;
pub mod leader_epoch_cache;
pub mod mapped_file;
pub mod offset_index;
pub mod offset_map;
pub mod producer_state;
pub mod segment;
pub mod time_index;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use leader_epoch_cache::LeaderEpochCache;
use producer_state::{ProducerBatch, ProducerState, SequenceError, Verdict};
use quipu_config::topic::{TimestampType, TopicCompression, TopicConfig};
use quipu_protocol::record::recompress_batch;
use quipu_protocol::record_batch::{BatchError, RecordBatchView};
use quipu_protocol::record_stream::{
    first_at_or_after, validate_records_with, InvalidRecords, RecordRules,
};
use segment::{Segment, SegmentSizes};

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// Records that break a rule, by index in the batch; Produce v8+ names them in
    /// `record_errors` (KIP-467).
    #[error("one or more records have been rejected due to {} record errors in total, the first: {}", .0.len(), .0[0].1)]
    RecordsRefused(Vec<(i32, String)>),
    /// As `RecordsRefused`, with a timestamp out of the topic's range among them.
    #[error("One or more records have been rejected due to invalid timestamp")]
    TimestampsRefused(Vec<(i32, String)>),
    #[error("record batch of {size_bytes} bytes exceeds max.message.bytes {max_bytes}")]
    TooLarge { size_bytes: usize, max_bytes: i32 },
    #[error("{0}")]
    Sequence(#[from] SequenceError),
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

/// Why a read failed: the offset is outside the log, or the log's bytes are damaged.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    OutOfRange(#[from] OffsetOutOfRange),
    #[error("storage: {0}")]
    Storage(#[from] io::Error),
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
    /// The log start offset after the append, for the Produce response.
    pub log_start_offset: i64,
    /// Whether `flush.messages` asks for a flush before the append is acknowledged.
    pub flush_due: bool,
    /// The batch was a producer's retry of one already in the log; nothing was appended.
    pub duplicate: bool,
}

pub struct Log {
    dir: PathBuf,
    config: TopicConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    leader_epoch: i32,
    /// Every offset below it is on disk (flushed); recovery re-reads from here.
    recovery_point: i64,
    /// Messages appended since the last flush, for `flush.messages`.
    unflushed_messages: i64,
    last_flush_ms: i64,
    /// Set by a clean shutdown: no append may follow the files' final trim.
    closed: bool,
    /// Recovered at open and not flushed since (see [`Log::open_unsynced`]).
    sync_pending: bool,
    /// Which leader epoch wrote which offsets (`leader-epoch-checkpoint`).
    epochs: LeaderEpochCache,
    /// Where the part of the log the cleaner has not compacted yet starts (compacted topics).
    first_dirty_offset: i64,
    /// Idempotent producers' epochs and last batches, derived from the batches below the log end.
    producers: ProducerState,
}

impl Log {
    /// Opens the partition directory, creating it if needed.
    ///
    /// `recovery_point` is `None` after a clean shutdown: every segment is trusted as it was left
    /// (indexes loaded, the tail after the last index entry walked). Otherwise the segments from
    /// the one holding the recovery point onward are re-read batch by batch with CRC checks and
    /// their indexes rebuilt; the log is cut at the first invalid byte, later segments are deleted,
    /// and what was recovered is flushed. Segments before the recovery point are trusted.
    pub fn open(
        dir: &Path,
        config: TopicConfig,
        recovery_point: Option<i64>,
        now_ms: i64,
    ) -> io::Result<Self> {
        let mut log = Self::open_unsynced(dir, config, recovery_point, now_ms)?;
        if log.sync_pending {
            log.flush(now_ms)?;
            log.sync_pending = false;
        }
        Ok(log)
    }

    /// As [`Log::open`], except that a log it recovered is not flushed: its recovery point stays
    /// at 0 until the caller has made the file system durable (one `syncfs` for every log it
    /// recovered, instead of several fsyncs each) and calls [`Log::mark_synced`].
    pub fn open_unsynced(
        dir: &Path,
        config: TopicConfig,
        recovery_point: Option<i64>,
        now_ms: i64,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // A clean that reached its commit point is completed before anything else is read.
        let swapped = Self::complete_swaps(dir)?;
        let bases = segment_bases(dir)?;
        let sizes = sizes_of(&config);
        // The first segment to re-read: the one holding the recovery point.
        let recover_from =
            recovery_point.map(|rp| bases.iter().rev().find(|b| **b <= rp).copied().unwrap_or(0));
        let (mut segments, recovered_any) = open_segments(
            dir,
            bases,
            sizes,
            |base| recover_from.is_some_and(|from| base >= from) || swapped.contains(&base),
            now_ms,
        )?;
        if segments.is_empty() {
            segments.insert(0, Segment::create(dir, 0, sizes, now_ms)?);
        }
        let log_start_offset = *segments.keys().next().expect("at least one segment");
        let mut log = Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            leader_epoch: 0,
            recovery_point: 0,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            closed: false,
            sync_pending: false,
            epochs: LeaderEpochCache::load(dir),
            first_dirty_offset: 0,
            producers: ProducerState::default(),
        };
        log.follow_epochs(recovered_any, recover_from)?;
        if recovered_any {
            log.sync_pending = true;
        } else {
            log.recovery_point = log.log_end_offset();
        }
        log.load_producer_state()?;
        Ok(log)
    }

    /// The epoch cache follows the log: trimmed to what survived, and completed from the
    /// batches of every segment that was re-read (or of the whole log when it has no entries).
    fn follow_epochs(&mut self, recovered_any: bool, recover_from: Option<i64>) -> io::Result<()> {
        let mut epochs_changed = self.epochs.truncate_from_end(self.log_end_offset());
        epochs_changed |= self.epochs.truncate_from_start(self.log_start_offset);
        if recovered_any
            || (self.epochs.entries().is_empty() && self.log_end_offset() > self.log_start_offset)
        {
            let from = if self.epochs.entries().is_empty() {
                self.log_start_offset
            } else {
                recover_from.unwrap_or(self.log_start_offset)
            };
            let first = self
                .segments
                .range(..=from)
                .next_back()
                .map_or(self.log_start_offset, |(b, _)| *b);
            for segment in self.segments.range(first..).map(|(_, s)| s) {
                for batch in segment.batches() {
                    let batch = batch?;
                    epochs_changed |= self
                        .epochs
                        .assign(batch.partition_leader_epoch(), batch.base_offset());
                }
            }
        }
        if epochs_changed {
            self.epochs.save()?;
        }
        if let Some(latest) = self.epochs.latest_epoch() {
            self.leader_epoch = self.leader_epoch.max(latest);
        }
        Ok(())
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
    /// Whether a clean shutdown closed the log (it takes no more appends).
    pub fn is_closed(&self) -> bool {
        self.closed
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

    /// Checks one produced batch's header as Kafka does before it is appended; its records were
    /// walked by [`check_records`] (that is what `checked` proves).
    fn validate_batch<'a>(
        &self,
        records: &'a [u8],
        checked: RecordsChecked,
    ) -> Result<RecordBatchView<'a>, AppendError> {
        let batch = parse_batch(records)?;
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
        if batch.base_offset() != 0 {
            return Err(AppendError::InvalidRecord(format!(
                "the base offset of the record batch should be 0, but it is {}",
                batch.base_offset()
            )));
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
        if self.config.cleanup_compact && !checked.keys {
            // The topic became compacted after the records were checked: check the keys now.
            check_records(records, true)?;
        }
        Ok(batch)
    }

    /// Validates and appends one produced batch, assigning its offsets. Decompresses a compressed
    /// batch to check its records: callers on the network runtime use [`check_records`] off it
    /// and then [`Log::append_checked`].
    pub fn append(&mut self, records: &[u8], now_ms: i64) -> Result<AppendInfo, AppendError> {
        let checked = check_records(records, self.config.cleanup_compact)?;
        self.append_checked(records, checked, now_ms)
    }

    /// Appends one produced batch whose records [`check_records`] walked, assigning its offsets.
    pub fn append_checked(
        &mut self,
        records: &[u8],
        checked: RecordsChecked,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if self.closed {
            return Err(AppendError::Io(io::Error::other(
                "the log is closed: the broker is shutting down",
            )));
        }
        let batch = self.validate_batch(records, checked)?;
        let producer = ProducerBatch::of(&batch);
        if let Some(p) = &producer {
            if let Verdict::Duplicate(original) = self.producers.check(p)? {
                // A retry of a batch already in the log: answered with where it went.
                return Ok(AppendInfo {
                    base_offset: original.first_offset,
                    last_offset: original.last_offset,
                    log_append_time_ms: -1,
                    log_start_offset: self.log_start_offset,
                    flush_due: false,
                    duplicate: true,
                });
            }
        }
        let (log_append_time_ms, batch_max_timestamp) = match self.config.message_timestamp_type {
            TimestampType::LogAppendTime => (Some(now_ms), now_ms),
            TimestampType::CreateTime => (None, batch.max_timestamp()),
        };
        let base_offset = self.log_end_offset();
        let last_offset = base_offset + batch.last_offset_delta() as i64;
        let stamp = (log_append_time_ms, batch_max_timestamp);
        let epoch = self.leader_epoch;
        self.write_batch(records, (base_offset, last_offset, epoch), stamp, now_ms)?;
        if let Some(p) = &producer {
            self.producers
                .update(p, base_offset, last_offset, batch_max_timestamp);
        }
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time_ms: log_append_time_ms.unwrap_or(-1),
            log_start_offset: self.log_start_offset,
            flush_due: self.flush_due_by_messages(),
            duplicate: false,
        })
    }

    /// Writes `records`, offsets `base_offset..=last_offset` (the log end onwards), in the
    /// active segment under leader epoch `epoch`, rolling first when the segment is due;
    /// `stamp` is the log append time to set, if any, and the batch's max timestamp.
    fn write_batch(
        &mut self,
        records: &[u8],
        (base_offset, last_offset, epoch): (i64, i64, i32),
        (log_append_time_ms, max_timestamp): (Option<i64>, i64),
        now_ms: i64,
    ) -> Result<(), AppendError> {
        // A leader's batch starts at the log end; a follower's may start past it, across a gap
        // its leader's cleaner left.
        debug_assert!(base_offset >= self.log_end_offset());
        let sizes = sizes_of(&self.config);
        let roll = self.active().should_roll(
            records.len(),
            last_offset,
            max_timestamp,
            sizes.capacity_bytes,
            self.config.segment_ms,
            now_ms,
        );
        if roll {
            self.roll(base_offset, records.len(), now_ms)?;
        }
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        active.append(records, base_offset, epoch, log_append_time_ms)?;
        if self.epochs.assign(epoch, base_offset) {
            self.epochs.save()?;
        }
        self.unflushed_messages += last_offset - base_offset + 1;
        debug_assert_eq!(self.log_end_offset(), last_offset + 1);
        Ok(())
    }

    /// Closes the active segment and starts a new one at the next batch's base offset
    /// (`next_base_offset`: the log end offset, or past it across a follower's gap), large
    /// enough for a batch of `next_batch_bytes` even when that exceeds `segment.bytes`.
    fn roll(
        &mut self,
        next_base_offset: i64,
        next_batch_bytes: usize,
        now_ms: i64,
    ) -> io::Result<()> {
        let base = next_base_offset.max(self.log_end_offset());
        let mut sizes = sizes_of(&self.config);
        sizes.capacity_bytes = sizes.capacity_bytes.max(next_batch_bytes);
        let (old_base, old_size) = (self.active().base_offset(), self.active().size_bytes());
        if old_size == 0 {
            // Nothing in it yet: replace it rather than leave an empty segment behind.
            self.segments.remove(&old_base);
            segment::remove_files(&self.dir, old_base)?;
        } else {
            self.segments
                .get_mut(&old_base)
                .expect("active segment")
                .close()?;
        }
        tracing::debug!(dir = %self.dir.display(), base_offset = base, "rolled segment");
        self.segments
            .insert(base, Segment::create(&self.dir, base, sizes, now_ms)?);
        // Recovery replays producer state from here, not from the log start. Not synced: a torn
        // snapshot fails its CRC and recovery takes an older one.
        self.producers.write_snapshot(&self.dir, base, false)?;
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
    ) -> Result<Option<Bytes>, ReadError> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(ReadError::OutOfRange(OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            }));
        }
        let first = self
            .segments
            .range(..=offset)
            .next_back()
            .map(|(b, _)| *b)
            .unwrap_or(self.log_start_offset);
        for (_, segment) in self.segments.range(first..) {
            if let Some(bytes) = segment.read(offset, max_offset, max_bytes, min_one)? {
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    /// Where the first record whose timestamp is at or after `target_ms` is: found from the
    /// indexes and batch headers, under the lock; the batch it is in is then walked by
    /// [`TimestampLookup::resolve`], off the lock.
    pub fn offset_for_timestamp(&self, target_ms: i64) -> io::Result<Option<TimestampLookup>> {
        for segment in self.segments.values() {
            if segment.max_timestamp() < target_ms {
                continue;
            }
            for batch in segment.batches_from_timestamp(target_ms)? {
                let batch = batch?;
                if batch.max_timestamp() >= target_ms {
                    return Ok(Some(TimestampLookup::of(segment, &batch, target_ms)));
                }
            }
        }
        Ok(None)
    }

    /// Where the record with the largest timestamp (the first such) is, as for
    /// [`Log::offset_for_timestamp`].
    pub fn max_timestamp_and_offset(&self) -> io::Result<Option<TimestampLookup>> {
        let mut best: Option<&Segment> = None;
        for s in self.segments.values() {
            if s.max_timestamp() >= 0 && best.is_none_or(|b| s.max_timestamp() > b.max_timestamp())
            {
                best = Some(s);
            }
        }
        let Some(segment) = best else {
            return Ok(None);
        };
        let Some(batch) = segment.batch_with_max_timestamp()? else {
            return Ok(None);
        };
        Ok(Some(TimestampLookup::of(
            segment,
            &batch,
            batch.max_timestamp(),
        )))
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
            if self.epochs.truncate_from_start(offset) {
                self.epochs.save()?;
            }
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
    /// `retention.bytes`; the active segment is never deleted, and nothing is unless
    /// `cleanup.policy` holds `delete`. Returns the deleted base offsets.
    pub fn apply_retention(&mut self, now_ms: i64) -> io::Result<Vec<i64>> {
        if !self.config.cleanup_delete {
            return Ok(Vec::new());
        }
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
        if !deleted.is_empty() && self.epochs.truncate_from_start(self.log_start_offset) {
            self.epochs.save()?;
        }
        Ok(deleted)
    }

    /// Flushes everything appended since the recovery point to disk (msync) and moves the
    /// recovery point to the log end.
    pub fn flush(&mut self, now_ms: i64) -> io::Result<()> {
        let from = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(self.log_start_offset, |(b, _)| *b);
        for (_, segment) in self.segments.range_mut(from..) {
            segment.flush()?;
        }
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            // New segment files must be in the directory too.
            dir.sync_all()?;
        }
        self.recovery_point = self.log_end_offset();
        self.unflushed_messages = 0;
        self.last_flush_ms = now_ms;
        Ok(())
    }

    /// The epoch stamped on batches appended from now on.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// A new leader epoch for appends from now on; epochs never go back.
    pub fn set_leader_epoch(&mut self, epoch: i32) {
        assert!(epoch >= self.leader_epoch, "leader epochs never go back");
        self.leader_epoch = epoch;
    }

    pub fn epoch_entries(&self) -> &[leader_epoch_cache::EpochEntry] {
        self.epochs.entries()
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` and where it ends.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Removes every record at or after `offset` (a follower's truncation to its leader's log,
    /// KIP-101): later segments are deleted, the segment holding `offset` is cut at the start of
    /// the batch holding it and becomes the active one, and the epoch cache follows. A segment
    /// that readers still hold slices of is never cut in place: its kept prefix is copied to a new
    /// file that replaces it, and the readers keep the old one until they let go.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> io::Result<()> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let offset = offset.max(self.log_start_offset);
        let sizes = sizes_of(&self.config);
        let doomed: Vec<i64> = self.segments.range(offset..).map(|(b, _)| *b).collect();
        for base in doomed.into_iter().rev() {
            let segment = self.segments.remove(&base).expect("present");
            segment.delete_files(&self.dir)?;
        }
        match self.segments.keys().next_back().copied() {
            None => {
                self.segments
                    .insert(offset, Segment::create(&self.dir, offset, sizes, now_ms)?);
            }
            Some(base) => {
                let segment = self.segments.remove(&base).expect("present");
                let cut = segment.cut_position(offset)?;
                let log_path = segment::file_path(&self.dir, base, "log");
                if segment.has_readers() {
                    // Copy the kept prefix and rename it over the segment; readers keep the old
                    // inode mapped. A crash before the rename leaves a `.cleaned` file, which the
                    // next start deletes, and the uncut segment, which recovery truncates again.
                    let copy = segment::file_path(&self.dir, base, "log.cleaned");
                    let mut kept = Vec::with_capacity(cut);
                    kept.extend_from_slice(&segment.batches_bytes()[..cut]);
                    drop(segment);
                    std::fs::write(&copy, &kept)?;
                    std::fs::File::open(&copy)?.sync_all()?;
                    std::fs::rename(&copy, &log_path)?;
                } else {
                    drop(segment);
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&log_path)?
                        .set_len(cut as u64)?;
                }
                let recovered = Segment::recover(&self.dir, base, sizes, true, false, now_ms)?;
                self.segments.insert(base, recovered.segment);
            }
        }
        debug_assert!(self.log_end_offset() <= offset.max(self.log_start_offset));
        if self.epochs.truncate_from_end(self.log_end_offset()) {
            self.epochs.save()?;
        }
        self.recovery_point = self.recovery_point.min(self.log_end_offset());
        self.load_producer_state()?;
        Ok(())
    }

    /// Rebuilds the producer state from the latest readable snapshot at or below the log end and
    /// the batches after it. Snapshots past the log end (left by a truncation or a crash cut) and
    /// unreadable ones are deleted, and so are those that are neither at a segment's base nor the
    /// latest.
    fn load_producer_state(&mut self) -> io::Result<()> {
        let log_end_offset = self.log_end_offset();
        let mut loaded = None;
        for offset in producer_state::snapshot_offsets(&self.dir)?
            .into_iter()
            .rev()
        {
            let path = producer_state::snapshot_path(&self.dir, offset);
            if offset > log_end_offset || loaded.is_some() && !self.segments.contains_key(&offset) {
                std::fs::remove_file(&path)?;
                continue;
            }
            if loaded.is_some() {
                continue;
            }
            match ProducerState::read_snapshot(&path) {
                Ok(state) => loaded = Some((offset, state)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "removing unreadable producer snapshot");
                    std::fs::remove_file(&path)?;
                }
            }
        }
        let (from, state) = loaded.unwrap_or((self.log_start_offset, ProducerState::default()));
        self.producers = state;
        let first = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(self.log_start_offset, |(b, _)| *b);
        for segment in self.segments.range(first..).map(|(_, s)| s) {
            for batch in segment.batches() {
                let batch = batch?;
                if batch.base_offset() >= from {
                    self.producers.replay(&batch);
                }
            }
        }
        Ok(())
    }

    /// Idempotent producers' state, for tests and metrics.
    pub fn producer_state(&self) -> &ProducerState {
        &self.producers
    }

    /// Forgets producers whose last batch is gone (below the log start) or older than
    /// `expiration_ms`. Returns how many went.
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers
            .expire(self.log_start_offset, now_ms, expiration_ms)
    }

    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// Whether `flush.messages` asks for a flush now (1: before every acknowledgement).
    pub fn flush_due_by_messages(&self) -> bool {
        self.unflushed_messages >= self.config.flush_messages
    }

    /// Whether `flush.ms` asks for a flush now.
    pub fn flush_due_by_time(&self, now_ms: i64) -> bool {
        self.unflushed_messages > 0
            && now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
    }

    /// Clean shutdown: everything is flushed, and the active segment and indexes are trimmed to
    /// their contents, leaving files exactly as Kafka would.
    /// Whether this log was recovered and waits for [`Log::mark_synced`].
    pub fn sync_pending(&self) -> bool {
        self.sync_pending
    }

    /// After the caller made every byte of this log durable (syncfs of its file system): all
    /// of it counts as flushed, and the recovery point moves to the log end.
    pub fn mark_synced(&mut self, now_ms: i64) {
        for segment in self.segments.values_mut() {
            segment.mark_flushed();
        }
        self.recovery_point = self.log_end_offset();
        self.unflushed_messages = 0;
        self.last_flush_ms = now_ms;
        self.sync_pending = false;
    }

    /// As [`Log::close`], without its fsyncs: the caller syncs the file system once for every
    /// log it closes, then calls [`Log::mark_synced`] before the checkpoints are written.
    pub fn close_unsynced(&mut self) -> io::Result<()> {
        self.close_then(false)
    }

    /// Clean close: everything flushed, the producer snapshot written (synced), and the active
    /// segment's files trimmed; no append may follow.
    pub fn close(&mut self, now_ms: i64) -> io::Result<()> {
        self.flush(now_ms)?;
        self.close_then(true)
    }

    fn close_then(&mut self, sync_snapshot: bool) -> io::Result<()> {
        self.producers
            .write_snapshot(&self.dir, self.log_end_offset(), sync_snapshot)?;
        self.closed = true;
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        active.close()
    }
}

/// Proof that a produced batch's records were walked by [`check_records`], and whether every
/// record was found to have a key (compacted topics need one).
#[derive(Debug, Clone, Copy)]
pub struct RecordsChecked {
    keys: bool,
}

/// Most bytes one batch's records may decompress to when the broker walks them: a bound on the
/// CPU a small compressed batch can cost (memory is bounded by the codec, see `record_stream`).
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize =
    quipu_protocol::record::MAX_DECOMPRESSED_BATCH_BYTES;

/// What a topic's settings ask of each produced batch beyond its structure, as Kafka's
/// LogValidator applies them: a key on every record of a compacted topic, CreateTime timestamps
/// within `message.timestamp.before.max.ms` / `after.max.ms` of the broker's clock, and the
/// codec the batch is stored with (`compression.type`).
#[derive(Debug, Clone, Copy)]
pub struct ProducePolicy {
    pub rules: RecordRules,
    pub compression: TopicCompression,
}

impl ProducePolicy {
    pub fn of(config: &TopicConfig, now_ms: i64) -> Self {
        let timestamp_range_ms =
            (config.message_timestamp_type == TimestampType::CreateTime).then(|| {
                (
                    now_ms.saturating_sub(config.message_timestamp_before_max_ms),
                    now_ms.saturating_add(config.message_timestamp_after_max_ms),
                )
            });
        Self {
            rules: RecordRules {
                keys_required: config.cleanup_compact,
                timestamp_range_ms,
            },
            compression: config.compression,
        }
    }

    /// The codec and level a batch of codec `source` is to be stored with, when that means
    /// compressing it anew.
    pub fn recompression(&self, source: i16) -> Option<(i16, Option<i32>)> {
        match self.compression {
            TopicCompression::Codec(codec, level) if codec != source => Some((codec, level)),
            _ => None,
        }
    }
}

/// A produced batch that [`check_batch`] passed: the proof, and the batch to append in its
/// place when the topic's `compression.type` compressed it anew.
#[derive(Debug)]
pub struct CheckedBatch {
    pub checked: RecordsChecked,
    pub recompressed: Option<Vec<u8>>,
}

/// Checks a produced batch as Kafka's LogValidator does: the CRC and header, then every record
/// (count, consecutive offset deltas, lengths, codec, and the rules of `policy`), decompressing
/// through a bounded stream; then recompresses it if the topic asks for another codec. The
/// result is the proof [`Log::append_checked`] takes. This costs CPU in proportion to the
/// batch: call it off the network runtime for compressed batches and for recompression.
pub fn check_batch(records: &[u8], policy: ProducePolicy) -> Result<CheckedBatch, AppendError> {
    let batch = parse_batch(records)?;
    batch.validate().map_err(|e| match e {
        BatchError::CrcMismatch { .. } => AppendError::Corrupt(e.to_string()),
        _ => AppendError::InvalidRecord(e.to_string()),
    })?;
    if i64::from(batch.records_count()) != i64::from(batch.last_offset_delta()) + 1 {
        return Err(AppendError::InvalidRecord(format!(
            "inconsistent batch offset range [0, {}] and count of records {}",
            batch.last_offset_delta(),
            batch.records_count()
        )));
    }
    match validate_records_with(&batch, MAX_DECOMPRESSED_BATCH_BYTES, policy.rules) {
        Ok(_) => {}
        // Kafka's InvalidRecordException: not retriable, unlike a CRC mismatch.
        Err(InvalidRecords::Malformed(e)) => return Err(AppendError::InvalidRecord(e.to_string())),
        Err(InvalidRecords::Refused(records)) => return Err(AppendError::RecordsRefused(records)),
        Err(InvalidRecords::Timestamps(records)) => {
            return Err(AppendError::TimestampsRefused(records))
        }
    }
    let recompressed = match policy.recompression(batch.compression_codec()) {
        None => None,
        Some((codec, level)) => Some(
            recompress_batch(&batch, codec, level, MAX_DECOMPRESSED_BATCH_BYTES)
                .map_err(|e| AppendError::InvalidRecord(e.to_string()))?,
        ),
    };
    Ok(CheckedBatch {
        checked: RecordsChecked {
            keys: policy.rules.keys_required,
        },
        recompressed,
    })
}

/// [`check_batch`] for the broker's own writes and benchmarks: structure, and keys when
/// `keys_required`; no timestamp rule and no recompression.
pub fn check_records(records: &[u8], keys_required: bool) -> Result<RecordsChecked, AppendError> {
    let policy = ProducePolicy {
        rules: RecordRules {
            keys_required,
            timestamp_range_ms: None,
        },
        compression: TopicCompression::Producer,
    };
    Ok(check_batch(records, policy)?.checked)
}

fn parse_batch(records: &[u8]) -> Result<RecordBatchView<'_>, AppendError> {
    RecordBatchView::parse(records).map_err(|e| match e {
        BatchError::BadMagic(_) => AppendError::InvalidRecord(e.to_string()),
        _ => AppendError::Corrupt(e.to_string()),
    })
}

/// The base offsets of a partition directory's segments, in order; leftovers of an interrupted
/// operation (`.cleaned`, `.deleted`, `.tmp`) are removed, the segments themselves being the truth.
fn segment_bases(dir: &Path) -> io::Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = name
            .strip_suffix(".log")
            .and_then(|b| b.parse::<i64>().ok())
        {
            bases.push(base);
        } else if name.ends_with(".cleaned") || name.ends_with(".deleted") || name.ends_with(".tmp")
        {
            tracing::warn!(file = %entry.path().display(), "removing leftover file");
            std::fs::remove_file(entry.path())?;
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Opens the segments at `bases`, re-reading those `must_recover` names (and any whose indexes
/// do not match). Damage inside a closed segment ends the log there: later segments are deleted
/// and that one becomes the active segment again. Returns the segments and whether any was
/// re-read.
fn open_segments(
    dir: &Path,
    bases: Vec<i64>,
    sizes: SegmentSizes,
    must_recover: impl Fn(i64) -> bool,
    now_ms: i64,
) -> io::Result<(BTreeMap<i64, Segment>, bool)> {
    let mut segments = BTreeMap::new();
    let mut recovered_any = false;
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        if !must_recover(base) {
            match open_trusted(dir, base, sizes, last, now_ms) {
                Ok(segment) => {
                    segments.insert(base, segment);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), base_offset = base, error = %e, "segment does not match its indexes: re-reading it");
                }
            }
        }
        recovered_any = true;
        let r = Segment::recover(dir, base, sizes, last, true, now_ms)?;
        if r.truncated_bytes > 0 {
            tracing::warn!(dir = %dir.display(), base_offset = base, cut_bytes = r.truncated_bytes, next_offset = r.segment.next_offset(), "log recovery cut invalid bytes after the last valid batch");
        }
        if last || r.valid_bytes >= r.file_bytes {
            segments.insert(base, r.segment);
            continue;
        }
        let later: Vec<i64> = bases[i + 1..].to_vec();
        tracing::warn!(dir = %dir.display(), base_offset = base, valid_bytes = r.valid_bytes, file_bytes = r.file_bytes, deleted_segments = ?later, "log recovery found an invalid batch inside a closed segment: cutting the log there");
        drop(r);
        for later_base in later {
            segment::remove_files(dir, later_base)?;
        }
        let active = Segment::recover(dir, base, sizes, true, true, now_ms)?.segment;
        segments.insert(base, active);
        break;
    }
    Ok((segments, recovered_any))
}

/// A segment opened as it was left: the active one reopened for appends, a closed one as is.
fn open_trusted(
    dir: &Path,
    base: i64,
    sizes: SegmentSizes,
    last: bool,
    now_ms: i64,
) -> io::Result<Segment> {
    if last {
        Segment::reopen_active(dir, base, sizes, now_ms)
    } else {
        Segment::open_closed(dir, base, sizes, now_ms)
    }
}

fn sizes_of(config: &TopicConfig) -> SegmentSizes {
    SegmentSizes {
        capacity_bytes: config.segment_bytes as usize,
        index_max_bytes: config.segment_index_bytes as usize,
        index_interval_bytes: config.index_interval_bytes as usize,
    }
}

/// The answer to a timestamp lookup, or the batch that holds it.
#[derive(Debug)]
pub enum TimestampLookup {
    /// `(timestamp, offset)`, known from the batch header alone (LogAppendTime).
    Found(i64, i64),
    /// The first record at or after `target_ms` is in this batch (a slice of its segment).
    InBatch { batch: Bytes, target_ms: i64 },
}

impl TimestampLookup {
    fn of(segment: &Segment, batch: &RecordBatchView<'_>, target_ms: i64) -> Self {
        if batch.is_log_append_time() {
            return Self::Found(batch.max_timestamp(), batch.base_offset());
        }
        Self::InBatch {
            batch: segment.shared_batch(batch),
            target_ms,
        }
    }

    /// `(timestamp, offset)` of the first record at or after the target. Walks the batch's
    /// records, decompressing at most [`MAX_DECOMPRESSED_BATCH_BYTES`] without holding them:
    /// blocking work, for a thread off the network runtime. A batch whose records cannot be
    /// read answers with its header's max timestamp and base offset.
    pub fn resolve(self) -> (i64, i64) {
        let (bytes, target_ms) = match self {
            Self::Found(timestamp, offset) => return (timestamp, offset),
            Self::InBatch { batch, target_ms } => (batch, target_ms),
        };
        let Ok(batch) = RecordBatchView::parse(&bytes) else {
            unreachable!("committed batches parse");
        };
        let fallback = (batch.max_timestamp(), batch.base_offset());
        match first_at_or_after(&batch, target_ms, MAX_DECOMPRESSED_BATCH_BYTES) {
            Ok(Some(found)) => found,
            Ok(None) => fallback,
            Err(e) => {
                tracing::warn!(base_offset = batch.base_offset(), error = %e, "cannot read a batch for a timestamp lookup");
                fallback
            }
        }
    }
}

#[cfg(test)]
mod tests;
