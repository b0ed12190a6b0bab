//! A partition: its log, its leadership (leader and leader epoch, as the metadata last said),
//! its replicas as the leader tracks them ([`ReplicaSet`]), its high watermark, and the fetches
//! and produces waiting for it to move.
//!
//! As leader, the high watermark is the smallest log end offset over the in-sync replicas
//! (this broker's own after each append, the followers' as they fetch); as follower, it is the
//! leader's, as far as this log reaches. Only this module moves the high watermark and the
//! leader epoch (which it hands to its log, to stamp the batches a leader appends).
//!
//! Invariants: `log_start_offset <= high_watermark <= log_end_offset`; the high watermark moves
//! back only when a follower's log is truncated below it; the leader epoch never goes back; only
//! the leader appends produced batches, checked under the same lock that changes leadership, so
//! nothing is written under an epoch this broker no longer leads.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quipu_protocol::ResponseError;
use quipu_storage::log::{
    check_records, AppendError, AppendInfo, Log, RecordsChecked, ReplicaAppend,
};
use quipu_storage::log_manager::SharedLog;

use crate::image::PartitionImage;
use crate::replica_set::{IsrProposal, NotAReplica, ReplicaSet, Settled};
use tokio::sync::watch;

/// Why a leader's append was refused.
#[derive(Debug, thiserror::Error)]
pub enum LeaderAppendError {
    #[error("this broker does not lead the partition (any more)")]
    NotLeader,
    #[error(transparent)]
    Append(#[from] AppendError),
}

pub struct Partition {
    topic: Arc<str>,
    index: i32,
    /// The broker hosting this replica.
    node_id: i32,
    /// Whether the broker's image has caught up since it started (its leadership is current).
    caught_up: Arc<AtomicBool>,
    /// Told at this partition's first storage error (the broker's log directory failed).
    storage_failed: Arc<tokio::sync::Notify>,
    log: SharedLog,
    high_watermark: watch::Sender<i64>,
    /// The log end offset, published after every append (replica fetches wait on it).
    log_end: watch::Sender<i64>,
    replicas: Mutex<ReplicaSet>,
    /// The leader the metadata names, its epoch, and how many replicas are in sync.
    leader: AtomicI32,
    leader_epoch: AtomicI32,
    isr_size: AtomicI32,
    /// Set at the first storage error (damaged bytes, a failed write): from then on the
    /// partition answers KAFKA_STORAGE_ERROR until the broker restarts and recovers it, as Kafka
    /// takes a failed log directory offline. The rest of the broker keeps serving.
    offline: AtomicBool,
}

impl Partition {
    /// Serves a log the LogManager opened on broker `node_id`, placed and led as `state` says.
    /// The high watermark starts at its checkpoint; without one, at the log end for a single
    /// replica and at the log start otherwise (it only grows from there as replicas fetch).
    pub fn new(
        (topic, index): (Arc<str>, i32),
        (node_id, caught_up, storage_failed): (i32, Arc<AtomicBool>, Arc<tokio::sync::Notify>),
        log: SharedLog,
        state: &PartitionImage,
        checkpointed_high_watermark: Option<i64>,
    ) -> Self {
        let (start, end) = {
            let l = log.lock();
            (l.log_start_offset(), l.log_end_offset())
        };
        let fallback = if state.replicas.len() <= 1 {
            end
        } else {
            start
        };
        let hw = checkpointed_high_watermark
            .unwrap_or(fallback)
            .clamp(start, end);
        let partition = Self {
            topic,
            index,
            node_id,
            caught_up,
            storage_failed,
            log,
            high_watermark: watch::channel(hw).0,
            log_end: watch::channel(end).0,
            replicas: Mutex::new(ReplicaSet::new(node_id)),
            leader: AtomicI32::new(state.leader),
            leader_epoch: AtomicI32::new(-1),
            isr_size: AtomicI32::new(0),
            offline: AtomicBool::new(false),
        };
        partition.set_leadership(state);
        partition
    }

