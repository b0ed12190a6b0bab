//! The sparse time index of one segment: `(timestamp i64, relative offset u32)` entries, big
//! endian, 12 bytes each, in Kafka's `.timeindex` layout (an [`IndexFile`] of [`TimeEntry`]).
//!
//! Invariants: timestamps grow strictly, offsets never decrease. An entry `(t, o)` says that the
//! largest timestamp among the records up to offset `o` is `t`, so the first record with a
//! timestamp above `t` lies after the batch holding `o`.

use std::io;
use std::path::Path;

use super::index_file::{relative, IndexEntry, IndexFile, MAX_ENTRY_BYTES};

pub const ENTRY_BYTES: usize = 12;

/// The largest timestamp among the records up to `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub offset: i64,
}

impl IndexEntry for TimeEntry {
    const BYTES: usize = ENTRY_BYTES;

    fn decode(b: &[u8], base_offset: i64) -> Self {
        let timestamp = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        let rel = u32::from_be_bytes(b[8..12].try_into().expect("4 bytes"));
        Self {
            timestamp,
            offset: base_offset + rel as i64,
        }
    }

    fn encode(&self, base_offset: i64) -> [u8; MAX_ENTRY_BYTES] {
        let mut bytes = [0u8; MAX_ENTRY_BYTES];
        bytes[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        bytes[8..].copy_from_slice(&relative(self.offset, base_offset));
        bytes
    }

    fn key(&self) -> i64 {
        self.timestamp
    }

    fn follows(&self, previous: &Self) -> bool {
        self.timestamp > previous.timestamp && self.offset >= previous.offset
    }
}

pub struct TimeIndex(IndexFile<TimeEntry>);

/// The file's own operations (entries, fullness, trim, flush, resize) come from [`IndexFile`].
impl std::ops::Deref for TimeIndex {
    type Target = IndexFile<TimeEntry>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for TimeIndex {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl TimeIndex {
    pub fn open(path: &Path, base_offset: i64, max_bytes: usize, fresh: bool) -> io::Result<Self> {
        IndexFile::open(path, base_offset, max_bytes, fresh).map(Self)
    }

    pub fn last_entry(&self) -> Option<(i64, i64)> {
        self.0.last_entry().map(|e| (e.timestamp, e.offset))
    }

    /// Appends `(timestamp, offset)` if the timestamp is larger than the last one and there is
    /// room.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) -> io::Result<()> {
        if self.last_entry().is_some_and(|(last, _)| timestamp <= last) {
            return Ok(());
        }
        self.0.push(TimeEntry { timestamp, offset }).map(|_| ())
    }

    /// The largest entry whose timestamp is at or below `target`, as `(timestamp, offset)`;
    /// `(-1, base_offset)` when there is none.
    pub fn lookup(&self, target: i64) -> (i64, i64) {
        self.0
            .floor(target)
            .map_or((-1, self.0.base_offset()), |e| (e.timestamp, e.offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_growing_timestamps_and_looks_up_floor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.timeindex");
        let mut t = TimeIndex::open(&p, 0, 120, true).unwrap();
        t.maybe_append(100, 5).unwrap();
        t.maybe_append(90, 6).unwrap(); // older: ignored
        t.maybe_append(200, 9).unwrap();
        assert_eq!(t.lookup(50), (-1, 0));
        assert_eq!(t.lookup(150), (100, 5));
        assert_eq!(t.lookup(200), (200, 9));
        t.trim().unwrap();
        drop(t);
        let t = TimeIndex::open(&p, 0, 120, false).unwrap();
        assert_eq!(t.last_entry(), Some((200, 9)));
    }
}
