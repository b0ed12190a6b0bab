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

mod partition_admin;

pub use partition_admin::{ElectionType, ReassignmentOutcome};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use quipu_config::topic::TopicConfig;
use quipu_config::BrokerConfig;
use quipu_storage::log_manager::LogManager;
use uuid::Uuid;

use crate::applier::Applier;
use crate::commit_log::{CommitError, MetadataLog};
use crate::image::{ApplyError, MetadataImage};
use crate::metadata::{validate_topic_name, Metadata, MetadataError, Topic};
use crate::metadata_log::record::{MetadataRecord, PartitionRecord};
use crate::publisher::{MetadataSubscriber, Publisher};
use crate::replica_manager::ReplicaManager;

/// Producer ids reserved in the metadata log at a time.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// Largest partition count a topic may have; a bound on what one request can make the broker open.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// The producer ids of the current block: `next` up to `block_end` (exclusive).
struct ProducerIds {
    next: i64,
    block_end: i64,
}

/// Where a new topic's (or new partitions') replicas go.
#[derive(Debug, Clone)]
pub enum Placement {
    /// `partitions` partitions of `replication_factor` replicas each, placed by the controller;
    /// -1 takes the broker's default.
    Auto {
        partitions: i32,
        replication_factor: i16,
    },
    /// The replicas of each partition in order, the first the preferred leader.
    Manual(Vec<Vec<i32>>),
}

