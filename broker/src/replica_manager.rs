//! The replica manager: hosts the partitions this broker has a replica of, as Kafka's
//! ReplicaManager does, and is the one place handlers find a partition.
//!
//! The metadata publisher hands it each committed topic ([`ReplicaManager::apply_topic`]): new
//! partitions are served from the logs the LogManager holds, existing ones take the new config
//! and leadership, a deleted topic's partitions stop being served. A request reaches a partition
//! only through [`ReplicaManager::leader_partition`], which answers as Kafka's does when the
//! partition is unknown, offline, led elsewhere, or the client's leader epoch is not the
//! partition's.
//!
//! Invariants: a hosted partition is one the latest published image places on this broker;
//! a partition's leadership changes only by a committed record (through `apply_topic`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use quipu_config::topic::TopicConfig;
use quipu_protocol::ResponseError;
use quipu_storage::checkpoint;
use quipu_storage::log_manager::{LogManager, LogManagerError, SharedLog};

use crate::image::TopicImage;
use crate::partition::Partition;

pub struct ReplicaManager {
    node_id: i32,
    logs: Arc<LogManager>,
    partitions: RwLock<BTreeMap<String, Hosted>>,
    /// The high watermarks checkpointed by the last run, read once at start.
    checkpointed: checkpoint::Offsets,
    /// Told after every committed change the partitions took (the replica fetchers follow it).
    leadership_changes: Arc<tokio::sync::Notify>,
    /// Whether this broker's image has caught up with the metadata log since it started: until
    /// then no partition acts as leader (its leadership may be stale). Set at once on a single
    /// node.
    caught_up: Arc<AtomicBool>,
    /// Told when a partition's log meets a storage error (see `storage_failures`).
    storage_failed: Arc<tokio::sync::Notify>,
}

/// Kafka's file of every hosted partition's high watermark.
pub const HIGH_WATERMARK_CHECKPOINT: &str = "replication-offset-checkpoint";

/// A topic as this broker hosts it: its partition count and the partitions it has a replica of.
#[derive(Default, Clone)]
struct Hosted {
    count: i32,
    partitions: BTreeMap<i32, Arc<Partition>>,
}

impl ReplicaManager {
    pub fn new(node_id: i32, logs: Arc<LogManager>) -> Self {
        let checkpointed = checkpoint::read(&logs.data_dir().join(HIGH_WATERMARK_CHECKPOINT));
        Self {
            node_id,
            logs,
            partitions: RwLock::new(BTreeMap::new()),
            checkpointed,
            leadership_changes: Arc::default(),
            caught_up: Arc::default(),
            storage_failed: Arc::default(),
        }
    }

    /// Notified when a hosted partition's log fails (a failed write or damaged bytes): its
    /// directory has failed. A cluster broker stops, so that its partitions' leadership moves
    /// to replicas whose disks work, as Kafka's broker does when its only log directory fails.
    pub fn storage_failures(&self) -> Arc<tokio::sync::Notify> {
        self.storage_failed.clone()
    }

    /// Whether this broker's image has caught up since it started (see `set_caught_up`).
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// This broker's image now holds everything committed before its registration: its
    /// partitions may act as leaders.
    pub fn set_caught_up(&self) {
        if !self.caught_up.swap(true, Ordering::AcqRel) {
            tracing::info!("caught up with the metadata log: leading partitions");
            self.leadership_changes.notify_one();
        }
    }

    /// Notified after every committed change of the hosted partitions.
    pub fn leadership_changes(&self) -> Arc<tokio::sync::Notify> {
        self.leadership_changes.clone()
    }

    /// Writes every hosted partition's high watermark to `replication-offset-checkpoint`, so
    /// that a restarted replica serves no record it cannot know was committed.
    pub fn checkpoint_high_watermarks(&self) -> std::io::Result<()> {
        let offsets: checkpoint::Offsets = self
            .all()
            .iter()
            .map(|p| ((p.topic().to_string(), p.index()), p.high_watermark()))
            .collect();
        checkpoint::write(
            &self.logs.data_dir().join(HIGH_WATERMARK_CHECKPOINT),
            &offsets,
        )
    }

    /// The broker this manager hosts partitions for.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// Records each partition's log start offset, so a start moved by DeleteRecords or
    /// retention survives a restart.
    pub fn checkpoint_log_start_offsets(&self) -> std::io::Result<()> {
        self.logs.checkpoint_log_start_offsets()
    }