    /// Takes the leader, epoch and in-sync replicas a committed partition change gives. A stale
    /// change (an epoch below the current one) is ignored. Produces waiting on the high
    /// watermark are woken to see a lost leadership.
    pub fn set_leadership(&self, state: &PartitionImage) {
        let mut log = self.log();
        if state.leader_epoch < self.leader_epoch() {
            return;
        }
        if state.leader_epoch > log.leader_epoch() {
            log.set_leader_epoch(state.leader_epoch);
        }
        let log_end_offset = log.log_end_offset();
        let mut replicas = self.replica_set();
        replicas.update(state, log_end_offset, crate::clock::now_ms());
        self.leader.store(state.leader, Ordering::Release);
        self.leader_epoch
            .store(state.leader_epoch, Ordering::Release);
        self.isr_size
            .store(state.isr.len() as i32, Ordering::Release);
        self.advance_high_watermark(&replicas, log_end_offset);
        drop(replicas);
        self.high_watermark.send_modify(|_| {});
    }

    fn replica_set(&self) -> MutexGuard<'_, ReplicaSet> {
        self.replicas.lock().expect("replica set lock")
    }

    /// As leader, moves the high watermark to what the in-sync set allows (never back).
    fn advance_high_watermark(&self, replicas: &ReplicaSet, log_end_offset: i64) {
        let Some(allowed) = replicas.high_watermark(log_end_offset) else {
            return;
        };
        self.high_watermark.send_if_modified(|hw| {
            let moved = allowed > *hw;
            if moved {
                *hw = allowed;
            }
            moved
        });
    }

    /// How many replicas are in sync, as the metadata last said.
    pub fn isr_size(&self) -> i32 {
        self.isr_size.load(Ordering::Acquire)
    }

    /// The broker the metadata names as this partition's leader.
    pub fn leader(&self) -> i32 {
        self.leader.load(Ordering::Acquire)
    }

    /// Whether this broker leads the partition: the metadata names it, and its image has caught
    /// up since it started (a restarted broker's leadership may be stale until then).
    pub fn is_leader(&self) -> bool {
        self.leader() == self.node_id && self.caught_up.load(Ordering::Acquire)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
    pub fn index(&self) -> i32 {
        self.index
    }

    /// The log, locked. Held only for short, non-blocking work.
    pub fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock()
    }

