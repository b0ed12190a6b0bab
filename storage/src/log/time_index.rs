//! The sparse time index of one segment: `(timestamp i64, relative offset u32)` entries, big
//! endian, 12 bytes each, in Kafka's `.timeindex` layout.
//!
//! Invariants: timestamps grow strictly, offsets never decrease. An entry `(t, o)` says that the
//! largest timestamp among the records up to offset `o` is `t`, so the first record with a
//! timestamp above `t` lies after the batch holding `o`.

use std::io;
use std::path::Path;

use super::mapped_file::MappedFile;

pub const ENTRY_BYTES: usize = 12;

pub struct TimeIndex {
    base_offset: i64,
    file: MappedFile,
    entries: usize,
}

impl TimeIndex {
    pub fn open(path: &Path, base_offset: i64, max_bytes: usize, fresh: bool) -> io::Result<Self> {
        let max_bytes = max_bytes / ENTRY_BYTES * ENTRY_BYTES;
        if fresh {
            let mut file = MappedFile::open(path, Some(0))?;
            file.set_len(max_bytes)?;
            return Ok(Self {
                base_offset,
                file,
                entries: 0,
            });
        }
        let file = MappedFile::open(path, None)?;
        let entries = file.len_bytes() / ENTRY_BYTES;
        let index = Self {
            base_offset,
            file,
            entries,
        };
        for i in 1..index.entries {
            let (a, b) = (index.entry(i - 1), index.entry(i));
            if b.0 <= a.0 || b.1 < a.1 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: entry {i} does not increase",
                        index.file.path().display()
                    ),
                ));
            }
        }
        Ok(index)
    }

    pub fn is_full(&self) -> bool {
        (self.entries + 1) * ENTRY_BYTES > self.file.len_bytes()
    }

    fn entry(&self, i: usize) -> (i64, i64) {
        let b = self.file.slice(i * ENTRY_BYTES, ENTRY_BYTES);
        let ts = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        let rel = u32::from_be_bytes(b[8..12].try_into().expect("4 bytes"));
        (ts, self.base_offset + rel as i64)
    }

    pub fn last_entry(&self) -> Option<(i64, i64)> {
        self.entries.checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends `(timestamp, offset)` if the timestamp is larger than the last one and there is
    /// room; written with `pwrite`, so a full disk is an error, not a SIGBUS on the mapping.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) -> io::Result<()> {
        if self.is_full() {
            return Ok(());
        }
        if let Some((last_ts, last_offset)) = self.last_entry() {
            if timestamp <= last_ts {
                return Ok(());
            }
            assert!(offset >= last_offset, "time index offsets never decrease");
        }
        let rel = u32::try_from(offset - self.base_offset).expect("relative offset fits u32");
        // The slot past the last entry is read by no one until `entries` moves past it.
        self.file.write_at(
            self.entries * ENTRY_BYTES,
            &[&timestamp.to_be_bytes(), &rel.to_be_bytes()],
        )?;
        self.entries += 1;
        Ok(())
    }

    /// The largest entry whose timestamp is at or below `target`, as `(timestamp, offset)`;
    /// `(-1, base_offset)` when there is none.
    pub fn lookup(&self, target: i64) -> (i64, i64) {
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).0 <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        match lo.checked_sub(1) {
            Some(i) => self.entry(i),
            None => (-1, self.base_offset),
        }
    }

    pub fn trim(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.set_len(self.entries * ENTRY_BYTES)
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.flush()
    }

    /// Grows the file back to `max_bytes` (a whole number of entries) for appends.
    pub fn resize(&mut self, max_bytes: usize) -> io::Result<()> {
        let max_bytes = (max_bytes / ENTRY_BYTES * ENTRY_BYTES).max(self.entries * ENTRY_BYTES);
        self.file.set_len(max_bytes)
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