impl Placement {
    pub fn auto(partitions: i32, replication_factor: i16) -> Self {
        Self::Auto {
            partitions,
            replication_factor,
        }
    }
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

/// The records registering broker `node_id` at `host:port` (unfenced) and the epoch they give
/// it; `None` when `image` has it so already. A new epoch each time it registers anew.
pub fn registration(
    image: &MetadataImage,
    node_id: i32,
    (host, port, rack): (&str, i32, Option<&str>),
) -> Option<(i64, Vec<MetadataRecord>)> {
    let current = image.broker(node_id);
    let same = |b: &crate::image::BrokerImage| {
        b.host == host && b.port == port && b.rack.as_deref() == rack && !b.fenced
    };
    if current.is_some_and(same) {
        return None;
    }
    Some(new_registration(image, node_id, (host, port, rack)))
}

/// The records registering broker `node_id` at `host:port` (unfenced) at its next broker
/// epoch, and that epoch: a broker process's registration with the active controller, always
/// a new epoch, so that the broker knows its image is caught up once it holds it.
pub fn new_registration(
    image: &MetadataImage,
    node_id: i32,
    (host, port, rack): (&str, i32, Option<&str>),
) -> (i64, Vec<MetadataRecord>) {
    let current = image.broker(node_id);
    let broker_epoch = current.map_or(1, |b| b.broker_epoch + 1);
    let records = vec![
        MetadataRecord::BrokerRegistered {
            node_id,
            broker_epoch,
            host: host.to_string(),
            port,
            rack: rack.map(str::to_string),
        },
        MetadataRecord::BrokerFencing {
            node_id,
            fenced: false,
        },
    ];
    (broker_epoch, records)
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
        let rack = self.broker.broker_rack.as_deref();
        let Some((broker_epoch, records)) = registration(&image, node_id, (host, port, rack))
        else {
            return Ok(());
        };
        self.commit(&records)?;
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
        placement: &Placement,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(i32, TopicConfig), MetadataError> {
        validate_topic_name(name)?;
        if self.metadata.topic(name).is_some() {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        let (partitions, replication_factor) = match placement {
            Placement::Auto {
                partitions,
                replication_factor,
            } => (*partitions, *replication_factor),
            Placement::Manual(assignment) => {
                self.check_assignment(assignment, None)?;
                let config = TopicConfig::with_overrides(&self.broker, overrides)?;
                return Ok((assignment.len() as i32, config));
            }
        };
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

    /// Checks a manual assignment as Kafka's controller does: each partition's replicas are
    /// registered brokers, none twice, all partitions with `rf` replicas (that of the first, or
    /// of the topic's existing partitions), and at least one unfenced.
    fn check_assignment(
        &self,
        assignment: &[Vec<i32>],
        rf: Option<usize>,
    ) -> Result<(), MetadataError> {
        let image = self.metadata.image();
        let invalid = |m: String| Err(MetadataError::InvalidReplicaAssignment(m));
        let Some(first) = assignment.first() else {
            return invalid("the manual partition assignment is empty".into());
        };
        let rf = rf.unwrap_or(first.len());
        for (p, replicas) in assignment.iter().enumerate() {
            if replicas.is_empty() {
                return invalid(
                    "The manual partition assignment includes an empty replica list.".into(),
                );
            }
            if replicas.len() != rf {
                return invalid(format!("The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {rf} replica(s).", replicas.len()));
            }
            let mut seen = std::collections::HashSet::new();
            for &b in replicas {
                if !seen.insert(b) {
                    return invalid(format!(
                        "The manual partition assignment includes the broker {b} more than once."
                    ));
                }
                if image.broker(b).is_none() {
                    return invalid(format!("The manual partition assignment includes broker {b}, but no such broker is registered."));
                }
            }
            if replicas
                .iter()
                .all(|b| image.broker(*b).is_some_and(|r| r.fenced))
            {
                return invalid(format!("All brokers specified in the manual partition assignment for partition {p} are fenced or in controlled shutdown."));
            }
        }
        Ok(())
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
    /// epochs, all in sync. Replica lists rotate over the brokers from a random start, so leaders
    /// (the first replica) spread evenly.
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
                // Every replica of a new partition holds all of it (nothing): all are in sync.
                record.isr = replicas.clone();
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
        placement: &Placement,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        let (partitions, config) = self.check_new_topic(name, placement, &overrides)?;
        let id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::TopicCreated {
            name: name.to_string(),
            topic_id: id,
            configs: overrides,
        }];
        records.extend(match placement {
            Placement::Auto {
                replication_factor: -1,
                ..
            } => self.place(
                name,
                (0, partitions),
                self.broker.default_replication_factor,
            )?,
            Placement::Auto {
                replication_factor, ..
            } => self.place(name, (0, partitions), *replication_factor)?,
            Placement::Manual(assignment) => self.assigned(name, 0, assignment),
        });
        self.commit_with_logs(&name.into(), id, (0, partitions), &config, &records)?;
        tracing::info!(topic = %name, partitions, %id, "created topic");
        Ok(self
            .metadata
            .topic(name)
            .expect("a committed topic is served"))
    }

    /// The records placing partitions from `from` on as `assignment` says (checked), each led by
    /// its first unfenced replica, with the unfenced replicas in sync.
    fn assigned(&self, topic: &str, from: i32, assignment: &[Vec<i32>]) -> Vec<MetadataRecord> {
        let image = self.metadata.image();
        let unfenced = |b: &i32| image.broker(*b).is_some_and(|r| !r.fenced);
        assignment
            .iter()
            .enumerate()
            .map(|(i, replicas)| {
                let leader = *replicas.iter().find(|b| unfenced(b)).expect("checked");
                let mut record = PartitionRecord::on_one_node(topic, from + i as i32, leader);
                record.isr = replicas.iter().copied().filter(unfenced).collect();
                record.replicas = replicas.clone();
                MetadataRecord::Partition(record)
            })
            .collect()
    }

    /// Checks a CreatePartitions entry.
    pub fn check_new_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<&[Vec<i32>]>,
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
        if let Some(a) = assignment {
            let added = count - current;
            if a.len() as i32 != added {
                return Err(MetadataError::InvalidReplicaAssignment(format!(
                    "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
                    a.len()
                )));
            }
            self.check_assignment(a, Some(self.replication_factor_of(name) as usize))?;
        }
        Ok(topic)
    }

    /// Grows a topic to `count` partitions, all or nothing, as [`Controller::create_topic`]: the
    /// new ones placed by the controller, or as `assignment` says (one entry per new partition,
    /// with as many replicas as the topic's partitions have).
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<&[Vec<i32>]>,
    ) -> Result<(), MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        let topic = self.check_new_partitions(name, count, assignment)?;
        let range = (topic.partition_count, count);
        let records = match assignment {
            Some(a) => self.assigned(name, range.0, a),
            None => self.place(name, range, self.replication_factor_of(name))?,
        };
        self.commit_with_logs(&topic.name, topic.id, range, &topic.config, &records)?;
        tracing::info!(topic = name, partitions = count, "created partitions");
        Ok(())
    }

    /// How many replicas the partitions of topic `name` have.
    fn replication_factor_of(&self, name: &str) -> i16 {
        self.metadata
            .image()
            .topic(name)
            .and_then(|t| t.partitions.first())
            .map_or(1, |p| p.replicas.len() as i16)
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

    fn broker(dir: &std::path::Path) -> BrokerConfig {
        BrokerConfig {
            log_dirs: dir.to_path_buf(),
            ..Default::default()
        }
    }

    /// A node of a quorum of one, opened as the broker opens it, on a runtime of its own.
    struct Node {
        meta: Arc<Metadata>,
        controller: Controller,
        replicas: Arc<ReplicaManager>,
        quorum: crate::quorum::Quorum,
        runtime: tokio::runtime::Runtime,
    }

    impl Drop for Node {
        fn drop(&mut self) {
            let _ = self.runtime.block_on(self.quorum.raft.shutdown());
        }
    }

    /// Locks the data directory and opens the metadata and its controller, as the broker does.
    fn open(b: &BrokerConfig) -> Result<Node, MetadataError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let entered = runtime.enter();
        let logs = Arc::new(LogManager::lock(&b.log_dirs, 1)?);
        let replicas = Arc::new(ReplicaManager::new(b.node_id, logs.clone()));
        let (meta, controller, quorum) =
            crate::quorum::open(b, "test", (logs, replicas.clone()), Vec::new())?;
        drop(entered);
        Ok(Node {
            meta,
            controller,
            replicas,
            quorum,
            runtime,
        })
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
            let node = open(&b).unwrap();
            let (meta, c) = (&node.meta, &node.controller);
            assert!(meta.image().broker(b.node_id).is_none());
            c.register_broker(b.node_id, "h1", 9092).unwrap();
            c.register_broker(b.node_id, "h1", 9092).unwrap();
            assert_eq!(registered(meta), (1, "h1".into(), 9092, false));
        }
        let node = open(&b).unwrap();
        let (meta, c) = (&node.meta, &node.controller);
        assert_eq!(registered(meta), (1, "h1".into(), 9092, false), "replayed");
        c.register_broker(b.node_id, "h1", 9092).unwrap();
        assert_eq!(
            registered(meta),
            (1, "h1".into(), 9092, false),
            "no new record"
        );
        c.register_broker(b.node_id, "h2", 9093).unwrap();
        assert_eq!(registered(meta), (2, "h2".into(), 9093, false));
    }

    #[test]
    fn topics_survive_restart_and_deleted_ones_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let node = open(&b).unwrap();
        let (meta, m, replicas) = (&node.meta, &node.controller, &node.replicas);
        m.create_topic("a", &Placement::auto(2, 1), BTreeMap::new())
            .unwrap();
        m.create_topic(
            "b",
            &Placement::auto(-1, -1),
            [("segment.bytes".to_string(), "100000".to_string())].into(),
        )
        .unwrap();
        m.create_partitions("a", 4, None).unwrap();
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
            m.create_topic("a", &Placement::auto(1, 1), BTreeMap::new()),
            Err(MetadataError::TopicExists(_))
        ));
        let id = meta.topic("a").unwrap().id;
        drop(node);
        let node = open(&b).unwrap();
        let (meta, replicas) = (&node.meta, &node.replicas);
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
}
