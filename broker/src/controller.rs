//! The controller: the one writer of the metadata log. It turns an admin change (create or
//! delete a topic, add partitions, change a topic's config, reserve producer ids) into metadata
//! records, checks them against the current image, appends them to the [`MetadataLog`] and hands
//! them, applied by the same `apply` replay uses, to the [`Publisher`].
//!
//! On a single node the controller hosts every replica, so a change that makes partitions makes
//! their logs first (all or nothing, through the LogManager) and commits the records last; a
//! crash in between leaves directories the next start removes.
//!
//! It works with `metadata_log` (the log interface, its file and the typed records) and
//! `image` (what the records add up to).
//!
//! Invariants: a record is in the log (durable) before any node acts on it, and every record in
//! the log applies to the image its predecessors leave (a change that would not apply is refused
//! before it is appended); records are applied in log order; a producer id is never handed out
//! twice; topic changes are serialized, and producer-id blocks never wait behind them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use quipu_config::topic::TopicConfig;
use quipu_config::BrokerConfig;
use quipu_storage::log_manager::LogManager;
use uuid::Uuid;

use crate::applier::Applier;
use crate::commit_log::{CommitError, MetadataLog};
use crate::image::ApplyError;
use crate::metadata::{validate_topic_name, Metadata, MetadataError, Topic};
use crate::metadata_log::record::{MetadataRecord, PartitionRecord};
use crate::publisher::{MetadataSubscriber, Publisher};
use crate::replica_manager::ReplicaManager;
use crate::single_node_log::FileMetadataLog;

/// Producer ids reserved in the metadata log at a time.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// Largest partition count a topic may have; a bound on what one request can make the broker open.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// The producer ids of the current block: `next` up to `block_end` (exclusive).
struct ProducerIds {
    next: i64,
    block_end: i64,
}

pub struct Controller {
    node_id: i32,
    broker: BrokerConfig,
    log: Box<dyn MetadataLog>,
    metadata: Arc<Metadata>,
    logs: Arc<LogManager>,
    /// Serializes topic changes, which check, make directories and then commit; held across
    /// that slow work, so that producer-id allocation, which only commits, never waits on it.
    changes: Mutex<()>,
    producer_ids: Mutex<ProducerIds>,
}

/// Opens a single node's metadata: its metadata log file (made if missing), replayed into the
/// image, the live partitions' logs opened, and the controller that writes the log from now on.
/// Committed batches reach the served topics first, then `more_subscribers` in order.
pub fn open_local(
    broker: &BrokerConfig,
    logs: Arc<LogManager>,
    replicas: Arc<ReplicaManager>,
    more_subscribers: Vec<Arc<dyn MetadataSubscriber>>,
) -> Result<(Arc<Metadata>, Controller), MetadataError> {
    let dir = broker.log_dirs.join(crate::metadata::METADATA_DIR);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("metadata.log");
    let records = crate::metadata_log::read_log(&path, broker.node_id)?;
    let applier = open_applier(broker, (logs.clone(), replicas), &records, more_subscribers)?;
    let metadata = applier.metadata().clone();
    let log = FileMetadataLog::open(&path, applier)?;
    let controller = Controller::new(broker, Box::new(log), metadata.clone(), logs);
    Ok((metadata, controller))
}

/// The image `records` give, with the logs of its live partitions opened, published once to the
/// served topics and then `more_subscribers`; returned as the applier later batches go through.
pub fn open_applier(
    broker: &BrokerConfig,
    (logs, replicas): (Arc<LogManager>, Arc<ReplicaManager>),
    records: &[MetadataRecord],
    more_subscribers: Vec<Arc<dyn MetadataSubscriber>>,
) -> Result<Applier, MetadataError> {
    let metadata = Arc::new(Metadata::open(broker, logs, replicas, records)?);
    let mut subscribers: Vec<Arc<dyn MetadataSubscriber>> = vec![metadata.clone()];
    subscribers.extend(more_subscribers);
    let publisher = Publisher::new(subscribers);
    publisher.publish_start(&metadata.image());
    Ok(Applier::new(metadata, publisher))
}

