//! Idempotent producers' state in one partition: for each producer id, its epoch and the
//! metadata of its last five batches (sequence range, offsets, timestamp).
//!
//! The state is derived from the log: every batch carries its producer id, epoch and base
//! sequence, so replaying batches rebuilds it. Snapshots (`<offset>.snapshot`, in Kafka's format:
//! version 1, a CRC-32C of the entries, then one 46-byte entry a producer) only make the replay
//! short: one is written when a segment rolls (at its base offset) and at clean shutdown (at the
//! log end). Recovery and truncation load the latest snapshot at or below the log end and replay
//! the batches after it. A snapshot keeps only a producer's last batch, as Kafka's does.
//!
//! Rules, as Kafka applies them to client appends:
//! - a batch whose epoch and sequence range equal one of the producer's last five batches is a
//!   duplicate: it is not appended and is answered with the original offsets;
//! - an epoch below the producer's current one is INVALID_PRODUCER_EPOCH;
//! - in the current epoch the base sequence must follow the last sequence (wrapping at
//!   `i32::MAX`), else OUT_OF_ORDER_SEQUENCE_NUMBER; a new epoch must start at sequence 0;
//! - an unknown producer (new, expired, or whose batches retention removed) may start at any
//!   sequence: Kafka stopped answering UNKNOWN_PRODUCER_ID to Produce with KIP-360.
//!
//! Invariants: at most [`MAX_BATCHES_PER_PRODUCER`] batches are kept a producer, in offset
//! order; the state reflects exactly the batches below the log end offset.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use quipu_protocol::record_batch::RecordBatchView;

use super::segment;

/// Batches remembered a producer for duplicate detection (Kafka's limit on in-flight requests
/// with idempotence).
pub const MAX_BATCHES_PER_PRODUCER: usize = 5;

const SNAPSHOT_VERSION: i16 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 2 + 4;
const SNAPSHOT_ENTRY_BYTES: usize = 8 + 2 + 4 + 8 + 4 + 8 + 4 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }
    fn last_timestamp_ms(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.max_timestamp_ms)
    }
}

/// What a produced batch's producer fields say to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Already in the log at these offsets.
    Duplicate(BatchMetadata),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SequenceError {
    #[error("{0}")]
    OutOfOrder(String),
    #[error("{0}")]
    InvalidEpoch(String),
}

/// A batch's producer fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
}

