//! A partition: its log, its leadership (leader and leader epoch, as the metadata last said),
//! its high watermark, and the fetches waiting for it to move.
//!
//! On a single broker the replica set is this broker alone, so the high watermark follows the log
//! end offset at once after each append. Only this module moves the high watermark and the
//! leader epoch (which it hands to its log, to stamp the batches it appends).
//!
//! Invariants: `log_start_offset <= high_watermark <= log_end_offset`; the leader epoch never
//! goes back.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, MutexGuard};

use quipu_storage::log::{check_records, AppendError, AppendInfo, Log, RecordsChecked};
use quipu_storage::log_manager::SharedLog;

use crate::image::PartitionImage;
use tokio::sync::watch;

pub struct Partition {
    topic: Arc<str>,
    index: i32,
    log: SharedLog,
    high_watermark: watch::Sender<i64>,
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
    /// Serves a log the LogManager opened, placed and led as `state` says; the high watermark
    /// starts at its end (one replica).
    pub fn new(topic: Arc<str>, index: i32, log: SharedLog, state: &PartitionImage) -> Self {
        let (high_watermark, _) = watch::channel(log.lock().log_end_offset());
        let partition = Self {
            topic,
            index,
            log,
            high_watermark,
            leader: AtomicI32::new(state.leader),
            leader_epoch: AtomicI32::new(-1),
            isr_size: AtomicI32::new(0),
            offline: AtomicBool::new(false),
        };
        partition.set_leadership(state);
        partition
    }

    /// Takes the leader, epoch and in-sync replicas a committed partition change gives. A stale
    /// change (an epoch below the current one) is ignored.
    pub fn set_leadership(&self, state: &PartitionImage) {
        let mut log = self.log();
        if state.leader_epoch < self.leader_epoch() {
            return;
        }
        if state.leader_epoch > log.leader_epoch() {
            log.set_leader_epoch(state.leader_epoch);
        }
        self.leader.store(state.leader, Ordering::Release);
        self.leader_epoch
            .store(state.leader_epoch, Ordering::Release);
        self.isr_size
            .store(state.isr.len() as i32, Ordering::Release);
    }

    /// How many replicas are in sync, as the metadata last said.
    pub fn isr_size(&self) -> i32 {
        self.isr_size.load(Ordering::Acquire)
    }

    /// The broker the metadata names as this partition's leader.
    pub fn leader(&self) -> i32 {
        self.leader.load(Ordering::Acquire)
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
        }
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// Waiters see a change when the high watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// Flushes the log to disk; blocking, so callers on the runtime use a blocking thread.
    pub fn flush(&self, now_ms: i64) -> std::io::Result<()> {
        self.log().flush(now_ms)
    }

    /// Appends a produced batch and, the replica set being this broker alone, commits it.
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, AppendError> {
        let checked = check_records(records, self.log().config().cleanup_compact)?;
        self.append_checked(records, checked, now_ms)
    }

    /// [`Partition::append`] for a batch whose records were checked already (off the runtime).
    pub fn append_checked(
        &self,
        records: &[u8],
        checked: RecordsChecked,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if self.is_offline() {
            return Err(AppendError::Io(std::io::Error::other(
                "the partition is offline",
            )));
        }
        let mut log = self.log();
        let info = match log.append_checked(records, checked, now_ms) {
            Err(AppendError::Io(e)) => {
                // A log closed by a clean shutdown refuses appends; that is no storage failure.
                if !log.is_closed() {
                    self.take_offline(&e);
                }
                return Err(AppendError::Io(e));
            }
            other => other?,
        };
        // Published while the log is still locked: appends publish in the order they were made, so
        // the high watermark only moves forward whatever the number of concurrent producers.
        let log_end_offset = log.log_end_offset();
        self.high_watermark.send_modify(|hw| {
            assert!(log_end_offset >= *hw, "high watermark never moves back");
            *hw = log_end_offset;
        });
        drop(log);
        Ok(info)
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
        };
        (logs, Partition::new("t".into(), 0, log, &state))
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
        p.take_offline(&"test");
        assert!(matches!(p.append(&batch, 1_000), Err(AppendError::Io(_))));
        assert_eq!(p.high_watermark(), 1);
    }
}