    /// The partition of `topic` at `index` that this broker leads, checked against the client's
    /// `current_leader_epoch` (-1: none), in Kafka's order: UNKNOWN_TOPIC_OR_PARTITION,
    /// KAFKA_STORAGE_ERROR (offline), FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH, then
    /// NOT_LEADER_OR_FOLLOWER.
    pub fn leader_partition(
        &self,
        topic: &str,
        index: i32,
        current_leader_epoch: i32,
    ) -> Result<Arc<Partition>, ResponseError> {
        self.lookup(topic, index, current_leader_epoch, true)
    }

    /// As [`ReplicaManager::leader_partition`], a follower's replica too: a consumer may read
    /// from a follower (KIP-392), up to the follower's high watermark.
    pub fn readable_partition(
        &self,
        topic: &str,
        index: i32,
        current_leader_epoch: i32,
    ) -> Result<Arc<Partition>, ResponseError> {
        self.lookup(topic, index, current_leader_epoch, false)
    }

    fn lookup(
        &self,
        topic: &str,
        index: i32,
        current_leader_epoch: i32,
        leader_only: bool,
    ) -> Result<Arc<Partition>, ResponseError> {
        let partition = {
            let partitions = self.partitions.read().expect("replica manager lock");
            let hosted = partitions
                .get(topic)
                .filter(|h| (0..h.count).contains(&index))
                .ok_or(ResponseError::UnknownTopicOrPartition)?;
            // A partition of the topic with no replica here: another broker's.
            hosted
                .partitions
                .get(&index)
                .cloned()
                .ok_or(ResponseError::NotLeaderOrFollower)?
        };
        if partition.is_offline() {
            return Err(ResponseError::KafkaStorageError);
        }
        let epoch = partition.leader_epoch();
        match current_leader_epoch {
            e if e >= 0 && e < epoch => return Err(ResponseError::FencedLeaderEpoch),
            e if e > epoch => return Err(ResponseError::UnknownLeaderEpoch),
            _ => {}
        }
        if leader_only && !partition.is_leader() {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        Ok(partition)
    }

    /// A hosted partition, whoever leads it (for the broker's own work: groups, log tasks).
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let partitions = self.partitions.read().expect("replica manager lock");
        partitions.get(topic)?.partitions.get(&index).cloned()
    }

