//! Compaction of one log (`cleanup.policy=compact`): keep the last record of every key.
//!
//! A clean runs in three steps, and only the first and the last hold the partition's lock:
//! 1. [`Log::clean_plan`] takes shared slices of the closed segments below the first uncleanable
//!    offset (the active segment, and segments younger than `min.compaction.lag.ms`, are never
//!    touched) and measures the dirty ratio.
//! 2. Without the lock, [`build_offset_map`] maps each key of the dirty part (from the cleaner
//!    checkpoint on) to its last offset, as far as the bounded map allows, and [`clean_group`]
//!    writes each group of segments, minus the records a later record of the same key supersedes,
//!    to `<base>.log.cleaned`, synced, with the group's modification time.
//! 3. [`Log::swap_in`] checks the group's segments are all still there, renames the cleaned file
//!    to `<base>.log.<next>.swap` (the commit point; `next` is one past the group's offsets), deletes the old segments' files, renames the swap file to
//!    `.log` and indexes it. Readers holding slices of the old segments keep their mappings.
//!
//! Crash story: a `.cleaned` file is an unfinished clean and is deleted at start; a `.swap` file is
//! a finished one and recovery completes it (see `Log::open`): the segments it covers are deleted
//! and it becomes the segment. Every intermediate state is a valid log, since compaction only ever
//! removes records that a later record of the same key supersedes.
//!
//! Invariants: offsets are kept (batches keep their base offset and last offset delta, so the log
//! has gaps as Kafka's does); a record is removed only if a record of its key with a larger offset
//! is mapped; a tombstone is removed only from a segment already cleaned once (so every older
//! record of its key is gone) and older than `delete.retention.ms` by the delete horizon.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use quipu_protocol::record::{rebuild_batch, records_section, RecordIter};
use quipu_protocol::record_batch::{BatchIter, RecordBatchView};

use super::offset_map::OffsetMap;
use super::segment::{self, Segment};
use super::{sizes_of, Log};

/// A closed segment as the cleaner sees it: a shared slice of its batches.
#[derive(Clone)]
pub struct CleanableSegment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub bytes: Bytes,
    pub last_modified_ms: i64,
    /// The timestamp of its first batch, for `max.compaction.lag.ms`.
    pub first_timestamp_ms: i64,
}

/// What one clean of a log works on.
pub struct CleanPlan {
    pub dir: PathBuf,
    /// Where the dirty part starts: the cleaner checkpoint, at least the log start.
    pub first_dirty_offset: i64,
    /// Where the cleanable part ends: the active segment, or the first segment too young to clean.
    pub first_uncleanable_offset: i64,
    /// Every closed segment below `first_uncleanable_offset`, in order.
    pub segments: Vec<CleanableSegment>,
    pub segment_bytes: usize,
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub max_compaction_lag_ms: i64,
}

impl CleanPlan {
    pub fn clean_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.next_offset <= self.first_dirty_offset)
            .map(|s| s.bytes.len() as u64)
            .sum()
    }

    pub fn dirty_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.next_offset > self.first_dirty_offset)
            .map(|s| s.bytes.len() as u64)
            .sum()
    }

    /// Uncleaned bytes as a share of the cleanable bytes.
    pub fn dirty_ratio(&self) -> f64 {
        let dirty = self.dirty_bytes();
        let total = dirty + self.clean_bytes();
        if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        }
    }

    /// Whether the log is due a clean: its dirty ratio reached `min.cleanable.dirty.ratio`, or a
    /// dirty segment waited longer than `max.compaction.lag.ms`.
    pub fn is_due(&self, now_ms: i64) -> bool {
        if self.dirty_bytes() == 0 {
            return false;
        }
        let overdue = self.segments.iter().any(|s| {
            s.next_offset > self.first_dirty_offset
                && s.first_timestamp_ms >= 0
                && now_ms.saturating_sub(s.first_timestamp_ms) > self.max_compaction_lag_ms
        });
        overdue || self.dirty_ratio() >= self.min_cleanable_dirty_ratio
    }

    /// Tombstones in clean segments last modified at or before this may go.
    pub fn delete_horizon_ms(&self) -> i64 {
        self.segments
            .iter()
            .rev()
            .find(|s| s.next_offset <= self.first_dirty_offset)
            .map_or(i64::MIN, |s| {
                s.last_modified_ms.saturating_sub(self.delete_retention_ms)
            })
    }

    /// Consecutive segments from the first up to `end_offset`, in groups whose bytes fit one
    /// segment and whose offsets fit a segment's 32-bit relative offsets.
    pub fn groups(&self, end_offset: i64) -> Vec<Vec<CleanableSegment>> {
        let mut groups: Vec<Vec<CleanableSegment>> = Vec::new();
        for s in self.segments.iter().filter(|s| s.base_offset < end_offset) {
            let fits = groups.last().is_some_and(|g| {
                let bytes: usize = g.iter().map(|x| x.bytes.len()).sum();
                bytes + s.bytes.len() <= self.segment_bytes
                    && s.next_offset - g[0].base_offset <= i32::MAX as i64
            });
            if fits {
                groups.last_mut().expect("checked").push(s.clone());
            } else {
                groups.push(vec![s.clone()]);
            }
        }
        groups
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error("batch at offset {offset}: {reason}")]
    Batch { offset: i64, reason: String },
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