    /// Whether a storage error took this partition offline.
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    /// Takes the partition offline after a storage error (logged once).
    pub fn take_offline(&self, error: &dyn std::fmt::Display) {
        if !self.offline.swap(true, Ordering::AcqRel) {
            tracing::error!(topic = %self.topic, partition = self.index, %error, "storage error: partition taken offline until restart");
            self.storage_failed.notify_one();
        }
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// Waiters see a change when the high watermark moves (or leadership changes).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// Waiters see a change when the log end moves (replica fetches).
    pub fn subscribe_log_end(&self) -> watch::Receiver<i64> {
        self.log_end.subscribe()
    }

    /// Flushes the log to disk; blocking, so callers on the runtime use a blocking thread.
    pub fn flush(&self, now_ms: i64) -> std::io::Result<()> {
        self.log().flush(now_ms)
    }

    /// Appends a produced batch as leader (the broker's own writes: `__consumer_offsets`).
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, LeaderAppendError> {
        self.append_checked_batch(records, now_ms)
            .map(|(info, _)| info)
    }

    /// [`Partition::append`], with the leader epoch the batch went in under.
    pub fn append_checked_batch(
        &self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<(AppendInfo, i32), LeaderAppendError> {
        let checked = check_records(records, self.log().config().cleanup_compact)?;
        self.append_checked(records, checked, now_ms)
    }

    /// [`Partition::append`] for a batch whose records were checked already (off the runtime);
    /// returns where it went and the leader epoch it was written under. Refused unless this
    /// broker leads the partition, checked under the log lock that leadership changes take.
    pub fn append_checked(
        &self,
        records: &[u8],
        checked: RecordsChecked,
        now_ms: i64,
    ) -> Result<(AppendInfo, i32), LeaderAppendError> {
        if self.is_offline() {
            let e = std::io::Error::other("the partition is offline");
            return Err(AppendError::Io(e).into());
        }
        let mut log = self.log();
        if !self.is_leader() {
            return Err(LeaderAppendError::NotLeader);
        }
        let epoch = self.leader_epoch();
        let info = match log.append_checked(records, checked, now_ms) {
            Err(AppendError::Io(e)) => {
                // A log closed by a clean shutdown refuses appends; that is no storage failure.
                if !log.is_closed() {
                    self.take_offline(&e);
                }
                return Err(AppendError::Io(e).into());
            }
            other => other?,
        };
        // Published while the log is still locked: appends publish in the order they were made, so
        // the high watermark only moves forward whatever the number of concurrent producers.
        self.appended(&log);
        drop(log);
        Ok((info, epoch))
    }

    /// After an append, under the log lock: the new log end, and the high watermark it allows.
    fn appended(&self, log: &Log) {
        let log_end_offset = log.log_end_offset();
        self.log_end.send_replace(log_end_offset);
        let replicas = self.replica_set();
        self.advance_high_watermark(&replicas, log_end_offset);
    }

    /// As leader, a follower's fetch at `fetch_offset`: its progress, and the high watermark
    /// that allows. NOT_LEADER_OR_FOLLOWER for a broker that is not one of the replicas.
    pub fn record_follower_fetch(
        &self,
        replica: i32,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let log = self.log();
        let log_end_offset = log.log_end_offset();
        let mut replicas = self.replica_set();
        replicas
            .record_fetch(replica, fetch_offset, log_end_offset, now_ms)
            .map_err(|NotAReplica| ResponseError::NotLeaderOrFollower)?;
        self.advance_high_watermark(&replicas, log_end_offset);
        Ok(())
    }

    /// As leader, the change of the in-sync set to propose now, if any (see
    /// [`ReplicaSet::isr_proposal`]).
    pub fn isr_proposal(
        &self,
        now_ms: i64,
        lag_max_ms: i64,
        eligible: &dyn Fn(i32) -> bool,
    ) -> Option<IsrProposal> {
        let high_watermark = self.high_watermark();
        self.replica_set()
            .isr_proposal(high_watermark, (now_ms, lag_max_ms), eligible)
    }

    /// What the answer to the proposal sent last (or its absence) says of it (see
    /// [`ReplicaSet::settle_proposal`]).
    pub fn settle_isr_proposal(&self, settled: Settled) {
        self.replica_set().settle_proposal(settled);
    }

    /// The replicas and in-sync replicas, as this broker knows them.
    pub fn replica_ids(&self) -> (Vec<i32>, Vec<i32>) {
        let r = self.replica_set();
        (r.replicas().to_vec(), r.isr().to_vec())
    }

    /// As follower in `leader_epoch`, appends batches fetched from the leader, as they are.
    /// Refused once leadership moved (a fetch answered after this broker became leader, or
    /// from a leader of an older epoch).
    pub fn append_as_follower(
        &self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<Option<ReplicaAppend>, AppendError> {
        let mut log = self.log();
        if self.leader_epoch() != leader_epoch || self.leader() == self.node_id {
            return Err(AppendError::InvalidRecord(format!(
                "fetched in leader epoch {leader_epoch}, but the partition is now at {} led by {}",
                self.leader_epoch(),
                self.leader()
            )));
        }
        let appended = log.append_as_follower(records, now_ms).inspect_err(|e| {
            if let AppendError::Io(e) = e {
                if !log.is_closed() {
                    self.take_offline(e);
                }
            }
        })?;
        self.log_end.send_replace(log.log_end_offset());
        Ok(appended)
    }

    /// As follower, the leader's high watermark, as far as this log reaches.
    pub fn follow_high_watermark(&self, leader_high_watermark: i64) {
        let log_end_offset = self.log().log_end_offset();
        let allowed = leader_high_watermark.min(log_end_offset);
        self.high_watermark.send_if_modified(|hw| {
            let moved = allowed > *hw;
            if moved {
                *hw = allowed;
            }
            moved
        });
    }

    /// As follower, cuts the log at `offset` (KIP-101) or, when the leader's log starts past
    /// this one's end, starts it again at the leader's start; the high watermark follows down.
    pub fn truncate(
        &self,
        offset: i64,
        leader_log_start_offset: Option<i64>,
    ) -> std::io::Result<()> {
        let now_ms = crate::clock::now_ms();
        let mut log = self.log();
        match leader_log_start_offset {
            Some(start) => log.truncate_fully_and_start_at(start, now_ms)?,
            None => log.truncate_to(offset, now_ms)?,
        }
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        self.log_end.send_replace(end);
        self.high_watermark
            .send_modify(|hw| *hw = (*hw).clamp(start, end));
        Ok(())
    }

    /// Waits until the records up to `last_offset`, appended under `leader_epoch`, are below the
    /// high watermark (acks=all), for at most `timeout`: REQUEST_TIMED_OUT after it,
    /// NOT_LEADER_OR_FOLLOWER when leadership moved meanwhile (what was appended may be cut),
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND when committed with fewer in-sync replicas than
    /// `min_insync_replicas`.
    pub async fn wait_replicated(
        &self,
        (last_offset, leader_epoch): (i64, i32),
        min_insync_replicas: i32,
        timeout: Duration,
    ) -> Result<(), ResponseError> {
        let mut hw = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !self.is_leader() || self.leader_epoch() != leader_epoch {
                return Err(ResponseError::NotLeaderOrFollower);
            }
            if *hw.borrow_and_update() > last_offset {
                return match self.isr_size() < min_insync_replicas {
                    true => Err(ResponseError::NotEnoughReplicasAfterAppend),
                    false => Ok(()),
                };
            }
            match tokio::time::timeout_at(deadline, hw.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(ResponseError::NotLeaderOrFollower),
                Err(_) => return Err(ResponseError::RequestTimedOut),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quipu_config::topic::TopicConfig;
    use quipu_protocol::records::Compression;
    use quipu_storage::log_manager::LogManager;

    fn partition(dir: &std::path::Path) -> (Arc<LogManager>, Partition) {
        let logs = Arc::new(LogManager::lock(dir, 1).unwrap());
        let config = TopicConfig::defaults_from(&Default::default()).unwrap();
        let log = logs
            .create_logs(&Arc::from("t"), uuid::Uuid::new_v4(), (0, 1), &config, 0)
            .unwrap()
            .remove(0);
        let state = PartitionImage {
            replicas: vec![0],
            isr: vec![0],
            leader: 0,
            leader_epoch: 2,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        let ready = Arc::new(AtomicBool::new(true));
        (
            logs,
            Partition::new(
                ("t".into(), 0),
                (0, ready, Arc::default()),
                log,
                &state,
                None,
            ),
        )
    }

    #[test]
    fn the_high_watermark_follows_concurrent_appends_and_never_moves_back() {
        let dir = tempfile::tempdir().unwrap();
        let (_logs, p) = partition(dir.path());
        assert_eq!(
            (p.high_watermark(), p.leader_epoch(), p.log().leader_epoch()),
            (0, 2, 2)
        );
        let mut seen = p.subscribe();
        let batch = quipu_protocol::testing::batch(2, 8, 1_000, Compression::None);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        p.append(&batch, 1_000).unwrap();
                    }
                });
            }
            s.spawn(|| {
                let mut last = 0;
                while last < 400 {
                    let hw = p.high_watermark();
                    assert!(hw >= last, "the high watermark moved back");
                    last = hw;
                }
            });
        });
        assert_eq!(p.high_watermark(), 400);
        assert!(seen.has_changed().unwrap());
        assert_eq!(*seen.borrow_and_update(), 400);
    }

    #[test]
    fn an_offline_partition_refuses_appends_and_keeps_its_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let (_logs, p) = partition(dir.path());
        let batch = quipu_protocol::testing::batch(1, 8, 1_000, Compression::None);
        p.append(&batch, 1_000).unwrap();
        let failed = p.storage_failed.clone();
        let told = failed.notified();
        p.take_offline(&"test");
        // The broker is told (a cluster's broker stops, as Kafka's does when its only log
        // directory fails).
        futures_util::FutureExt::now_or_never(told).expect("the failure is signalled");
        assert!(matches!(
            p.append(&batch, 1_000),
            Err(LeaderAppendError::Append(AppendError::Io(_)))
        ));
        assert_eq!(p.high_watermark(), 1);
    }
}
