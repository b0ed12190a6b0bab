//! A sparse index file of fixed-size, big-endian entries: what the offset index (`.index`) and
//! the time index (`.timeindex`) share. The file is preallocated to its maximum size while its
//! segment is active, read through its mapping, appended to with `pwrite` (so a full disk is an
//! error, not a SIGBUS on the mapping), and trimmed to its entries when the segment closes.
//!
//! Invariants: only whole entries count; each entry follows the one before it by the entry
//! type's rule (checked on open, asserted on append); entries are searched by their key, which
//! grows with them.

use std::io;
use std::marker::PhantomData;
use std::path::Path;

use super::mapped_file::MappedFile;

/// One kind of index entry: its size, its encoding relative to the segment's base offset, the
/// key lookups search by, and the order entries keep.
pub trait IndexEntry: Copy {
    const BYTES: usize;
    fn decode(bytes: &[u8], base_offset: i64) -> Self;
    /// The entry as written: its first `BYTES` bytes (at most [`MAX_ENTRY_BYTES`]).
    fn encode(&self, base_offset: i64) -> [u8; MAX_ENTRY_BYTES];
    fn key(&self) -> i64;
    /// Whether `self` may come after `previous` in the file.
    fn follows(&self, previous: &Self) -> bool;
}

/// The largest entry of any index (the time index's).
pub const MAX_ENTRY_BYTES: usize = 12;

pub struct IndexFile<E> {
    base_offset: i64,
    file: MappedFile,
    entries: usize,
    kind: PhantomData<E>,
}

impl<E: IndexEntry> IndexFile<E> {
    /// Opens an existing closed index (every whole entry counts, checked to be in order) or
    /// creates an empty one of `max_bytes` when `fresh`.
    pub fn open(path: &Path, base_offset: i64, max_bytes: usize, fresh: bool) -> io::Result<Self> {
        assert!(
            E::BYTES <= MAX_ENTRY_BYTES,
            "an entry fits the encoding buffer"
        );
        let file = MappedFile::open(path, fresh.then_some(0))?;
        let entries = if fresh {
            0
        } else {
            file.len_bytes() / E::BYTES
        };
        let mut index = Self {
            base_offset,
            file,
            entries,
            kind: PhantomData,
        };
        if fresh {
            index.file.set_len(max_bytes / E::BYTES * E::BYTES)?;
        } else {
            index.check()?;
        }
        Ok(index)
    }

    /// A damaged index is an error (the caller rebuilds it).
    fn check(&self) -> io::Result<()> {
        for i in 1..self.entries {
            if !self.entry(i).follows(&self.entry(i - 1)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: entry {i} does not increase",
                        self.file.path().display()
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    pub fn is_full(&self) -> bool {
        (self.entries + 1) * E::BYTES > self.file.len_bytes()
    }

    fn entry(&self, i: usize) -> E {
        E::decode(self.file.slice(i * E::BYTES, E::BYTES), self.base_offset)
    }

    pub fn last_entry(&self) -> Option<E> {
        self.entries.checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends an entry that follows the last one; `Ok(false)` when the index is full.
    pub fn push(&mut self, entry: E) -> io::Result<bool> {
        if self.is_full() {
            return Ok(false);
        }
        if let Some(last) = self.last_entry() {
            assert!(entry.follows(&last), "index entries must grow");
        }
        let bytes = entry.encode(self.base_offset);
        // The slot past the last entry is read by no one until `entries` moves past it.
        self.file
            .write_at(self.entries * E::BYTES, &[&bytes[..E::BYTES]])?;
        self.entries += 1;
        Ok(true)
    }

    /// The last entry whose key is at or below `target`, if any (binary search).
    pub fn floor(&self, target: i64) -> Option<E> {
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).key() <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Cuts the file to its entries (on roll and on clean shutdown).
    pub fn trim(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.set_len(self.entries * E::BYTES)
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.flush()
    }

    /// Grows the file back to `max_bytes` (a whole number of entries) for appends.
    pub fn resize(&mut self, max_bytes: usize) -> io::Result<()> {
        let max_bytes = (max_bytes / E::BYTES * E::BYTES).max(self.entries * E::BYTES);
        self.file.set_len(max_bytes)
    }
}

/// A big-endian u32 offset relative to `base_offset`, as both indexes store offsets.
pub fn relative(offset: i64, base_offset: i64) -> [u8; 4] {
    u32::try_from(offset - base_offset)
        .expect("relative offset fits u32")
        .to_be_bytes()
}