impl ProducerBatch {
    /// The producer fields of an idempotent batch; `None` for a batch without a producer id.
    pub fn of(batch: &RecordBatchView<'_>) -> Option<Self> {
        (batch.producer_id() >= 0 && batch.base_sequence() >= 0).then(|| Self {
            producer_id: batch.producer_id(),
            epoch: batch.producer_epoch(),
            first_sequence: batch.base_sequence(),
            last_sequence: batch.last_sequence(),
        })
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

fn in_sequence(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) && next >= 0 || (last == i32::MAX && next == 0)
}

impl ProducerState {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Checks a client's batch against the producer's state.
    pub fn check(&self, b: &ProducerBatch) -> Result<Verdict, SequenceError> {
        let Some(entry) = self.producers.get(&b.producer_id) else {
            return Ok(Verdict::Append);
        };
        if b.epoch == entry.epoch {
            if let Some(original) = entry.batches.iter().find(|m| {
                m.first_sequence == b.first_sequence && m.last_sequence == b.last_sequence
            }) {
                return Ok(Verdict::Duplicate(*original));
            }
        }
        if b.epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch(format!(
                "epoch {} of producer {} is older than its current epoch {}",
                b.epoch, b.producer_id, entry.epoch
            )));
        }
        if b.epoch > entry.epoch {
            if b.first_sequence != 0 {
                return Err(SequenceError::OutOfOrder(format!(
                    "invalid sequence {} for new epoch {} of producer {}: a new epoch starts at 0",
                    b.first_sequence, b.epoch, b.producer_id
                )));
            }
            return Ok(Verdict::Append);
        }
        match entry.batches.back() {
            Some(last) if !in_sequence(last.last_sequence, b.first_sequence) => {
                Err(SequenceError::OutOfOrder(format!(
                    "out of order sequence {} for producer {} epoch {}: the last sequence is {}",
                    b.first_sequence, b.producer_id, b.epoch, last.last_sequence
                )))
            }
            _ => Ok(Verdict::Append),
        }
    }

    /// Records an appended batch (or one replayed from the log).
    pub fn update(
        &mut self,
        b: &ProducerBatch,
        first_offset: i64,
        last_offset: i64,
        max_timestamp_ms: i64,
    ) {
        let entry = self
            .producers
            .entry(b.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: b.epoch,
                batches: VecDeque::new(),
            });
        if b.epoch != entry.epoch {
            entry.epoch = b.epoch;
            entry.batches.clear();
        }
        assert!(
            entry
                .batches
                .back()
                .is_none_or(|m| m.last_offset < first_offset),
            "producer batches are recorded in offset order"
        );
        entry.batches.push_back(BatchMetadata {
            first_sequence: b.first_sequence,
            last_sequence: b.last_sequence,
            first_offset,
            last_offset,
            max_timestamp_ms,
        });
        if entry.batches.len() > MAX_BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
    }

    /// Replays one batch from the log.
    pub fn replay(&mut self, batch: &RecordBatchView<'_>) {
        if let Some(b) = ProducerBatch::of(batch) {
            self.update(
                &b,
                batch.base_offset(),
                batch.last_offset(),
                batch.max_timestamp(),
            );
        }
    }

    /// Forgets producers whose last batch is below `log_start_offset` (retention removed it) or
    /// older than `expiration_ms` (`producer.id.expiration.ms`). Returns how many went.
    pub fn expire(&mut self, log_start_offset: i64, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.last_offset() >= log_start_offset
                && now_ms.saturating_sub(e.last_timestamp_ms()) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Writes the state as `<offset>.snapshot` in Kafka's format.
    pub fn write_snapshot(&self, dir: &Path, offset: i64, sync: bool) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(
            SNAPSHOT_HEADER_BYTES + 4 + self.producers.len() * SNAPSHOT_ENTRY_BYTES,
        );
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&(self.producers.len() as i32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            let last = e.batches.back();
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes.extend_from_slice(&e.epoch.to_be_bytes());
            bytes.extend_from_slice(&last.map_or(-1, |b| b.last_sequence).to_be_bytes());
            bytes.extend_from_slice(&last.map_or(-1, |b| b.last_offset).to_be_bytes());
            let delta = last.map_or(0, |b| (b.last_offset - b.first_offset) as i32);
            bytes.extend_from_slice(&delta.to_be_bytes());
            bytes.extend_from_slice(&last.map_or(-1, |b| b.max_timestamp_ms).to_be_bytes());
            bytes.extend_from_slice(&(-1i32).to_be_bytes()); // coordinator epoch
            bytes.extend_from_slice(&(-1i64).to_be_bytes()); // no open transaction
        }
        let crc = crc32c::crc32c(&bytes[SNAPSHOT_HEADER_BYTES..]);
        bytes[2..6].copy_from_slice(&crc.to_be_bytes());
        // Written whole under a temporary name: a torn snapshot never has the real name.
        let path = snapshot_path(dir, offset);
        let tmp = path.with_extension("snapshot.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        if sync {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)
    }

    /// Reads a snapshot; an error names what is wrong with it.
    pub fn read_snapshot(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        if bytes.len() < SNAPSHOT_HEADER_BYTES + 4 {
            return Err("too short".into());
        }
        let version = i16::from_be_bytes([bytes[0], bytes[1]]);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown version {version}"));
        }
        let stored = u32::from_be_bytes(bytes[2..6].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[SNAPSHOT_HEADER_BYTES..]);
        if stored != computed {
            return Err(format!(
                "CRC mismatch: {stored:#x} stored, {computed:#x} computed"
            ));
        }
        let count = i32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
        let entries = &bytes[10..];
        if count < 0 || entries.len() != count as usize * SNAPSHOT_ENTRY_BYTES {
            return Err(format!(
                "{count} entries do not fit {} bytes",
                entries.len()
            ));
        }
        let mut state = Self::default();
        for e in entries.chunks_exact(SNAPSHOT_ENTRY_BYTES) {
            let i64_at = |at: usize| i64::from_be_bytes(e[at..at + 8].try_into().expect("8 bytes"));
            let i32_at = |at: usize| i32::from_be_bytes(e[at..at + 4].try_into().expect("4 bytes"));
            let producer_id = i64_at(0);
            let epoch = i16::from_be_bytes([e[8], e[9]]);
            let (last_sequence, last_offset, delta, timestamp) =
                (i32_at(10), i64_at(14), i32_at(22), i64_at(26));
            let mut batches = VecDeque::new();
            if last_offset >= 0 {
                batches.push_back(BatchMetadata {
                    first_sequence: last_sequence.wrapping_sub(delta).max(0),
                    last_sequence,
                    first_offset: last_offset - i64::from(delta),
                    last_offset,
                    max_timestamp_ms: timestamp,
                });
            }
            state
                .producers
                .insert(producer_id, ProducerEntry { epoch, batches });
        }
        Ok(state)
    }
}

pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    segment::file_path(dir, offset, "snapshot")
}

/// The offsets of the snapshots in `dir`, in order.
pub fn snapshot_offsets(dir: &Path) -> io::Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(o) = name
            .to_string_lossy()
            .strip_suffix(".snapshot")
            .and_then(|o| o.parse::<i64>().ok())
        {
            offsets.push(o);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, first: i32, last: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id,
            epoch,
            first_sequence: first,
            last_sequence: last,
        }
    }

    #[test]
    fn sequences_epochs_and_duplicates() {
        let mut s = ProducerState::default();
        // An unknown producer may start anywhere.
        assert_eq!(s.check(&batch(1, 0, 7, 9)), Ok(Verdict::Append));
        s.update(&batch(1, 0, 0, 4), 100, 104, 10);
        assert_eq!(s.check(&batch(1, 0, 5, 9)), Ok(Verdict::Append));
        assert!(matches!(
            s.check(&batch(1, 0, 6, 9)),
            Err(SequenceError::OutOfOrder(_))
        ));
        assert!(matches!(
            s.check(&batch(1, 0, 4, 9)),
            Err(SequenceError::OutOfOrder(_))
        ));
        match s.check(&batch(1, 0, 0, 4)) {
            Ok(Verdict::Duplicate(m)) => assert_eq!((m.first_offset, m.last_offset), (100, 104)),
            other => panic!("{other:?}"),
        }
        // Only the last five batches are remembered.
        for i in 1..=5 {
            s.update(
                &batch(1, 0, i * 5, i * 5 + 4),
                100 + i as i64 * 5,
                104 + i as i64 * 5,
                10,
            );
        }
        assert!(matches!(
            s.check(&batch(1, 0, 0, 4)),
            Err(SequenceError::OutOfOrder(_))
        ));
        assert!(matches!(
            s.check(&batch(1, 0, 5, 9)),
            Ok(Verdict::Duplicate(_))
        ));
        // A new epoch starts at 0; an old epoch is fenced.
        assert!(matches!(
            s.check(&batch(1, 1, 3, 4)),
            Err(SequenceError::OutOfOrder(_))
        ));
        assert_eq!(s.check(&batch(1, 1, 0, 4)), Ok(Verdict::Append));
        s.update(&batch(1, 1, 0, 0), 200, 200, 20);
        assert!(matches!(
            s.check(&batch(1, 0, 30, 30)),
            Err(SequenceError::InvalidEpoch(_))
        ));
        // Sequences wrap.
        s.update(&batch(2, 0, i32::MAX - 1, i32::MAX), 300, 301, 30);
        assert_eq!(s.check(&batch(2, 0, 0, 3)), Ok(Verdict::Append));
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerState::default();
        s.update(&batch(9, 2, 10, 14), 50, 54, 1_000);
        s.update(&batch(3, 0, 0, 0), 55, 55, 1_001);
        s.write_snapshot(dir.path(), 56, true).unwrap();
        let path = snapshot_path(dir.path(), 56);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            10 + 2 * SNAPSHOT_ENTRY_BYTES
        );
        let back = ProducerState::read_snapshot(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(snapshot_offsets(dir.path()).unwrap(), vec![56]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(ProducerState::read_snapshot(&path)
            .unwrap_err()
            .contains("CRC"));
        std::fs::write(&path, &bytes[..7]).unwrap();
        assert!(ProducerState::read_snapshot(&path).is_err());
    }

    #[test]
    fn expiry_by_log_start_and_age() {
        let mut s = ProducerState::default();
        s.update(&batch(1, 0, 0, 0), 10, 10, 1_000);
        s.update(&batch(2, 0, 0, 0), 20, 20, 5_000);
        assert_eq!(s.expire(11, 5_000, 100_000), 1);
        assert!(s.entry(1).is_none());
        assert_eq!(s.expire(0, 200_000, 100_000), 1);
        assert!(s.is_empty());
    }
}