/// Maps each key of the dirty segments to its last offset, segment by segment, while the map has
/// room for a whole segment's records (the first segment is mapped as far as it fits). Returns the
/// offset the map covers up to (exclusive).
pub fn build_offset_map(plan: &CleanPlan, map: &mut OffsetMap) -> Result<i64, CleanError> {
    map.clear();
    let mut end = plan.first_dirty_offset;
    for s in plan
        .segments
        .iter()
        .filter(|s| s.next_offset > plan.first_dirty_offset)
    {
        let records: usize = batches(&s.bytes)
            .map(|b| b.records_count().max(0) as usize)
            .sum();
        if records > map.free_entries() && !map.is_empty() {
            break;
        }
        for batch in batches(&s.bytes) {
            if batch.last_offset() < plan.first_dirty_offset {
                continue;
            }
            let section = records_section(&batch).map_err(|e| batch_error(&batch, e))?;
            for record in RecordIter::new(&section, batch.records_count()) {
                let record = record.map_err(|e| batch_error(&batch, e))?;
                let offset = batch.base_offset() + i64::from(record.offset_delta);
                if let Some(key) = record.key {
                    if !map.put(key, offset) {
                        // Full inside the first segment: the map covers what it took.
                        return Ok(end.max(offset));
                    }
                }
            }
            end = batch.last_offset() + 1;
        }
        end = end.max(s.next_offset);
    }
    Ok(end)
}

/// What cleaning one group wrote.
pub struct CleanedGroup {
    /// `<base>.log.cleaned`, synced.
    pub path: PathBuf,
    pub base_offset: i64,
    /// The base offsets of the segments it replaces.
    pub replaces: Vec<i64>,
    /// One past the last offset of the segments it replaces.
    pub next_offset: i64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
}

