//! The sparse offset index of one segment: `(relative offset u32, position u32)` entries, big
//! endian, 8 bytes each, in Kafka's `.index` layout.
//!
//! Invariants: entries grow strictly in offset and in position; an entry points at the start of a
//! batch whose last offset is the entry's offset. The file is preallocated to its maximum size while
//! the segment is active and trimmed to its entries when the segment closes.

use std::io;
use std::path::Path;

use super::mapped_file::MappedFile;

pub const ENTRY_BYTES: usize = 8;

pub struct OffsetIndex {
    base_offset: i64,
    file: MappedFile,
    entries: usize,
}

impl OffsetIndex {
    /// Opens an existing closed index (every whole entry counts) or creates an empty one of
    /// `max_bytes` when `fresh`.
    pub fn open(path: &Path, base_offset: i64, max_bytes: usize, fresh: bool) -> io::Result<Self> {
        let max_bytes = max_bytes / ENTRY_BYTES * ENTRY_BYTES;
        if fresh {
            let file = MappedFile::open(path, Some(0))?;
            let mut index = Self {
                base_offset,
                file,
                entries: 0,
            };
            index.file.set_len(max_bytes)?;
            return Ok(index);
        }
        let file = MappedFile::open(path, None)?;
        let entries = file.len_bytes() / ENTRY_BYTES;
        let index = Self {
            base_offset,
            file,
            entries,
        };
        index.check()?;
        Ok(index)
    }

    /// Verifies that entries increase; a damaged index is an error (the caller rebuilds it).
    fn check(&self) -> io::Result<()> {
        let mut last: Option<(i64, u32)> = None;
        for i in 0..self.entries {
            let e = self.entry(i);
            if let Some(l) = last {
                if e.0 <= l.0 || e.1 <= l.1 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: entry {i} does not increase",
                            self.file.path().display()
                        ),
                    ));
                }
            }
            last = Some(e);
        }
        Ok(())
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    pub fn is_full(&self) -> bool {
        (self.entries + 1) * ENTRY_BYTES > self.file.len_bytes()
    }

    fn entry(&self, i: usize) -> (i64, u32) {
        let b = self.file.slice(i * ENTRY_BYTES, ENTRY_BYTES);
        let rel = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let pos = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        (self.base_offset + rel as i64, pos)
    }

    pub fn last_entry(&self) -> Option<(i64, u32)> {
        self.entries.checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends an entry; `Ok(false)` when the index is full. Written with `pwrite`, not through
    /// the mapping: on a full disk a write fault on the (sparse, preallocated) mapping is a
    /// SIGBUS, where `pwrite` is an ENOSPC error.
    pub fn append(&mut self, offset: i64, position: u32) -> io::Result<bool> {
        if self.is_full() {
            return Ok(false);
        }
        if let Some((last_offset, last_position)) = self.last_entry() {
            assert!(
                offset > last_offset && position > last_position,
                "offset index must grow"
            );
        }
        let rel = u32::try_from(offset - self.base_offset).expect("relative offset fits u32");
        // The slot past the last entry is read by no one until `entries` moves past it.
        self.file.write_at(
            self.entries * ENTRY_BYTES,
            &[&rel.to_be_bytes(), &position.to_be_bytes()],
        )?;
        self.entries += 1;
        Ok(true)
    }

    /// The position to start scanning from for `target`: the largest entry at or below it.
    pub fn lookup(&self, target: i64) -> (i64, u32) {
        // Binary search for the last entry with offset <= target.
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
            None => (self.base_offset, 0),
        }
    }

    /// Cuts the file to its entries (on roll and on clean shutdown).
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
    fn lookup_finds_largest_entry_at_or_below_target() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        let mut i = OffsetIndex::open(&p, 100, 80, true).unwrap();
        assert_eq!(i.lookup(150), (100, 0));
        assert!(i.append(110, 4096).unwrap());
        assert!(i.append(120, 8192).unwrap());
        assert_eq!(i.lookup(109), (100, 0));
        assert_eq!(i.lookup(110), (110, 4096));
        assert_eq!(i.lookup(119), (110, 4096));
        assert_eq!(i.lookup(1_000), (120, 8192));
        i.trim().unwrap();
        drop(i);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 16);
        let i = OffsetIndex::open(&p, 100, 80, false).unwrap();
        assert_eq!(i.entries(), 2);
        assert_eq!(i.lookup(125), (120, 8192));
    }

    #[test]
    fn full_index_refuses_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = OffsetIndex::open(&dir.path().join("0.index"), 0, 17, true).unwrap();
        assert!(i.append(1, 1).unwrap());
        assert!(i.append(2, 2).unwrap());
        assert!(i.is_full());
        assert!(!i.append(3, 3).unwrap());
    }

    #[test]
    fn damaged_index_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        std::fs::write(&p, [0, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0, 10]).unwrap();
        assert!(OffsetIndex::open(&p, 0, 80, false).is_err());
    }
}
