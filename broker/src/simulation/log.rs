//! A simulated replica's log: records as `(offset, epoch, value)` in offset order, with the real
//! [`LeaderEpochCache`] kept beside them as `quipu_storage::log::Log` keeps it (an epoch is
//! assigned at the first record written in it; a truncation drops the epochs that start at or
//! past the new end). The cache is never saved: the simulation's disk is its memory, and a
//! crash keeps the log and its cache whole, as kill -9 keeps the page cache.
//!
//! Invariants (asserted at every write): offsets are contiguous from 0; epochs never go back
//! along the log; the leader epoch stamped on appends never goes back. Every truncation is
//! recorded (`cuts`), so that the invariant checker re-checks what was cut and written again.

use std::path::Path;

use quipu_storage::log::leader_epoch_cache::{EpochEntry, LeaderEpochCache};

use crate::replica_fetcher::LocalLog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub offset: i64,
    pub epoch: i32,
    pub value: u64,
}

pub struct SimLog {
    entries: Vec<Entry>,
    epochs: LeaderEpochCache,
    /// The epoch stamped on the records a leader appends (the partition's leader epoch).
    leader_epoch: i32,
    /// The end offset after each truncation, in order.
    cuts: Vec<i64>,
}

/// Where the cache would keep its checkpoint: never written, and absent, so it loads empty.
const NO_DIRECTORY: &str = "/nonexistent/quipu-simulation";

impl SimLog {
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            epochs: LeaderEpochCache::load(Path::new(NO_DIRECTORY)),
            leader_epoch: 0,
            cuts: Vec::new(),
        }
    }

    pub fn log_end_offset(&self) -> i64 {
        self.entries.len() as i64
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn entry(&self, offset: i64) -> Option<&Entry> {
        usize::try_from(offset)
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    pub fn epoch_entries(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    pub fn cuts(&self) -> &[i64] {
        &self.cuts
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// As `Log::set_leader_epoch`: epochs never go back.
    pub fn set_leader_epoch(&mut self, epoch: i32) {
        assert!(epoch >= self.leader_epoch, "leader epochs never go back");
        self.leader_epoch = epoch;
    }

    /// The log as a restarted broker opens it: the stamp is the latest epoch written (or 0).
    pub fn reopen(&mut self) {
        self.leader_epoch = self.epochs.latest_epoch().unwrap_or(0).max(0);
    }

    /// A leader's append of `value`, stamped with the log's leader epoch; returns its offset.
    pub fn append_as_leader(&mut self, value: u64) -> i64 {
        let entry = Entry {
            offset: self.log_end_offset(),
            epoch: self.leader_epoch,
            value,
        };
        self.append(entry);
        entry.offset
    }

    /// Appends `entry` at the log end, as it is (a follower's copy, or a leader's append).
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.offset,
            self.log_end_offset(),
            "appends land at the log end"
        );
        let last_epoch = self.entries.last().map_or(-1, |e| e.epoch);
        assert!(
            entry.epoch >= last_epoch,
            "epochs never go back along the log"
        );
        self.epochs.assign(entry.epoch, entry.offset);
        self.entries.push(entry);
    }

    /// Removes every record at or after `offset`; the epoch cache follows (as `Log::truncate_to`).
    pub fn truncate_to(&mut self, offset: i64) {
        if offset >= self.log_end_offset() {
            return;
        }
        let offset = offset.max(0);
        self.entries.truncate(offset as usize);
        self.epochs.truncate_from_end(self.log_end_offset());
        self.cuts.push(offset);
    }

    /// Records from `from` to the log end, at most `max` of them; `None` when `from` is past it.
    pub fn read(&self, from: i64, max: usize) -> Option<Vec<Entry>> {
        let from = usize::try_from(from).ok()?;
        let rest = self.entries.get(from..)?;
        Some(rest.iter().take(max).copied().collect())
    }

    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }
}

/// A log and its partition's high watermark, as the real truncation decisions read them.
pub struct LocalView<'a> {
    pub log: &'a SimLog,
    pub high_watermark: i64,
}

impl LocalLog for LocalView<'_> {
    fn log_start_offset(&self) -> i64 {
        0
    }
    fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }
    fn high_watermark(&self) -> i64 {
        self.high_watermark
    }
    fn latest_epoch(&self) -> Option<i32> {
        self.log.epochs.latest_epoch()
    }
    fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.log.end_offset_for_epoch(epoch)
    }
}