/// Writes the group's batches minus superseded records (and, in segments below the first dirty
/// offset that are older than the delete horizon, tombstones) to `<base>.log.cleaned`.
pub fn clean_group(
    plan: &CleanPlan,
    group: &[CleanableSegment],
    map: &OffsetMap,
    map_end_offset: i64,
) -> Result<CleanedGroup, CleanError> {
    let base_offset = group[0].base_offset;
    let path = segment::file_path(&plan.dir, base_offset, "log.cleaned");
    let mut out = io::BufWriter::new(std::fs::File::create(&path)?);
    let horizon_ms = plan.delete_horizon_ms();
    let (mut bytes_after, mut records_removed) = (0u64, 0u64);
    for s in group {
        let drop_tombstones =
            s.next_offset <= plan.first_dirty_offset && s.last_modified_ms <= horizon_ms;
        for batch in batches(&s.bytes) {
            let section = records_section(&batch).map_err(|e| batch_error(&batch, e))?;
            let mut kept = Vec::new();
            let mut total = 0u64;
            for record in RecordIter::new(&section, batch.records_count()) {
                let record = record.map_err(|e| batch_error(&batch, e))?;
                total += 1;
                let offset = batch.base_offset() + i64::from(record.offset_delta);
                let latest = match record.key {
                    // Kafka refuses keyless records in compacted topics; older ones stay.
                    None => true,
                    Some(key) => {
                        offset >= map_end_offset || map.get(key).is_none_or(|m| offset >= m)
                    }
                };
                let expired_tombstone = record.value.is_none() && drop_tombstones;
                if latest && !expired_tombstone {
                    kept.push(record);
                }
            }
            records_removed += total - kept.len() as u64;
            if kept.len() as u64 == total {
                out.write_all(batch.as_bytes())?;
                bytes_after += batch.size_bytes() as u64;
            } else if !kept.is_empty() {
                let rebuilt = rebuild_batch(&batch, &kept).map_err(|e| batch_error(&batch, e))?;
                out.write_all(&rebuilt)?;
                bytes_after += rebuilt.len() as u64;
            }
        }
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    let last_modified_ms = group.last().expect("groups are not empty").last_modified_ms;
    file.set_modified(UNIX_EPOCH + Duration::from_millis(last_modified_ms.max(0) as u64))?;
    file.sync_all()?;
    Ok(CleanedGroup {
        path,
        base_offset,
        replaces: group.iter().map(|s| s.base_offset).collect(),
        next_offset: group.last().expect("groups are not empty").next_offset,
        bytes_before: group.iter().map(|s| s.bytes.len() as u64).sum(),
        bytes_after,
        records_removed,
    })
}

/// What one clean did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    /// The new first dirty offset.
    pub cleaned_to: i64,
    /// A segment went while the clean ran (retention, DeleteRecords): it stopped there.
    pub interrupted: bool,
}

/// Cleans the log behind `lock` if it is due, holding the lock only to plan and to swap each
/// group in. Returns `None` when the log is not due a clean.
pub fn clean_log<L: std::ops::DerefMut<Target = Log>>(
    lock: impl Fn() -> L,
    map: &mut OffsetMap,
    now_ms: i64,
) -> Result<Option<CleanStats>, CleanError> {
    let Some(plan) = lock().clean_plan(now_ms) else {
        return Ok(None);
    };
    if !plan.is_due(now_ms) {
        return Ok(None);
    }
    // Damaged bytes stop the clean: a walk that stopped at them would drop what follows.
    for s in &plan.segments {
        if let Some(Err(e)) = BatchIter::new(&s.bytes).find(Result::is_err) {
            return Err(CleanError::Batch {
                offset: s.base_offset,
                reason: format!("the segment is damaged: {e}"),
            });
        }
    }
    let end = build_offset_map(&plan, map)?;
    let mut stats = CleanStats {
        cleaned_to: end,
        ..CleanStats::default()
    };
    for group in plan.groups(end) {
        let cleaned = match clean_group(&plan, &group, map, end) {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(segment::file_path(
                    &plan.dir,
                    group[0].base_offset,
                    "log.cleaned",
                ));
                return Err(e);
            }
        };
        if !lock().swap_in(&cleaned, now_ms)? {
            stats.interrupted = true;
            return Ok(Some(stats));
        }
        stats.segments_before += cleaned.replaces.len();
        stats.segments_after += 1;
        stats.bytes_before += cleaned.bytes_before;
        stats.bytes_after += cleaned.bytes_after;
        stats.records_removed += cleaned.records_removed;
    }
    let mut log = lock();
    let to = log.first_dirty_offset().max(end);
    log.set_first_dirty_offset(to);
    Ok(Some(stats))
}

fn batches(bytes: &[u8]) -> impl Iterator<Item = RecordBatchView<'_>> {
    BatchIter::new(bytes).map_while(Result::ok).map(|(_, b)| b)
}

fn batch_error(batch: &RecordBatchView<'_>, e: impl std::fmt::Display) -> CleanError {
    CleanError::Batch {
        offset: batch.base_offset(),
        reason: e.to_string(),
    }
}

