//! The leader epoch cache of one partition: which epoch wrote which offsets, as `(epoch,
//! start_offset)` entries, kept in the partition's `leader-epoch-checkpoint` in Kafka's format
//! (version `0`, a count, then `epoch start_offset` lines).
//!
//! Invariants: epochs and start offsets both grow strictly from entry to entry; every start offset
//! lies in `[log_start_offset, log_end_offset)` of the log it describes (the log trims the cache
//! when it truncates or moves its start). The file is replaced atomically on every change.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the checkpoint in `dir`; a missing or damaged file gives an empty cache (the log
    /// rebuilds it from its batches).
    pub fn load(dir: &Path) -> Self {
        let path = dir.join(FILE_NAME);
        let entries = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| parse(&t))
            .unwrap_or_default();
        Self { path, entries }
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than the latest epoch.
    /// Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if epoch <= last.epoch {
                return false;
            }
            assert!(
                start_offset >= last.start_offset,
                "epoch start offsets never go back"
            );
            if start_offset == last.start_offset {
                // The previous epoch wrote nothing: the new one replaces it.
                self.entries.pop();
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Forgets the epochs that start at or after `end_offset` (the log was cut there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// Moves the cache's start to `start_offset`: epochs that end before it go, and the one that
    /// spans it now starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let spanning = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset);
        match spanning {
            Some(i) if i > 0 || self.entries[0].start_offset < start_offset => {
                self.entries.drain(..i);
                self.entries[0].start_offset = start_offset;
                true
            }
            _ => false,
        }
    }

    /// Kafka's OffsetForLeaderEpoch answer: the largest epoch at or below `epoch`, and the offset
    /// where the next epoch starts (the log end for the latest one). `None` when the cache holds no
    /// epoch at or below `epoch`.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let i = self.entries.iter().rposition(|e| e.epoch <= epoch)?;
        let end = self
            .entries
            .get(i + 1)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((self.entries[i].epoch, end))
    }

    /// Writes the checkpoint: a temporary file, synced, renamed over the old one.
    pub fn save(&self) -> io::Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries: Vec<EpochEntry> = Vec::new();
    for line in lines.take(count) {
        let mut parts = line.split_whitespace();
        let epoch: i32 = parts.next()?.parse().ok()?;
        let start_offset: i64 = parts.next()?.parse().ok()?;
        if entries
            .last()
            .is_some_and(|l| epoch <= l.epoch || start_offset < l.start_offset)
        {
            return None;
        }
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    (entries.len() == count).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    #[test]
    fn assign_truncate_and_answer_as_kafka_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::load(dir.path());
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 5), "same epoch: no entry");
        assert!(c.assign(2, 10));
        assert!(c.assign(3, 10), "epoch 2 wrote nothing: replaced");
        assert!(c.assign(5, 20));
        assert_eq!(c.entries(), &[e(0, 0), e(3, 10), e(5, 20)]);
        assert_eq!(c.end_offset_for(0, 30), Some((0, 10)));
        assert_eq!(c.end_offset_for(4, 30), Some((3, 20)));
        assert_eq!(c.end_offset_for(9, 30), Some((5, 30)));
        c.save().unwrap();
        assert_eq!(LeaderEpochCache::load(dir.path()).entries(), c.entries());
        assert!(c.truncate_from_end(15));
        assert_eq!(c.entries(), &[e(0, 0), e(3, 10)]);
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[e(3, 12)]);
        assert!(!c.truncate_from_start(12));
    }

    #[test]
    fn a_damaged_checkpoint_loads_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "0\n2\n3 10\n2 20\n").unwrap();
        assert!(LeaderEpochCache::load(dir.path()).entries().is_empty());
    }
}
