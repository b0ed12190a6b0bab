//! The sparse offset index of one segment: `(relative offset u32, position u32)` entries, big
//! endian, 8 bytes each, in Kafka's `.index` layout (an [`IndexFile`] of [`OffsetEntry`]).
//!
//! Invariants: entries grow strictly in offset and in position; an entry points at the start of a
//! batch whose last offset is the entry's offset. The file is preallocated to its maximum size while
//! the segment is active and trimmed to its entries when the segment closes.

use std::io;
use std::path::Path;

use super::index_file::{relative, IndexEntry, IndexFile, MAX_ENTRY_BYTES};

pub const ENTRY_BYTES: usize = 8;

/// An offset and the file position of the batch that ends at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub offset: i64,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const BYTES: usize = ENTRY_BYTES;

    fn decode(b: &[u8], base_offset: i64) -> Self {
        let rel = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let position = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        Self {
            offset: base_offset + rel as i64,
            position,
        }
    }

    fn encode(&self, base_offset: i64) -> [u8; MAX_ENTRY_BYTES] {
        let mut bytes = [0u8; MAX_ENTRY_BYTES];
        bytes[..4].copy_from_slice(&relative(self.offset, base_offset));
        bytes[4..8].copy_from_slice(&self.position.to_be_bytes());
        bytes
    }

    fn key(&self) -> i64 {
        self.offset
    }

    fn follows(&self, previous: &Self) -> bool {
        self.offset > previous.offset && self.position > previous.position
    }
}

pub struct OffsetIndex(IndexFile<OffsetEntry>);

/// The file's own operations (entries, fullness, trim, flush, resize) come from [`IndexFile`].
impl std::ops::Deref for OffsetIndex {
    type Target = IndexFile<OffsetEntry>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for OffsetIndex {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl OffsetIndex {
    /// Opens an existing closed index (every whole entry counts) or creates an empty one of
    /// `max_bytes` when `fresh`.
    pub fn open(path: &Path, base_offset: i64, max_bytes: usize, fresh: bool) -> io::Result<Self> {
        IndexFile::open(path, base_offset, max_bytes, fresh).map(Self)
    }

    pub fn last_entry(&self) -> Option<(i64, u32)> {
        self.0.last_entry().map(|e| (e.offset, e.position))
    }

    /// Appends an entry; `Ok(false)` when the index is full.
    pub fn append(&mut self, offset: i64, position: u32) -> io::Result<bool> {
        self.0.push(OffsetEntry { offset, position })
    }

    /// The position to start scanning from for `target`: the largest entry at or below it.
    pub fn lookup(&self, target: i64) -> (i64, u32) {
        self.0
            .floor(target)
            .map_or((self.0.base_offset(), 0), |e| (e.offset, e.position))
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
