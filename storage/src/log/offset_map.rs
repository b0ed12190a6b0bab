//! The log cleaner's map from a record key to the offset of that key's last record.
//!
//! Keys are stored as 128-bit hashes (two independent SipHash-1-3 digests, as Kafka stores MD5
//! digests), so the map's memory does not depend on key sizes. The map holds at most
//! `max_entries` keys, derived from `log.cleaner.dedupe.buffer.size` at Kafka's 24 bytes an entry;
//! the cleaner stops mapping when it is full and cleans up to where it got.
//!
//! Invariant: for each key, the offset stored is the largest offset `put` for it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Bytes Kafka counts for one entry: a 16-byte digest and an 8-byte offset.
const ENTRY_BYTES: u64 = 24;

pub struct OffsetMap {
    offsets: HashMap<u128, i64>,
    max_entries: usize,
}

impl OffsetMap {
    /// A map that holds as many keys as `memory_bytes` allows at 24 bytes a key (at least one).
    pub fn with_memory_bytes(memory_bytes: u64) -> Self {
        Self {
            offsets: HashMap::new(),
            max_entries: (memory_bytes / ENTRY_BYTES).max(1) as usize,
        }
    }

    /// Keys the map may still take.
    pub fn free_entries(&self) -> usize {
        self.max_entries.saturating_sub(self.offsets.len())
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Records that `key`'s latest record seen so far is at `offset`. A full map still takes keys
    /// it already holds.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let hash = key_hash(key);
        if let Some(latest) = self.offsets.get_mut(&hash) {
            *latest = (*latest).max(offset);
            return true;
        }
        if self.offsets.len() >= self.max_entries {
            return false;
        }
        self.offsets.insert(hash, offset);
        true
    }

    /// The offset of `key`'s last record in the mapped range.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        self.offsets.get(&key_hash(key)).copied()
    }

    pub fn clear(&mut self) {
        self.offsets.clear();
    }
}

fn key_hash(key: &[u8]) -> u128 {
    // `DefaultHasher::new` is SipHash-1-3 with fixed keys: the same digest in every process.
    let mut first = DefaultHasher::new();
    key.hash(&mut first);
    let mut second = DefaultHasher::new();
    0x9e37_79b9_7f4a_7c15u64.hash(&mut second);
    key.hash(&mut second);
    (u128::from(first.finish()) << 64) | u128::from(second.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_largest_offset_and_respects_its_bound() {
        let mut map = OffsetMap::with_memory_bytes(3 * ENTRY_BYTES);
        assert!(map.put(b"a", 5));
        assert!(map.put(b"a", 3));
        assert_eq!(map.get(b"a"), Some(5));
        assert!(map.put(b"b", 6));
        assert!(map.put(b"c", 7));
        assert_eq!(map.free_entries(), 0);
        assert!(!map.put(b"d", 8), "a full map refuses new keys");
        assert!(map.put(b"c", 9), "but still moves the keys it holds");
        assert_eq!(map.get(b"c"), Some(9));
        assert_eq!(map.get(b"d"), None);
        assert_eq!(map.len(), 3);
    }
}