/// Attempts at a change refused only because another controller's change came first.
const COMMIT_ATTEMPTS: usize = 10;

impl Controller {
    /// The controller over a metadata log; `metadata` holds the image the log's records gave at
    /// start and receives every batch the log commits.
    pub fn new(
        broker: &BrokerConfig,
        log: Box<dyn MetadataLog>,
        metadata: Arc<Metadata>,
        logs: Arc<LogManager>,
    ) -> Self {
        // Ids of a block reserved before a restart are never handed out again.
        let taken = metadata.image().producer_ids_end();
        Self {
            node_id: broker.node_id,
            broker: broker.clone(),
            log,
            metadata,
            logs,
            changes: Mutex::new(()),
            producer_ids: Mutex::new(ProducerIds {
                next: taken,
                block_end: taken,
            }),
        }
    }

    /// How many entries the metadata log has committed.
    pub fn committed_end(&self) -> i64 {
        self.log.committed_end()
    }

    /// The metadata this controller's commits reach.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Commits `records` through the metadata log; once it returns, this node's metadata serves
    /// what they changed.
    fn commit(&self, records: &[MetadataRecord]) -> Result<(), MetadataError> {
        self.log.commit(records).map_err(MetadataError::from)
    }

    /// Registers broker `node_id` at `host:port`, unfenced (a single node's registration at
    /// start); a new registration, at the next broker epoch, only when the address changed or
    /// the broker is fenced.
    pub fn register_broker(
        &self,
        node_id: i32,
        host: &str,
        port: i32,
    ) -> Result<(), MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        let image = self.metadata.image();
        let current = image.broker(node_id);
        if current.is_some_and(|b| b.host == host && b.port == port && !b.fenced) {
            return Ok(());
        }
        let broker_epoch = current.map_or(1, |b| b.broker_epoch + 1);
        self.commit(&[
            MetadataRecord::BrokerRegistered {
                node_id,
                broker_epoch,
                host: host.to_string(),
                port,
            },
            MetadataRecord::BrokerFencing {
                node_id,
                fenced: false,
            },
        ])?;
        tracing::info!(node_id, broker_epoch, host, port, "registered broker");
        Ok(())
    }

    /// A producer id never handed out before, reserving a new block in the metadata log when the
    /// current one is used up.
    pub fn allocate_producer_id(&self) -> Result<i64, MetadataError> {
        let mut ids = self.producer_ids.lock().expect("producer ids lock");
        let mut attempts = 0;
        while ids.next >= ids.block_end {
            // Another controller may have reserved blocks since: start after them.
            ids.next = ids.next.max(self.metadata.image().producer_ids_end());
            let block_end = ids.next + PRODUCER_ID_BLOCK_SIZE;
            match self
                .log
                .commit(&[MetadataRecord::ProducerIdsAllocated { block_end }])
            {
                Ok(()) => ids.block_end = block_end,
                Err(CommitError::Refused(ApplyError::ProducerIdsBack(_)))
                    if attempts < COMMIT_ATTEMPTS =>
                {
                    attempts += 1
                }
                Err(e) => return Err(e.into()),
            }
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    /// Checks a CreateTopics entry; `partitions` and `replication_factor` of -1 take the defaults.
    /// Returns the resolved partition count and effective config.
    pub fn check_new_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(i32, TopicConfig), MetadataError> {
        validate_topic_name(name)?;
        if self.metadata.topic(name).is_some() {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        let partitions = if partitions == -1 {
            self.broker.num_partitions
        } else {
            partitions
        };
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(MetadataError::InvalidPartitions(format!(
                "number of partitions must be from 1 to {MAX_PARTITIONS_PER_TOPIC}, not {partitions}"
            )));
        }
        let rf = if replication_factor == -1 {
            self.broker.default_replication_factor
        } else {
            replication_factor
        };
        self.placement_brokers(rf)?;
        let config = TopicConfig::with_overrides(&self.broker, overrides)?;
        Ok((partitions, config))
    }

    /// The brokers replicas may be placed on (this node alone on a single node; otherwise the
    /// registered, unfenced brokers, by id), if there are at least `rf` of them.
    fn placement_brokers(&self, rf: i16) -> Result<Vec<i32>, MetadataError> {
        let brokers: Vec<i32> = if self.log.is_single_node() {
            vec![self.node_id]
        } else {
            let image = self.metadata.image();
            image
                .brokers()
                .filter(|b| !b.fenced)
                .map(|b| b.node_id)
                .collect()
        };
        if rf < 1 || rf as usize > brokers.len() {
            return Err(MetadataError::InvalidReplicationFactor(format!(
                "unable to replicate the partition {rf} time(s): the target replication factor of {rf} cannot be reached because only {} broker(s) are registered",
                brokers.len()
            )));
        }
        Ok(brokers)
    }

    /// The records placing partitions `from..to` of `topic`, `rf` replicas each, at the first
    /// epochs. Replica lists rotate over the brokers from a random start, so leaders (the first
    /// replica) spread evenly. Until followers replicate (the replication issue), the in-sync
    /// set is the leader alone: no other replica holds anything yet.
    fn place(
        &self,
        topic: &str,
        (from, to): (i32, i32),
        rf: i16,
    ) -> Result<Vec<MetadataRecord>, MetadataError> {
        let brokers = self.placement_brokers(rf)?;
        let start = Uuid::new_v4().as_u128() as usize % brokers.len();
        Ok((from..to)
            .map(|p| {
                let replicas: Vec<i32> = (0..rf as usize)
                    .map(|k| brokers[(start + p as usize + k) % brokers.len()])
                    .collect();
                let mut record = PartitionRecord::on_one_node(topic, p, replicas[0]);
                record.replicas = replicas;
                MetadataRecord::Partition(record)
            })
            .collect())
    }

    /// On a single node, makes the logs of partitions `from..to` first, then commits `records`;
    /// if the commit fails, the logs are removed and nothing of the change is left. In a
    /// cluster, commits only: each replica's broker makes its log when it applies the records.
    fn commit_with_logs(
        &self,
        name: &Arc<str>,
        id: Uuid,
        range: (i32, i32),
        config: &TopicConfig,
        records: &[MetadataRecord],
    ) -> Result<(), MetadataError> {
        if !self.log.is_single_node() {
            return self.commit(records);
        }
        let made = self
            .logs
            .create_logs(name, id, range, config, crate::clock::now_ms())?;
        if let Err(e) = self.commit(records) {
            drop(made);
            self.logs.remove_logs(name, id, range.0..range.1);
            return Err(e);
        }
        Ok(())
    }

    /// Creates a topic, all or nothing: its partitions' logs are made first, then the records
    /// that make the topic live are committed; if either fails, the topic does not exist.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        let (partitions, config) =
            self.check_new_topic(name, partitions, replication_factor, &overrides)?;
        let rf = if replication_factor == -1 {
            self.broker.default_replication_factor
        } else {
            replication_factor
        };
        let id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::TopicCreated {
            name: name.to_string(),
            topic_id: id,
            configs: overrides,
        }];
        records.extend(self.place(name, (0, partitions), rf)?);
        self.commit_with_logs(&name.into(), id, (0, partitions), &config, &records)?;
        tracing::info!(topic = %name, partitions, %id, "created topic");
        Ok(self
            .metadata
            .topic(name)
            .expect("a committed topic is served"))
    }

    /// Checks a CreatePartitions entry.
    pub fn check_new_partitions(
        &self,
        name: &str,
        count: i32,
    ) -> Result<Arc<Topic>, MetadataError> {
        let topic = self
            .metadata
            .topic(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        let current = topic.partition_count;
        if count <= current {
            return Err(MetadataError::InvalidPartitions(format!(
                "topic currently has {current} partitions, which is higher than or equal to the requested {count}"
            )));
        }
        if count > MAX_PARTITIONS_PER_TOPIC {
            return Err(MetadataError::InvalidPartitions(format!(
                "number of partitions must be at most {MAX_PARTITIONS_PER_TOPIC}"
            )));
        }
        Ok(topic)
    }

    /// Grows a topic to `count` partitions, all or nothing, as [`Controller::create_topic`].
    pub fn create_partitions(&self, name: &str, count: i32) -> Result<(), MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        let topic = self.check_new_partitions(name, count)?;
        let range = (topic.partition_count, count);
        let rf = self
            .metadata
            .image()
            .topic(name)
            .and_then(|t| t.partitions.first())
            .map_or(1, |p| p.replicas.len() as i16);
        let records = self.place(name, range, rf)?;
        self.commit_with_logs(&topic.name, topic.id, range, &topic.config, &records)?;
        tracing::info!(topic = name, partitions = count, "created partitions");
        Ok(())
    }

    /// Replaces a topic's overrides: checks them, then commits the change, which every
    /// partition's log takes at once (no restart). With `validate_only`, only checks.
    pub fn set_topic_overrides(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        if self.metadata.topic(name).is_none() {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        }
        TopicConfig::with_overrides(&self.broker, &overrides)?;
        if validate_only {
            return Ok(());
        }
        self.commit(&[MetadataRecord::TopicConfigChanged {
            name: name.to_string(),
            configs: overrides,
        }])?;
        tracing::info!(topic = name, "changed topic config");
        Ok(())
    }

    /// Deletes a topic: the record is committed, then the publish removes the topic's logs.
    pub fn delete_topic(&self, name: &str) -> Result<(), MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        if self.metadata.topic(name).is_none() {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        }
        self.commit(&[MetadataRecord::TopicDeleted {
            name: name.to_string(),
        }])?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }
}

