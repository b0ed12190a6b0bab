//! One segment of a partition log: `<base>.log` with its `.index` and `.timeindex`.
//!
//! The `.log` file holds v2 record batches exactly as Kafka stores them. The active segment is
//! preallocated to its capacity and mapped; appends copy a batch into the mapping past the
//! committed size and stamp its header there, then move the size. Readers get `Bytes` slices of
//! the mapping below the size, never copies.
//!
//! Invariants: `size_bytes` ends on a batch boundary; batches are contiguous with offsets growing;
//! `next_offset` is one past the last batch's last offset; index entries point at batch starts.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use quipu_protocol::record_batch::{
    BatchIter, RecordBatchView, RecordBatchViewMut, BATCH_HEADER_BYTES,
};

use super::mapped_file::MappedFile;
use super::offset_index::OffsetIndex;
use super::time_index::TimeIndex;

/// Removes the files of the segment at `base_offset`, and the producer snapshot taken at it;
/// files already gone are not an error.
pub fn remove_files(dir: &Path, base_offset: i64) -> io::Result<()> {
    for ext in ["log", "index", "timeindex", "snapshot"] {
        match std::fs::remove_file(file_path(dir, base_offset, ext)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// How a segment's files are named: the 20-digit base offset and an extension.
pub fn file_path(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
}

/// Sizes a segment is created with.
#[derive(Debug, Clone, Copy)]
pub struct SegmentSizes {
    pub capacity_bytes: usize,
    pub index_max_bytes: usize,
    pub index_interval_bytes: usize,
}

pub struct Segment {
    base_offset: i64,
    log: MappedFile,
    size_bytes: usize,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    index_interval_bytes: usize,
    bytes_since_last_index_entry: usize,
    next_offset: i64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    first_batch_max_timestamp: Option<i64>,
    created_ms: i64,
    /// Bytes of the log known to be on disk (msync'd); `flushed_bytes <= size_bytes`.
    flushed_bytes: usize,
}

/// What a scan of existing batches found.
pub struct Recovered {
    pub segment: Segment,
    /// Bytes of garbage past the last valid batch that were cut (within the first 64 KiB).
    pub truncated_bytes: usize,
    /// The file's length before recovery and the bytes of valid batches in it.
    pub file_bytes: usize,
    pub valid_bytes: usize,
}

impl Segment {
    /// Creates an empty active segment.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        sizes: SegmentSizes,
        now_ms: i64,
    ) -> io::Result<Self> {
        assert!(base_offset >= 0);
        let log = MappedFile::open(&file_path(dir, base_offset, "log"), Some(0))?;
        let mut segment = Self::with_files(dir, base_offset, log, sizes, true, now_ms)?;
        segment.log.set_len(sizes.capacity_bytes)?;
        Ok(segment)
    }

    fn with_files(
        dir: &Path,
        base_offset: i64,
        log: MappedFile,
        sizes: SegmentSizes,
        fresh_indexes: bool,
        now_ms: i64,
    ) -> io::Result<Self> {
        Ok(Self {
            base_offset,
            log,
            size_bytes: 0,
            offset_index: OffsetIndex::open(
                &file_path(dir, base_offset, "index"),
                base_offset,
                sizes.index_max_bytes,
                fresh_indexes,
            )?,
            time_index: TimeIndex::open(
                &file_path(dir, base_offset, "timeindex"),
                base_offset,
                sizes.index_max_bytes,
                fresh_indexes,
            )?,
            index_interval_bytes: sizes.index_interval_bytes,
            bytes_since_last_index_entry: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            first_batch_max_timestamp: None,
            created_ms: now_ms,
            flushed_bytes: 0,
        })
    }

    /// Opens a segment from its files, scanning its batches from the start (checking each CRC
    /// when `validate`) and rebuilding both indexes. The log is cut after the last valid batch.
    /// An active segment is then extended back to its capacity for appends.
    pub fn recover(
        dir: &Path,
        base_offset: i64,
        sizes: SegmentSizes,
        active: bool,
        validate: bool,
        now_ms: i64,
    ) -> io::Result<Recovered> {
        let log = MappedFile::open(&file_path(dir, base_offset, "log"), None)?;
        let file_len = log.len_bytes();
        let mut segment = Self::with_files(dir, base_offset, log, sizes, true, now_ms)?;
        let end = segment.scan_from_start(validate)?;
        let truncated_bytes = garbage_len(segment.log.slice(end, file_len - end));
        // Cut whatever follows the last valid batch, so a later append never sits behind garbage.
        segment.log.set_len(end)?;
        if active {
            segment.log.set_len(sizes.capacity_bytes.max(end))?;
        } else {
            segment.close()?;
        }
        Ok(Recovered {
            segment,
            truncated_bytes,
            file_bytes: file_len,
            valid_bytes: end,
        })
    }

    /// Reopens the last segment of a cleanly shut down log for appends without re-reading it:
    /// as [`Segment::open_closed`], then the log and indexes are extended back to their capacity.
    pub fn reopen_active(
        dir: &Path,
        base_offset: i64,
        sizes: SegmentSizes,
        now_ms: i64,
    ) -> io::Result<Self> {
        let mut segment = Self::open_closed(dir, base_offset, sizes, now_ms)?;
        let size = segment.size_bytes;
        segment.offset_index.resize(sizes.index_max_bytes)?;
        segment.time_index.resize(sizes.index_max_bytes)?;
        segment.log.set_len(sizes.capacity_bytes.max(size))?;
        let last_entry_position = segment
            .offset_index
            .last_entry()
            .map_or(0, |(_, p)| p as usize);
        segment.bytes_since_last_index_entry = size - last_entry_position;
        if size > 0 {
            let first = RecordBatchView::parse(segment.log.slice(0, size))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            segment.first_batch_max_timestamp = Some(first.max_timestamp());
            segment.created_ms = segment.last_modified_ms();
        }
        Ok(segment)
    }

    /// Opens a closed segment as it was left: indexes loaded, the batches after the last offset
    /// index entry walked to find the end. Any inconsistency is an error, and the caller falls back
    /// to [`Segment::recover`].
    pub fn open_closed(
        dir: &Path,
        base_offset: i64,
        sizes: SegmentSizes,
        now_ms: i64,
    ) -> io::Result<Self> {
        for ext in ["index", "timeindex"] {
            if !file_path(dir, base_offset, ext).exists() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("segment {base_offset} has no .{ext}"),
                ));
            }
        }
        let log = MappedFile::open(&file_path(dir, base_offset, "log"), None)?;
        let mut segment = Self::with_files(dir, base_offset, log, sizes, false, now_ms)?;
        let file_len = segment.log.len_bytes();
        let (_, start) = segment
            .offset_index
            .last_entry()
            .unwrap_or((base_offset, 0));
        if let Some((ts, offset)) = segment.time_index.last_entry() {
            segment.max_timestamp = ts;
            segment.offset_of_max_timestamp = offset;
        }
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment {base_offset}: {what}"),
            )
        };
        let mut position = start as usize;
        if position > file_len {
            return Err(bad("index points past the log"));
        }
        for item in BatchIter::new(segment.log.slice(position, file_len - position)) {
            let (_, batch) = item.map_err(|e| bad(&e.to_string()))?;
            if batch.base_offset() < segment.next_offset && position != start as usize {
                return Err(bad("offsets go backwards"));
            }
            segment.next_offset = batch.last_offset() + 1;
            if batch.max_timestamp() > segment.max_timestamp {
                segment.max_timestamp = batch.max_timestamp();
                segment.offset_of_max_timestamp = batch.last_offset();
            }
            position += batch.size_bytes();
        }
        if segment.next_offset <= base_offset && file_len > 0 {
            return Err(bad("no batch found"));
        }
        segment.size_bytes = file_len;
        segment.flushed_bytes = file_len;
        Ok(segment)
    }

    /// Walks the batches in `[0, file length)`, stopping at the first that does not parse (or
    /// whose CRC fails, or that breaks offset order); returns where the valid batches end.
    fn scan_from_start(&mut self, validate: bool) -> io::Result<usize> {
        let file_len = self.log.len_bytes();
        let bytes = self.log.slice(0, file_len);
        let mut end = 0;
        let mut batches = Vec::new();
        for item in BatchIter::new(bytes) {
            let Ok((position, batch)) = item else { break };
            if validate && batch.validate().is_err() {
                break;
            }
            let expected_min = batches
                .last()
                .map(|&(_, last, _, _): &(usize, i64, i64, usize)| last + 1)
                .unwrap_or(self.base_offset);
            if batch.base_offset() < expected_min
                || batch.last_offset() < batch.base_offset()
                || batch.last_offset() - self.base_offset > u32::MAX as i64
            {
                break;
            }
            batches.push((
                position,
                batch.last_offset(),
                batch.max_timestamp(),
                batch.size_bytes(),
            ));
            end = position + batch.size_bytes();
        }
        for (position, last_offset, max_timestamp, size) in batches {
            self.index_batch(position, last_offset, max_timestamp, size)?;
        }
        self.size_bytes = end;
        Ok(end)
    }

    /// Updates offsets, timestamps and indexes for a batch now at `position`. A failed index
    /// write (a full disk) is an error and leaves the segment as it was before the batch.
    fn index_batch(
        &mut self,
        position: usize,
        last_offset: i64,
        max_timestamp: i64,
        size: usize,
    ) -> io::Result<()> {
        assert_eq!(position, self.size_bytes, "batches are contiguous");
        assert!(last_offset >= self.next_offset, "offsets grow");
        let (max_ts, offset_of_max_ts) = if max_timestamp > self.max_timestamp {
            (max_timestamp, last_offset)
        } else {
            (self.max_timestamp, self.offset_of_max_timestamp)
        };
        if self.bytes_since_last_index_entry > self.index_interval_bytes {
            self.offset_index.append(last_offset, position as u32)?;
            self.time_index.maybe_append(max_ts, offset_of_max_ts)?;
            self.bytes_since_last_index_entry = 0;
        }
        self.max_timestamp = max_ts;
        self.offset_of_max_timestamp = offset_of_max_ts;
        if self.first_batch_max_timestamp.is_none() {
            self.first_batch_max_timestamp = Some(max_timestamp);
        }
        self.bytes_since_last_index_entry += size;
        self.size_bytes = position + size;
        self.next_offset = last_offset + 1;
        Ok(())
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Whether a batch of `batch_bytes` ending at `last_offset` with `batch_max_timestamp` must
    /// go to a new segment. Age is measured as Kafka measures it: from the first batch's timestamp
    /// to the new batch's when both are known (so old producer timestamps do not roll every
    /// append), else from the segment's creation to now.
    pub fn should_roll(
        &self,
        batch_bytes: usize,
        last_offset: i64,
        batch_max_timestamp: i64,
        segment_bytes: usize,
        segment_ms: i64,
        now_ms: i64,
    ) -> bool {
        if self.size_bytes == 0 {
            // An empty segment takes any batch that fits its mapping.
            return batch_bytes > self.log.len_bytes();
        }
        let age_ms = match self.first_batch_max_timestamp {
            Some(first) if first >= 0 && batch_max_timestamp >= 0 => batch_max_timestamp - first,
            _ => now_ms - self.created_ms,
        };
        self.size_bytes + batch_bytes > segment_bytes.min(self.log.len_bytes())
            || age_ms > segment_ms
            || self.offset_index.is_full()
            || self.time_index.is_full()
            || last_offset - self.base_offset > i32::MAX as i64
    }

    /// Appends one validated batch: writes it past the committed size with its base offset and
    /// leader epoch (and, for LogAppendTime, the timestamp and CRC) stamped, then commits it. The
    /// bytes go through the page cache with `pwritev` rather than through the mapping: a write
    /// fault on a fresh page of the mapping would zero the page before the copy, doubling the
    /// memory traffic of every append. A failed write commits nothing.
    pub fn append(
        &mut self,
        batch: &[u8],
        base_offset: i64,
        leader_epoch: i32,
        log_append_time_ms: Option<i64>,
    ) -> io::Result<()> {
        let position = self.size_bytes;
        assert!(
            position + batch.len() <= self.log.len_bytes(),
            "append past the segment's mapping"
        );
        assert!(base_offset >= self.next_offset, "offsets grow");
        let (last_offset, max_timestamp) = match log_append_time_ms {
            None => {
                // Base offset and leader epoch lie outside the CRC: stamp a copy of the header.
                let mut header = [0u8; BATCH_HEADER_BYTES];
                header.copy_from_slice(&batch[..BATCH_HEADER_BYTES]);
                header[..8].copy_from_slice(&base_offset.to_be_bytes());
                header[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
                self.log
                    .write_at(position, &[&header, &batch[BATCH_HEADER_BYTES..]])?;
                let view = RecordBatchView::parse(batch).expect("batch validated before append");
                (
                    base_offset + i64::from(view.last_offset_delta()),
                    view.max_timestamp(),
                )
            }
            Some(ts) => {
                // The timestamp is under the CRC: stamp a copy of the whole batch.
                let mut copy = batch.to_vec();
                let mut view =
                    RecordBatchViewMut::new(&mut copy).expect("batch validated before append");
                view.set_base_offset(base_offset);
                view.set_partition_leader_epoch(leader_epoch);
                view.set_log_append_time(ts);
                let stamped = (view.view().last_offset(), view.view().max_timestamp());
                self.log.write_at(position, &[&copy])?;
                stamped
            }
        };
        self.index_batch(position, last_offset, max_timestamp, batch.len())
    }

    /// The position of the batch holding `offset`, or of the first batch after it (offsets may
    /// have gaps); `None` when no batch here reaches `offset`. A batch that does not parse (bytes
    /// damaged after they were written) is an error, never a panic.
    fn find_batch(&self, offset: i64) -> io::Result<Option<usize>> {
        let (_, start) = self.offset_index.lookup(offset);
        let bytes = self.log.slice(0, self.size_bytes);
        let mut position = start as usize;
        while position < self.size_bytes {
            let batch = self.batch_at(bytes, position)?;
            if batch.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += batch.size_bytes();
        }
        Ok(None)
    }

    fn batch_at<'a>(&self, bytes: &'a [u8], position: usize) -> io::Result<RecordBatchView<'a>> {
        RecordBatchView::parse(&bytes[position..]).map_err(|e| self.damaged(position, e))
    }

    fn damaged(&self, position: usize, e: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "segment {} is damaged at byte {position}: {e}",
                self.base_offset
            ),
        )
    }

    /// Whole batches from the one holding `offset`, stopping before `max_offset` and at
    /// `max_bytes` (but always one batch when `min_one`), as one slice of the mapping.
    pub fn read(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> io::Result<Option<Bytes>> {
        let Some(start) = self.find_batch(offset)? else {
            return Ok(None);
        };
        let bytes = self.log.slice(0, self.size_bytes);
        let mut end = start;
        while end < self.size_bytes {
            let batch = self.batch_at(bytes, end)?;
            if batch.base_offset() >= max_offset {
                break;
            }
            let fits = end - start + batch.size_bytes() <= max_bytes;
            if !(fits || (min_one && end == start)) {
                break;
            }
            end += batch.size_bytes();
        }
        Ok((end > start).then(|| self.log.shared_slice(start, end - start)))
    }

    /// Every batch, in order; a damaged one ends the walk with an error.
    pub fn batches(&self) -> impl Iterator<Item = io::Result<RecordBatchView<'_>>> {
        BatchIter::new(self.log.slice(0, self.size_bytes))
            .map(|b| b.map(|(_, batch)| batch).map_err(|e| self.damaged(0, e)))
    }

    /// Where the log must be cut to drop every record at or after `offset`: the start of the
    /// batch holding it (batches are never split), or the end when no batch reaches it.
    pub fn cut_position(&self, offset: i64) -> io::Result<usize> {
        Ok(self.find_batch(offset)?.unwrap_or(self.size_bytes))
    }

    /// The committed batches as one shared slice of the mapping (for the cleaner, off the lock).
    pub fn shared_bytes(&self) -> Bytes {
        self.log.shared_slice(0, self.size_bytes)
    }

    /// One of this segment's batches (a view from [`Segment::batches`] or its kin) as a shared
    /// slice of the mapping, to be read after the log lock is let go.
    pub fn shared_batch(&self, batch: &RecordBatchView<'_>) -> Bytes {
        let base = self.log.slice(0, self.size_bytes).as_ptr() as usize;
        let at = (batch.as_bytes().as_ptr() as usize)
            .checked_sub(base)
            .expect("the batch is this segment's");
        assert!(
            at + batch.size_bytes() <= self.size_bytes,
            "the batch is this segment's"
        );
        self.log.shared_slice(at, batch.size_bytes())
    }

    /// The committed batches as one slice, for copying.
    pub fn batches_bytes(&self) -> &[u8] {
        self.log.slice(0, self.size_bytes)
    }

    /// Whether any reader still holds a slice of this segment's log.
    pub fn has_readers(&self) -> bool {
        self.log.has_readers()
    }

    /// The batches from the one the time index points to for `timestamp` onward, for the search
    /// of the first record at or after it.
    pub fn batches_from_timestamp(
        &self,
        timestamp: i64,
    ) -> io::Result<impl Iterator<Item = io::Result<RecordBatchView<'_>>>> {
        let (_, offset) = self.time_index.lookup(timestamp);
        let start = self.find_batch(offset)?.unwrap_or(self.size_bytes);
        Ok(
            BatchIter::new(&self.log.slice(0, self.size_bytes)[start..]).map(move |b| {
                b.map(|(_, batch)| batch)
                    .map_err(|e| self.damaged(start, e))
            }),
        )
    }

    /// The batch whose last offset is `offset_of_max_timestamp`.
    pub fn batch_with_max_timestamp(&self) -> io::Result<Option<RecordBatchView<'_>>> {
        let Some(position) = self.find_batch(self.offset_of_max_timestamp)? else {
            return Ok(None);
        };
        self.batch_at(self.log.slice(0, self.size_bytes), position)
            .map(Some)
    }

    /// Makes the segment read-only: final time index entry, indexes and log trimmed to size.
    pub fn close(&mut self) -> io::Result<()> {
        if self.max_timestamp >= 0 && !self.time_index.is_full() {
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
        }
        self.offset_index.trim()?;
        self.time_index.trim()?;
        // Readers hold slices below `size_bytes` only, so cutting the preallocated tail is safe.
        // The data itself is flushed by the flush policy, not here: a roll must not stall appends.
        self.log.set_len(self.size_bytes)
    }

    /// Removes the segment's files. Readers still holding slices keep their mappings: unlinking a
    /// mapped file is safe, its pages live until the last slice is dropped.
    pub fn delete_files(self, dir: &Path) -> io::Result<()> {
        let base = self.base_offset;
        drop(self);
        remove_files(dir, base)
    }

    /// When the segment was last written, for retention of segments without timestamps.
    pub fn last_modified_ms(&self) -> i64 {
        std::fs::metadata(self.log.path())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(self.created_ms, |d| d.as_millis() as i64)
    }

    /// Counts every byte as flushed: the caller made them durable another way (syncfs).
    pub fn mark_flushed(&mut self) {
        self.flushed_bytes = self.size_bytes;
    }

    /// Writes the bytes appended since the last flush, and the indexes, to disk.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.size_bytes > self.flushed_bytes {
            self.log
                .flush_range(self.flushed_bytes, self.size_bytes - self.flushed_bytes)?;
        }
        self.offset_index.flush()?;
        self.time_index.flush()?;
        self.flushed_bytes = self.size_bytes;
        Ok(())
    }
}

/// Bytes of garbage (not zero-fill, which is preallocated space) at the start of `tail`, looked
/// for in its first [`GARBAGE_WINDOW_BYTES`] only: a torn write sits right after the last valid
/// batch, and reading a whole preallocated gigabyte of zeros would fault in every page.
fn garbage_len(tail: &[u8]) -> usize {
    let window = &tail[..tail.len().min(GARBAGE_WINDOW_BYTES)];
    window.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

const GARBAGE_WINDOW_BYTES: usize = 64 * 1024;
