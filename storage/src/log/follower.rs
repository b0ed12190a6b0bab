//! The log as a follower writes it: batches copied from the leader's log, offsets and leader
//! epochs as the leader gave them (nothing stamped again), and the state derived from them (the
//! epoch cache, idempotent producers) rebuilt from those batches, so that a follower that becomes
//! leader answers retries and epochs as its old leader would have.
//!
//! Invariants: a follower's batch lands at or after the log end (after it only across a gap the
//! leader's cleaner left: offsets only grow) and only after its CRC checks; epochs in the cache
//! only grow with offsets.

use std::io;

use quipu_protocol::record_batch::{batch_size_bytes, RecordBatchView};

use super::{parse_batch, segment::Segment, sizes_of, AppendError, Log, ProducerState};

/// What a follower's append wrote: the first and last offsets, if it wrote anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAppend {
    pub first_offset: i64,
    pub last_offset: i64,
    pub batches: usize,
}

impl Log {
    /// Appends the whole batches of `records` (a fetch response's bytes from the leader, whose
    /// last batch may be cut short: that part is left for the next fetch) as they are. A batch
    /// that does not start at the log end, or fails its CRC, refuses the rest.
    pub fn append_as_follower(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<Option<ReplicaAppend>, AppendError> {
        if self.closed {
            return Err(AppendError::Io(io::Error::other(
                "the log is closed: the broker is shutting down",
            )));
        }
        let mut rest = records;
        let mut written: Option<ReplicaAppend> = None;
        while let Some(size) = batch_size_bytes(rest) {
            let size = size.map_err(|e| AppendError::Corrupt(e.to_string()))?;
            if size > rest.len() {
                break;
            }
            let (bytes, tail) = rest.split_at(size);
            rest = tail;
            let batch = parse_batch(bytes)?;
            batch
                .validate()
                .map_err(|e| AppendError::Corrupt(e.to_string()))?;
            self.append_replicated(&batch, now_ms)?;
            let w = written.get_or_insert(ReplicaAppend {
                first_offset: batch.base_offset(),
                last_offset: batch.last_offset(),
                batches: 0,
            });
            w.last_offset = batch.last_offset();
            w.batches += 1;
        }
        Ok(written)
    }

    fn append_replicated(
        &mut self,
        batch: &RecordBatchView<'_>,
        now_ms: i64,
    ) -> Result<(), AppendError> {
        let log_end_offset = self.log_end_offset();
        // Above the log end is a gap the leader's cleaner made (a compacted topic): the batch
        // lands after it, as Kafka's follower appends it. Below would rewrite what is there.
        if batch.base_offset() < log_end_offset {
            return Err(AppendError::InvalidRecord(format!(
                "a replicated batch starts at offset {}, below the log end offset {log_end_offset}",
                batch.base_offset()
            )));
        }
        let epoch = batch.partition_leader_epoch();
        if self
            .epochs
            .latest_epoch()
            .is_some_and(|latest| epoch < latest)
        {
            return Err(AppendError::InvalidRecord(format!(
                "a replicated batch has leader epoch {epoch}, below the log's latest epoch"
            )));
        }
        let offsets = (batch.base_offset(), batch.last_offset(), epoch);
        let stamp = (None, batch.max_timestamp());
        self.write_batch(batch.as_bytes(), offsets, stamp, now_ms)?;
        self.producers.replay(batch);
        Ok(())
    }

    /// Empties the log and starts it again at `offset` (a follower whose log end is below its
    /// leader's log start: what it holds cannot be continued). Every segment, epoch and producer
    /// goes.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64, now_ms: i64) -> io::Result<()> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases {
            let segment = self.segments.remove(&base).expect("present");
            segment.delete_files(&self.dir)?;
        }
        let sizes = sizes_of(&self.config);
        self.segments
            .insert(offset, Segment::create(&self.dir, offset, sizes, now_ms)?);
        self.log_start_offset = offset;
        // No entry starts below i64::MIN: every one goes.
        if self.epochs.truncate_from_end(i64::MIN) {
            self.epochs.save()?;
        }
        self.recovery_point = offset;
        self.producers = ProducerState::default();
        for old in super::producer_state::snapshot_offsets(&self.dir)? {
            std::fs::remove_file(super::producer_state::snapshot_path(&self.dir, old))?;
        }
        Ok(())
    }
}