impl Log {
    /// What a clean would work on, or `None` for a log that is not compacted or has nothing
    /// below its active segment.
    pub fn clean_plan(&self, now_ms: i64) -> Option<CleanPlan> {
        if !self.config.cleanup_compact {
            return None;
        }
        let active_base = self.active().base_offset();
        let min_lag_ms = self.config.min_compaction_lag_ms;
        let mut first_uncleanable_offset = active_base;
        let mut segments = Vec::new();
        for s in self.segments.values() {
            if s.base_offset() >= active_base {
                break;
            }
            if min_lag_ms > 0 && s.max_timestamp() > now_ms.saturating_sub(min_lag_ms) {
                first_uncleanable_offset = s.base_offset();
                break;
            }
            segments.push(CleanableSegment {
                base_offset: s.base_offset(),
                next_offset: s.next_offset(),
                bytes: s.shared_bytes(),
                last_modified_ms: s.last_modified_ms(),
                first_timestamp_ms: s
                    .batches()
                    .next()
                    .and_then(Result::ok)
                    .map_or(-1, |b| b.base_timestamp()),
            });
        }
        if segments.is_empty() {
            return None;
        }
        let first_dirty_offset = self
            .first_dirty_offset
            .clamp(self.log_start_offset, first_uncleanable_offset);
        Some(CleanPlan {
            dir: self.dir.clone(),
            first_dirty_offset,
            first_uncleanable_offset,
            segments,
            segment_bytes: self.config.segment_bytes as usize,
            delete_retention_ms: self.config.delete_retention_ms,
            min_cleanable_dirty_ratio: self.config.min_cleanable_dirty_ratio,
            max_compaction_lag_ms: self.config.max_compaction_lag_ms,
        })
    }

    /// Where the uncleaned part of the log starts (the cleaner checkpoint).
    pub fn first_dirty_offset(&self) -> i64 {
        self.first_dirty_offset
    }

    /// Moves the cleaner checkpoint (after a clean, or from the checkpoint file at start).
    pub fn set_first_dirty_offset(&mut self, offset: i64) {
        self.first_dirty_offset = offset.clamp(0, self.log_end_offset());
    }

    /// Replaces the group's segments by the cleaned file. Returns `false`, and removes the file,
    /// when a segment of the group went meanwhile (retention, DeleteRecords, truncation).
    pub fn swap_in(&mut self, cleaned: &CleanedGroup, now_ms: i64) -> io::Result<bool> {
        let active_base = self.active().base_offset();
        let intact = !self.closed
            && cleaned
                .replaces
                .iter()
                .all(|b| *b < active_base && self.segments.contains_key(b))
            && cleaned.base_offset >= self.log_start_offset;
        if !intact {
            std::fs::remove_file(&cleaned.path)?;
            return Ok(false);
        }
        let swap = swap_path(&self.dir, cleaned.base_offset, cleaned.next_offset);
        std::fs::rename(&cleaned.path, &swap)?;
        sync_dir(&self.dir)?;
        // Committed: from here a crash completes the swap at start.
        let last_modified = std::fs::metadata(&swap)?.modified()?;
        for base in &cleaned.replaces {
            let old = self.segments.remove(base).expect("checked above");
            old.delete_files(&self.dir)?;
        }
        let log_path = segment::file_path(&self.dir, cleaned.base_offset, "log");
        std::fs::rename(&swap, &log_path)?;
        let mut recovered = Segment::recover(
            &self.dir,
            cleaned.base_offset,
            sizes_of(&self.config),
            false,
            false,
            now_ms,
        )?
        .segment;
        recovered.flush()?;
        std::fs::File::options()
            .write(true)
            .open(&log_path)?
            .set_modified(last_modified)?;
        sync_dir(&self.dir)?;
        self.segments.insert(cleaned.base_offset, recovered);
        Ok(true)
    }