    /// The hosted partitions of a topic, in index order.
    pub fn partitions_of(&self, topic: &str) -> Vec<Arc<Partition>> {
        let partitions = self.partitions.read().expect("replica manager lock");
        partitions
            .get(topic)
            .map(|h| h.partitions.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        let partitions = self.partitions.read().expect("replica manager lock");
        partitions
            .values()
            .flat_map(|h| h.partitions.values().cloned())
            .collect()
    }

    /// Serves a committed topic as the image has it: of the partitions with a replica on this
    /// broker, existing ones take `config` and their leadership, new ones are served from the
    /// logs the LogManager holds (made before the commit) or made now. A partition whose log
    /// cannot be opened stays unserved, logged; one placed on other brokers only is not hosted.
    pub fn apply_topic(&self, t: &TopicImage, config: &TopicConfig, replaced: bool) {
        let existing = match replaced {
            true => Hosted::default(),
            false => self.hosted(&t.name),
        };
        let mut hosted = Hosted {
            count: t.partitions.len() as i32,
            partitions: BTreeMap::new(),
        };
        for (index, image) in t.partitions.iter().enumerate() {
            let index = index as i32;
            if !image.replicas.contains(&self.node_id) {
                continue;
            }
            if let Some(p) = existing.partitions.get(&index) {
                p.log().set_config(config.clone());
                p.set_leadership(image);
                hosted.partitions.insert(index, p.clone());
                continue;
            }
            match self.log_of(t, index, config) {
                Ok(log) => {
                    let checkpointed = self.checkpointed.get(&(t.name.to_string(), index));
                    let partition = Partition::new(
                        (t.name.clone(), index),
                        (
                            self.node_id,
                            self.caught_up.clone(),
                            self.storage_failed.clone(),
                        ),
                        log,
                        image,
                        checkpointed.copied(),
                    );
                    hosted.partitions.insert(index, Arc::new(partition));
                }
                Err(e) => {
                    tracing::error!(topic = %t.name, partition = index, error = %e, "cannot open the log of a committed partition")
                }
            }
        }
        // Replicas moved off this broker (a reassignment completed): their logs go.
        let moved_off: Vec<i32> = existing
            .partitions
            .keys()
            .copied()
            .filter(|i| !hosted.partitions.contains_key(i))
            .collect();
        self.partitions
            .write()
            .expect("replica manager lock")
            .insert(t.name.to_string(), hosted);
        for index in moved_off {
            tracing::info!(topic = %t.name, partition = index, "replica moved off this broker: removing its log");
            self.logs.remove_logs(&t.name, t.id, index..index + 1);
        }
        self.leadership_changes.notify_one();
    }

    fn hosted(&self, topic: &str) -> Hosted {
        let partitions = self.partitions.read().expect("replica manager lock");
        partitions.get(topic).cloned().unwrap_or_default()
    }

    fn log_of(
        &self,
        t: &TopicImage,
        index: i32,
        config: &TopicConfig,
    ) -> Result<SharedLog, LogManagerError> {
        if let Some(log) = self.logs.log(&t.name, index) {
            return Ok(log);
        }
        let made = self.logs.create_logs(
            &t.name,
            t.id,
            (index, index + 1),
            config,
            crate::clock::now_ms(),
        )?;
        Ok(made.into_iter().next().expect("one log made"))
    }

    /// Stops serving a deleted topic, then renames its directories away and removes them
    /// (resumed at the next start if interrupted). Readers still holding slices of its segments
    /// keep their mappings (unlink is safe).
    pub fn remove_topic(&self, gone: &TopicImage) {
        let served = self
            .partitions
            .write()
            .expect("replica manager lock")
            .remove(&*gone.name);
        drop(served);
        self.logs
            .remove_logs(&gone.name, gone.id, 0..gone.partitions.len() as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::PartitionImage;

    fn placed(leader: i32, leader_epoch: i32) -> PartitionImage {
        PartitionImage {
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader,
            leader_epoch,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    fn topic(partitions: Vec<PartitionImage>) -> TopicImage {
        TopicImage {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            configs: Default::default(),
            partitions,
        }
    }

    #[test]
    fn requests_reach_only_partitions_led_here_at_their_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Arc::new(LogManager::lock(dir.path(), 1).unwrap());
        let replicas = ReplicaManager::new(1, logs);
        replicas.set_caught_up();
        let config = TopicConfig::defaults_from(&Default::default()).unwrap();
        let t = topic(vec![placed(1, 3), placed(2, 0)]);
        replicas.apply_topic(&t, &config, false);
        let code = |p: i32, epoch: i32| replicas.leader_partition("t", p, epoch).err();
        assert_eq!(code(0, -1), None);
        assert_eq!(code(0, 3), None);
        assert_eq!(code(0, 2), Some(ResponseError::FencedLeaderEpoch));
        assert_eq!(code(0, 4), Some(ResponseError::UnknownLeaderEpoch));
        assert_eq!(code(1, -1), Some(ResponseError::NotLeaderOrFollower));
        assert_eq!(code(2, -1), Some(ResponseError::UnknownTopicOrPartition));
        assert_eq!(code(-1, -1), Some(ResponseError::UnknownTopicOrPartition));
        assert_eq!(
            replicas.leader_partition("u", 0, -1).err(),
            Some(ResponseError::UnknownTopicOrPartition)
        );
        // A committed change moves leadership; a stale one (a lower epoch) is ignored.
        let moved = TopicImage {
            partitions: vec![placed(2, 4), placed(1, 1)],
            ..t.clone()
        };
        replicas.apply_topic(&moved, &config, false);
        assert_eq!(code(0, 4), Some(ResponseError::NotLeaderOrFollower));
        assert_eq!(code(1, 1), None);
        assert_eq!(replicas.partition("t", 1).unwrap().log().leader_epoch(), 1);
        replicas.apply_topic(&t, &config, false);
        assert_eq!(replicas.partition("t", 0).unwrap().leader_epoch(), 4);
        replicas.partition("t", 1).unwrap().take_offline(&"test");
        assert_eq!(code(1, 1), Some(ResponseError::KafkaStorageError));
        replicas.remove_topic(&t);
        assert_eq!(code(0, -1), Some(ResponseError::UnknownTopicOrPartition));
        assert!(!dir.path().join("t-0").exists());
    }
}