impl From<CommitError> for MetadataError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Refused(ApplyError::TopicExists(name)) => MetadataError::TopicExists(name),
            CommitError::Refused(ApplyError::UnknownTopic(name)) => {
                MetadataError::UnknownTopic(name)
            }
            CommitError::Refused(e) => {
                MetadataError::Damaged(format!("a change that does not apply: {e}"))
            }
            CommitError::Io(e) => MetadataError::Io(e),
            CommitError::NoController(why) => MetadataError::NotController(why),
        }
    }
}

impl From<crate::image::ApplyError> for MetadataError {
    fn from(e: crate::image::ApplyError) -> Self {
        MetadataError::Damaged(format!("metadata log: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    use crate::metadata::METADATA_DIR;

    fn broker(dir: &Path) -> BrokerConfig {
        BrokerConfig {
            log_dirs: dir.to_path_buf(),
            ..Default::default()
        }
    }

    /// Locks the data directory and opens the metadata and its controller, as the broker does.
    fn open(
        b: &BrokerConfig,
    ) -> Result<(Arc<Metadata>, Controller, Arc<ReplicaManager>), MetadataError> {
        let logs = Arc::new(LogManager::lock(&b.log_dirs, 1)?);
        let replicas = Arc::new(ReplicaManager::new(b.node_id, logs.clone()));
        let (meta, controller) = open_local(b, logs, replicas.clone(), Vec::new())?;
        Ok((meta, controller, replicas))
    }

    #[test]
    fn a_broker_registers_once_per_address_and_a_new_address_takes_the_next_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let registered = |meta: &Metadata| {
            let image = meta.image();
            let me = image.broker(b.node_id).unwrap();
            (me.broker_epoch, me.host.clone(), me.port, me.fenced)
        };
        {
            let (meta, c, _) = open(&b).unwrap();
            assert!(meta.image().broker(b.node_id).is_none());
            c.register_broker(b.node_id, "h1", 9092).unwrap();
            c.register_broker(b.node_id, "h1", 9092).unwrap();
            assert_eq!(registered(&meta), (1, "h1".into(), 9092, false));
        }
        let (meta, c, _) = open(&b).unwrap();
        assert_eq!(registered(&meta), (1, "h1".into(), 9092, false), "replayed");
        c.register_broker(b.node_id, "h1", 9092).unwrap();
        assert_eq!(
            registered(&meta),
            (1, "h1".into(), 9092, false),
            "no new record"
        );
        c.register_broker(b.node_id, "h2", 9093).unwrap();
        assert_eq!(registered(&meta), (2, "h2".into(), 9093, false));
    }

    #[test]
    fn topics_survive_restart_and_deleted_ones_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let (meta, m, replicas) = open(&b).unwrap();
        m.create_topic("a", 2, 1, BTreeMap::new()).unwrap();
        m.create_topic(
            "b",
            -1,
            -1,
            [("segment.bytes".to_string(), "100000".to_string())].into(),
        )
        .unwrap();
        m.create_partitions("a", 4).unwrap();
        m.delete_topic("b").unwrap();
        m.set_topic_overrides(
            "a",
            [("retention.ms".to_string(), "5000".to_string())].into(),
            false,
        )
        .unwrap();
        assert!(matches!(
            m.set_topic_overrides(
                "a",
                [("retention.mz".to_string(), "1".to_string())].into(),
                false
            ),
            Err(MetadataError::InvalidConfig(_))
        ));
        assert_eq!(
            replicas
                .partition("a", 3)
                .unwrap()
                .log()
                .config()
                .retention_ms,
            5000
        );
        assert!(matches!(
            m.create_topic("a", 1, 1, BTreeMap::new()),
            Err(MetadataError::TopicExists(_))
        ));
        let id = meta.topic("a").unwrap().id;
        drop((meta, m, replicas));
        let (meta, _controller, replicas) = open(&b).unwrap();
        let a = meta.topic("a").unwrap();
        assert_eq!((a.partition_count, a.id), (4, id));
        assert_eq!(a.config.retention_ms, 5000);
        assert_eq!(
            replicas
                .partition("a", 0)
                .unwrap()
                .log()
                .config()
                .retention_ms,
            5000
        );
        assert!(meta.topic("b").is_none());
        assert!(!dir.path().join("b-0").exists());
    }

    #[test]
    fn damage_before_the_last_record_stops_the_start_and_drops_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let (meta, m, replicas) = open(&b).unwrap();
        for name in ["a", "b", "c"] {
            m.create_topic(name, 1, 1, BTreeMap::new()).unwrap();
        }
        drop((meta, m, replicas));
        let path = dir.path().join(METADATA_DIR).join("metadata.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let first = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize + 8;
        bytes[first + 20] ^= 1; // inside record 2 of 3
        std::fs::write(&path, &bytes).unwrap();
        let e = open(&b).err().expect("the start stops").to_string();
        assert!(e.contains("damaged record at byte"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
        bytes[first + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(open(&b).unwrap().0.topics().len(), 3);
    }

    #[test]
    fn torn_last_record_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let (meta, m, replicas) = open(&b).unwrap();
        m.create_topic("a", 1, 1, BTreeMap::new()).unwrap();
        drop((meta, m, replicas));
        let path = dir.path().join(METADATA_DIR).join("metadata.log");
        let whole = std::fs::read(&path).unwrap();
        // A deletion whose frame was torn: the start cuts it and the topic stays.
        let (meta, m, replicas) = open(&b).unwrap();
        m.delete_topic("a").unwrap();
        drop((meta, m, replicas));
        let torn = std::fs::read(&path).unwrap();
        std::fs::write(&path, &torn[..torn.len() - 3]).unwrap();
        let (meta, m, replicas) = open(&b).unwrap();
        assert_eq!(meta.topics().len(), 1);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            whole,
            "the torn frame is cut"
        );
        m.create_topic("c", 1, 1, BTreeMap::new()).unwrap();
        drop((meta, m, replicas));
        assert_eq!(open(&b).unwrap().0.topics().len(), 2);
    }
}