    /// Completes the swaps a crash interrupted: each `<base>.log.<next>.swap` replaces the
    /// segments whose base offsets fall in `[base, next)` and becomes `<base>.log`. Other `.swap`
    /// files are not ours to complete and are removed. Returns the base offsets of the segments
    /// that must be re-indexed.
    pub(super) fn complete_swaps(dir: &Path) -> io::Result<Vec<i64>> {
        let mut swapped = Vec::new();
        let names = || -> io::Result<Vec<String>> {
            std::fs::read_dir(dir)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        };
        for name in names()? {
            let Some(stem) = name.strip_suffix(".swap") else {
                continue;
            };
            let swap = dir.join(&name);
            let range = stem.split_once(".log.").and_then(|(base, next)| {
                Some((base.parse::<i64>().ok()?, next.parse::<i64>().ok()?))
            });
            let Some((base, next_offset)) = range else {
                tracing::warn!(file = %swap.display(), "removing leftover swap file");
                std::fs::remove_file(&swap)?;
                continue;
            };
            for other in names()? {
                if let Some(b) = other
                    .strip_suffix(".log")
                    .and_then(|b| b.parse::<i64>().ok())
                {
                    if b >= base && b < next_offset {
                        segment::remove_files(dir, b)?;
                    }
                }
            }
            std::fs::rename(&swap, segment::file_path(dir, base, "log"))?;
            tracing::warn!(dir = %dir.display(), base_offset = base, next_offset, "completed a segment swap interrupted by a crash");
            swapped.push(base);
        }
        if !swapped.is_empty() {
            sync_dir(dir)?;
        }
        Ok(swapped)
    }
}

