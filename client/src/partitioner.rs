//! Which partition a record goes to, as the Java client decides it: a keyed record to
//! `toPositive(murmur2(key)) % partitions`, so the same key lands on the same partition whichever
//! client wrote it; a record without a key to the topic's current sticky partition, which moves
//! on once a batch for it is full (KIP-480), so null-key records fill whole batches.

use std::collections::HashMap;

/// Kafka's murmur2 (the Java client's `Utils.murmur2`: seed 0x9747b28c, little-endian words).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Sticky partitions for records without a key, per topic.
#[derive(Debug, Default)]
pub(crate) struct StickyPartitioner {
    current: HashMap<String, i32>,
    seed: u64,
}

impl StickyPartitioner {
    /// The sticky partition of `topic`, choosing one when there is none.
    pub fn partition(&mut self, topic: &str, partitions: i32) -> i32 {
        if let Some(p) = self.current.get(topic) {
            if *p < partitions {
                return *p;
            }
        }
        let p = (self.next_random() % partitions as u64) as i32;
        self.current.insert(topic.to_string(), p);
        p
    }

    /// The batch for `topic`'s sticky partition `full` filled up: move to another partition.
    pub fn batch_full(&mut self, topic: &str, full: i32, partitions: i32) {
        if self.current.get(topic) != Some(&full) {
            return;
        }
        let next = if partitions <= 1 {
            0
        } else {
            let hop = 1 + (self.next_random() % (partitions as u64 - 1)) as i32;
            (full + hop) % partitions
        };
        self.current.insert(topic.to_string(), next);
    }

    fn next_random(&mut self) -> u64 {
        if self.seed == 0 {
            self.seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1;
        }
        // xorshift64*
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Apache Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn sticky_partition_moves_when_its_batch_fills() {
        let mut s = StickyPartitioner::default();
        let first = s.partition("t", 4);
        assert_eq!(s.partition("t", 4), first);
        s.batch_full("t", first, 4);
        let second = s.partition("t", 4);
        assert_ne!(first, second);
        assert!((0..4).contains(&second));
        // A full batch of a partition that is no longer sticky changes nothing.
        s.batch_full("t", first, 4);
        assert_eq!(s.partition("t", 4), second);
        assert_eq!(s.partition("one", 1), 0);
        s.batch_full("one", 0, 1);
        assert_eq!(s.partition("one", 1), 0);
    }
}