/// `<base>.log.<next>.swap`: a cleaned segment replacing the segments in `[base, next)`.
fn swap_path(dir: &Path, base_offset: i64, next_offset: i64) -> PathBuf {
    segment::file_path(dir, base_offset, &format!("log.{next_offset}.swap"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use quipu_config::topic::TopicConfig;
    use quipu_config::BrokerConfig;
    use quipu_protocol::records::{Compression, RecordBatchDecoder};

    use super::*;

    fn config(overrides: &[(&str, &str)]) -> TopicConfig {
        let mut o: BTreeMap<String, String> = [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "4096"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in overrides {
            o.insert(k.to_string(), v.to_string());
        }
        TopicConfig::with_overrides(&BrokerConfig::default(), &o).unwrap()
    }

    /// Every record in the log as (offset, key, value).
    fn records(log: &Log) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while let Some(bytes) = log
            .read(offset, log.log_end_offset(), 1 << 20, true)
            .unwrap()
        {
            let mut b = bytes.clone();
            for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
                for r in set.records {
                    let text = |b: &Bytes| String::from_utf8(b.to_vec()).unwrap();
                    out.push((
                        r.offset,
                        text(r.key.as_ref().unwrap()),
                        r.value.as_ref().map(text),
                    ));
                    offset = r.offset + 1;
                }
            }
            for item in BatchIter::new(&bytes) {
                let (_, batch) = item.unwrap();
                batch.validate().unwrap();
                offset = offset.max(batch.last_offset() + 1);
            }
        }
        out
    }

    /// Produces `count` records over `keys` keys, every `tombstone_every`-th a tombstone, in
    /// batches of 10 alternating codecs; returns the last value per key (None: deleted).
    fn produce(
        log: &mut Log,
        from: usize,
        count: usize,
        keys: usize,
    ) -> BTreeMap<String, Option<String>> {
        let mut last = BTreeMap::new();
        let codecs = [
            Compression::None,
            Compression::Lz4,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Snappy,
        ];
        for chunk_start in (from..from + count).step_by(10) {
            let entries: Vec<(String, Option<String>)> = (chunk_start..chunk_start + 10)
                .map(|i| {
                    let key = format!("k{}", (i * 7919) % keys);
                    let value = (i % 13 != 5).then(|| format!("v{i}"));
                    (key, value)
                })
                .collect();
            for (k, v) in &entries {
                last.insert(k.clone(), v.clone());
            }
            let refs: Vec<(&[u8], Option<&[u8]>)> = entries
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_ref().map(|v| v.as_bytes())))
                .collect();
            let codec = codecs[(chunk_start / 10) % codecs.len()];
            let bytes = quipu_protocol::testing::keyed_batch(&refs, chunk_start as i64, codec);
            log.append(&bytes, 0).unwrap();
        }
        last
    }

    /// Checks the last value of every key, that offsets grow, and that no key appears twice below
    /// `unique_below` (the cleaned part).
    fn check(log: &Log, expected: &BTreeMap<String, Option<String>>, unique_below: i64) {
        let all = records(log);
        let mut seen: BTreeMap<&str, (i64, &Option<String>)> = BTreeMap::new();
        let mut previous = -1;
        for (offset, key, value) in &all {
            assert!(*offset > previous, "offsets grow");
            previous = *offset;
            if *offset < unique_below {
                assert!(
                    !seen.contains_key(key.as_str()),
                    "key {key} twice in the cleaned part"
                );
            }
            // Values carry the index they were produced at: the record kept its offset.
            if let Some(v) = value {
                assert_eq!(v, &format!("v{offset}"));
            }
            seen.insert(key, (*offset, value));
        }
        for (key, value) in expected {
            match (seen.get(key.as_str()), value) {
                (Some((_, v)), _) => assert_eq!(*v, value, "last value of {key}"),
                (None, None) => {}
                (None, Some(v)) => panic!("{key} lost its last value {v}"),
            }
        }
    }

    fn clean(log: &Mutex<Log>) -> Option<CleanStats> {
        let mut map = OffsetMap::with_memory_bytes(1 << 20);
        clean_log(|| log.lock().unwrap(), &mut map, 1).unwrap()
    }

    #[test]
    fn keeps_the_last_record_per_key_across_codecs_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
        let expected = produce(&mut log, 0, 2_000, 50);
        let log_end = log.log_end_offset();
        let segments = log.segment_count();
        assert!(segments > 5, "{segments}");
        let log = Mutex::new(log);
        let stats = clean(&log).expect("due");
        assert!(stats.records_removed > 1_500, "{stats:?}");
        assert!(stats.bytes_after < stats.bytes_before / 4, "{stats:?}");
        let active_from = log.lock().unwrap().active().base_offset();
        check(&log.lock().unwrap(), &expected, active_from);
        assert_eq!(log.lock().unwrap().log_end_offset(), log_end);
        assert!(clean(&log).is_none(), "nothing dirty is left");
        // A clean and a crash reopen see the same log.
        let mut log = log.into_inner().unwrap();
        log.close(0).unwrap();
        drop(log);
        let log = Log::open(dir.path(), config(&[]), None, 0).unwrap();
        check(&log, &expected, active_from);
        drop(log);
        let log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
        check(&log, &expected, active_from);
        assert_eq!(log.log_end_offset(), log_end);
    }

    #[test]
    fn tombstones_go_only_after_a_second_pass_and_keys_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
        let mut expected = produce(&mut log, 0, 1_000, 40);
        let log = Mutex::new(log);
        clean(&log).unwrap();
        let tombstones = |log: &Log| records(log).iter().filter(|r| r.2.is_none()).count();
        let first_pass = tombstones(&log.lock().unwrap());
        assert!(first_pass > 0, "the first pass keeps tombstones");
        expected.extend(produce(&mut log.lock().unwrap(), 1_000, 1_000, 40));
        clean(&log).unwrap();
        let active_from = log.lock().unwrap().active().base_offset();
        check(&log.lock().unwrap(), &expected, active_from);
        let cleaned_tombstones = records(&log.lock().unwrap())
            .iter()
            .filter(|r| r.2.is_none() && r.0 < 1_000)
            .count();
        assert_eq!(
            cleaned_tombstones, 0,
            "tombstones of the once-cleaned part are gone"
        );
    }

    #[test]
    fn a_small_map_cleans_in_several_passes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
        let expected = produce(&mut log, 0, 3_000, 500);
        let log = Mutex::new(log);
        let mut passes = 0;
        loop {
            let mut map = OffsetMap::with_memory_bytes(24 * 300);
            match clean_log(|| log.lock().unwrap(), &mut map, 1).unwrap() {
                Some(stats) => {
                    assert!(!stats.interrupted);
                    passes += 1;
                }
                None => break,
            }
            assert!(passes < 50);
        }
        assert!(passes > 1);
        let active_from = log.lock().unwrap().active().base_offset();
        check(&log.lock().unwrap(), &expected, active_from);
    }

    #[test]
    fn a_crash_mid_clean_leaves_a_valid_log_either_side_of_the_swap() {
        for crash_after_commit in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
            let mut expected = produce(&mut log, 0, 1_000, 30);
            // A first clean shrinks the segments, so the second merges several into one group.
            let locked = Mutex::new(log);
            clean(&locked).unwrap();
            let mut log = locked.into_inner().unwrap();
            expected.extend(produce(&mut log, 1_000, 1_000, 30));
            let log_end = log.log_end_offset();
            let plan = log.clean_plan(1).unwrap();
            let mut map = OffsetMap::with_memory_bytes(1 << 20);
            let end = build_offset_map(&plan, &mut map).unwrap();
            let groups = plan.groups(end);
            let first = &groups[0];
            assert!(first.len() > 1);
            let cleaned = clean_group(&plan, first, &map, end).unwrap();
            if crash_after_commit {
                // The commit point passed, and one of the old segments was already deleted.
                let swap = swap_path(dir.path(), cleaned.base_offset, cleaned.next_offset);
                std::fs::rename(&cleaned.path, &swap).unwrap();
                segment::remove_files(dir.path(), *cleaned.replaces.last().unwrap()).unwrap();
            }
            drop(plan);
            drop(log);
            let log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names
                    .iter()
                    .all(|n| !n.ends_with(".cleaned") && !n.ends_with(".swap")),
                "{names:?}"
            );
            let unique_below = if crash_after_commit {
                first.last().unwrap().next_offset
            } else {
                0
            };
            check(&log, &expected, unique_below);
            assert_eq!(log.log_end_offset(), log_end);
            if crash_after_commit {
                assert_eq!(
                    log.segments.get(&cleaned.base_offset).unwrap().size_bytes() as u64,
                    cleaned.bytes_after
                );
                assert!(!log.segments.contains_key(&cleaned.replaces[1]));
            }
        }
    }

    #[test]
    fn the_active_segment_and_young_segments_are_never_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            config(&[("min.compaction.lag.ms", "1000000")]),
            Some(0),
            0,
        )
        .unwrap();
        produce(&mut log, 0, 1_000, 10);
        // Record timestamps are 0..1000: at now = 1000 every segment is too young.
        assert!(log.clean_plan(1_000).is_none());
        // Later, all but the active segment may be cleaned.
        let plan = log.clean_plan(10_000_000).unwrap();
        assert_eq!(plan.first_uncleanable_offset, log.active().base_offset());
        let dir2 = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir2.path(), config(&[]), Some(0), 0).unwrap();
        produce(&mut log, 0, 10, 10);
        assert!(
            log.clean_plan(1).is_none(),
            "one active segment: nothing to clean"
        );
    }

    #[test]
    fn retention_deleting_a_segment_mid_clean_stops_the_swap() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            config(&[("cleanup.policy", "compact,delete")]),
            Some(0),
            0,
        )
        .unwrap();
        produce(&mut log, 0, 1_000, 30);
        let plan = log.clean_plan(1).unwrap();
        let mut map = OffsetMap::with_memory_bytes(1 << 20);
        let end = build_offset_map(&plan, &mut map).unwrap();
        let cleaned = clean_group(&plan, &plan.groups(end)[0], &map, end).unwrap();
        let first = plan.segments[1].base_offset;
        log.advance_log_start_offset(first + 1, log.log_end_offset())
            .unwrap();
        assert!(!log.swap_in(&cleaned, 1).unwrap());
        assert!(!cleaned.path.exists());
    }

    #[test]
    fn keyless_records_are_refused_in_compacted_topics() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(&[]), Some(0), 0).unwrap();
        let keyless =
            quipu_protocol::record::plain_record(0, 0, None, Some(Bytes::from_static(b"v")));
        let bytes = quipu_protocol::record::encode_batch(&[keyless], Compression::Gzip).unwrap();
        assert!(matches!(
            log.append(&bytes, 0),
            Err(super::super::AppendError::RecordsRefused(r)) if r[0].0 == 0
        ));
    }
}
