//! The cluster metadata: topics, their partitions and settings, kept as an append-only log.
//!
//! Every change is a [`MetadataRecord`] appended (and fsynced) to `<data>/__cluster_metadata/
//! metadata.log` before it takes effect; the in-memory image is rebuilt by replaying that file at
//! start. Records are framed by `metadata_log` (length, CRC, version): a torn tail is cut, damage
//! before the end stops the start. This is the local form of the metadata log
//! that DESIGN.md foresees; the Raft-replicated one keeps the same records.
//!
//! Invariants: a topic's name and id are unique; partitions only grow; each partition directory
//! carries its topic id (`partition.metadata`), so a directory left from a deleted topic of the
//! same name is never mistaken for the new one's.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::sync::{Arc, Mutex, RwLock};

use quipu_config::topic::{TopicConfig, TopicConfigError};
use quipu_config::BrokerConfig;
use quipu_storage::log_manager::{LiveTopic, LogManager, LogManagerError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::partition::Partition;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    TopicCreated {
        name: String,
        topic_id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
    },
    PartitionsCreated {
        name: String,
        partitions: i32,
    },
    TopicDeleted {
        name: String,
    },
    /// The topic's whole set of overrides after a change (AlterConfigs, IncrementalAlterConfigs).
    TopicConfigChanged {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `block_end` are taken (Kafka's ProducerIdsRecord): ids are handed out
    /// from a block reserved here before any of it is used, so none is reused after a restart.
    ProducerIdsAllocated {
        block_end: i64,
    },
}

/// Producer ids reserved in the metadata log at a time.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// The producer ids of the current block: `next` up to `block_end` (exclusive).
struct ProducerIds {
    next: i64,
    block_end: i64,
}

pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub overrides: BTreeMap<String, String>,
    pub config: TopicConfig,
    pub partitions: Vec<Arc<Partition>>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidConfig(#[from] TopicConfigError),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Log(#[from] crate::metadata_log::MetadataLogError),
    #[error("{0}")]
    Damaged(String),
}

/// A live topic as the records leave it: its id, partition count and overrides.
type TopicImage = (Uuid, i32, BTreeMap<String, String>);

impl From<LogManagerError> for MetadataError {
    fn from(e: LogManagerError) -> Self {
        match e {
            LogManagerError::Io(e) => MetadataError::Io(e),
            LogManagerError::Damaged(why) => MetadataError::Damaged(why),
        }
    }
}

/// Largest partition count a topic may have; a bound on what one request can make the broker open.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;
const METADATA_DIR: &str = "__cluster_metadata";

pub struct Metadata {
    broker: BrokerConfig,
    /// The logs of the topics' partitions: made, opened and removed as topics change.
    logs: Arc<LogManager>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// The open metadata log, locked only while a record is appended.
    log_file: Mutex<File>,
    /// Serializes topic changes, which check, make directories and then append; held across
    /// that slow work, so that producer-id allocation, which only appends, never waits on it.
    changes: Mutex<()>,
    producer_ids: Mutex<ProducerIds>,
}

/// Topics only the broker writes and clients may not produce to, as Kafka's `Topic.isInternal`.
pub fn is_internal(topic: &str) -> bool {
    topic == crate::group::offsets_topic::TOPIC || topic == "__transaction_state"
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let err = |why: &str| {
        Err(MetadataError::InvalidTopic(format!(
            "topic name '{name}' is invalid: {why}"
        )))
    };
    if name.is_empty() {
        return err("it is empty");
    }
    if name == "." || name == ".." {
        return err("'.' and '..' are not allowed");
    }
    if name.len() > 249 {
        return err("it is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return err("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

fn now_ms() -> i64 {
    crate::clock::now_ms()
}

impl Metadata {
    /// Opens the metadata log under the data directory and replays it, then has the LogManager
    /// open the log of every live partition.
    pub fn open(broker: &BrokerConfig, logs: Arc<LogManager>) -> Result<Self, MetadataError> {
        let dir = broker.log_dirs.join(METADATA_DIR);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("metadata.log");
        let records: Vec<MetadataRecord> = crate::metadata_log::replay(&path)?;
        let log_file = OpenOptions::new().create(true).append(true).open(&path)?;
        let metadata = Self {
            broker: broker.clone(),
            logs,
            topics: RwLock::new(BTreeMap::new()),
            log_file: Mutex::new(log_file),
            changes: Mutex::new(()),
            producer_ids: Mutex::new(ProducerIds {
                next: 0,
                block_end: 0,
            }),
        };
        // Fold the records into the final image first, then open each partition once.
        let image = metadata.fold(records);
        let live = image
            .into_iter()
            .map(|(name, (id, partitions, overrides))| {
                let config = TopicConfig::with_overrides(&metadata.broker, &overrides)?;
                Ok((
                    LiveTopic {
                        name: name.into(),
                        id,
                        partitions,
                        config,
                    },
                    overrides,
                ))
            })
            .collect::<Result<Vec<_>, MetadataError>>()?;
        let (live, overrides): (Vec<LiveTopic>, Vec<_>) = live.into_iter().unzip();
        metadata.logs.load(&live, now_ms())?;
        let topics = live
            .into_iter()
            .zip(overrides)
            .map(|(t, overrides)| metadata.serve_topic(t, overrides))
            .collect();
        *metadata.topics.write().expect("metadata lock") = topics;
        Ok(metadata)
    }

    /// The topics the records leave live (name -> id, partitions, overrides); producer-id
    /// blocks are taken as they go.
    fn fold(&self, records: Vec<MetadataRecord>) -> BTreeMap<String, TopicImage> {
        let mut image: BTreeMap<String, TopicImage> = BTreeMap::new();
        for record in records {
            match record {
                MetadataRecord::TopicCreated {
                    name,
                    topic_id,
                    partitions,
                    configs,
                } => {
                    image.insert(name, (topic_id, partitions, configs));
                }
                MetadataRecord::PartitionsCreated { name, partitions } => {
                    if let Some(t) = image.get_mut(&name) {
                        t.1 = partitions;
                    }
                }
                MetadataRecord::TopicDeleted { name } => {
                    image.remove(&name);
                }
                MetadataRecord::TopicConfigChanged { name, configs } => {
                    if let Some(t) = image.get_mut(&name) {
                        t.2 = configs;
                    }
                }
                MetadataRecord::ProducerIdsAllocated { block_end } => {
                    // Ids of a block reserved before a restart are never handed out again.
                    let mut ids = self.producer_ids.lock().expect("producer ids lock");
                    ids.next = ids.next.max(block_end);
                    ids.block_end = ids.next;
                }
            }
        }
        image
    }

    /// A live topic whose logs the LogManager opened, served by partitions.
    fn serve_topic(
        &self,
        t: LiveTopic,
        overrides: BTreeMap<String, String>,
    ) -> (String, Arc<Topic>) {
        let partitions = (0..t.partitions)
            .map(|p| {
                let log = self
                    .logs
                    .log(&t.name, p)
                    .expect("a live partition's log is open");
                Arc::new(Partition::new(t.name.clone(), p, log))
            })
            .collect();
        let topic = Topic {
            name: t.name.clone(),
            id: t.id,
            overrides,
            config: t.config,
            partitions,
        };
        (t.name.to_string(), Arc::new(topic))
    }

    /// Opens partitions `from..to` of a topic about to be recorded, all or nothing (see
    /// [`LogManager::create_logs`]).
    fn open_new_partitions(
        &self,
        name: &Arc<str>,
        id: Uuid,
        (from, to): (i32, i32),
        config: &TopicConfig,
    ) -> Result<Vec<Arc<Partition>>, MetadataError> {
        let logs = self
            .logs
            .create_logs(name, id, (from, to), config, now_ms())?;
        Ok((from..to)
            .zip(logs)
            .map(|(p, log)| Arc::new(Partition::new(name.clone(), p, log)))
            .collect())
    }

    fn append_record(file: &mut File, record: &MetadataRecord) -> Result<(), MetadataError> {
        crate::metadata_log::append(file, record)?;
        Ok(())
    }

    /// Appends (and syncs) one record; the log's lock is held only for that.
    fn append(&self, record: &MetadataRecord) -> Result<(), MetadataError> {
        Self::append_record(
            &mut self.log_file.lock().expect("metadata log lock"),
            record,
        )
    }

    /// A producer id never handed out before, reserving a new block in the metadata log when the
    /// current one is used up.
    pub fn allocate_producer_id(&self) -> Result<i64, MetadataError> {
        let mut ids = self.producer_ids.lock().expect("producer ids lock");
        if ids.next >= ids.block_end {
            let block_end = ids.next + PRODUCER_ID_BLOCK_SIZE;
            let mut file = self.log_file.lock().expect("metadata log lock");
            Self::append_record(
                &mut file,
                &MetadataRecord::ProducerIdsAllocated { block_end },
            )?;
            ids.block_end = block_end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .expect("metadata lock")
            .get(name)
            .cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .expect("metadata lock")
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .expect("metadata lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn broker_config(&self) -> &BrokerConfig {
        &self.broker
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
        if self.topic(name).is_some() {
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
        if rf != 1 {
            return Err(MetadataError::InvalidReplicationFactor(format!(
                "unable to replicate the partition {rf} time(s): the target replication factor of {rf} cannot be reached because only 1 broker(s) are registered"
            )));
        }
        let config = TopicConfig::with_overrides(&self.broker, overrides)?;
        Ok((partitions, config))
    }

    /// Creates a topic, all or nothing: its partition directories are made and opened first,
    /// then the record that makes the topic live is written; if either fails, the directories
    /// are removed and the topic does not exist (a crash in between leaves directories that the
    /// next start removes).
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
        let id = Uuid::new_v4();
        let name: Arc<str> = name.into();
        let opened = self.open_new_partitions(&name, id, (0, partitions), &config)?;
        let record = MetadataRecord::TopicCreated {
            name: name.to_string(),
            topic_id: id,
            partitions,
            configs: overrides.clone(),
        };
        if let Err(e) = self.append(&record) {
            drop(opened);
            self.logs.remove_logs(&name, id, 0..partitions);
            return Err(e);
        }
        let topic = Arc::new(Topic {
            name: name.clone(),
            id,
            overrides,
            config,
            partitions: opened,
        });
        self.topics
            .write()
            .expect("metadata lock")
            .insert(name.to_string(), topic.clone());
        tracing::info!(topic = %name, partitions, %id, "created topic");
        Ok(topic)
    }

    /// Checks a CreatePartitions entry.
    pub fn check_new_partitions(
        &self,
        name: &str,
        count: i32,
    ) -> Result<Arc<Topic>, MetadataError> {
        let topic = self
            .topic(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        let current = topic.partitions.len() as i32;
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

    /// Grows a topic to `count` partitions, all or nothing, as [`Metadata::create_topic`]:
    /// the new partitions are opened before the record that makes them live.
    pub fn create_partitions(&self, name: &str, count: i32) -> Result<(), MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        let topic = self.check_new_partitions(name, count)?;
        let current = topic.partitions.len() as i32;
        let added =
            self.open_new_partitions(&topic.name, topic.id, (current, count), &topic.config)?;
        let record = MetadataRecord::PartitionsCreated {
            name: name.to_string(),
            partitions: count,
        };
        if let Err(e) = self.append(&record) {
            drop(added);
            self.logs.remove_logs(name, topic.id, current..count);
            return Err(e);
        }
        let mut partitions = topic.partitions.clone();
        partitions.extend(added);
        let grown = Topic {
            name: topic.name.clone(),
            id: topic.id,
            overrides: topic.overrides.clone(),
            config: topic.config.clone(),
            partitions,
        };
        self.topics
            .write()
            .expect("metadata lock")
            .insert(name.to_string(), Arc::new(grown));
        tracing::info!(topic = name, partitions = count, "created partitions");
        Ok(())
    }

    /// Replaces a topic's overrides: checks them, records the change, then applies it to every
    /// partition's log at once (no restart). With `validate_only`, only checks.
    pub fn set_topic_overrides(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        let topic = self
            .topic(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        let config = TopicConfig::with_overrides(&self.broker, &overrides)?;
        if validate_only {
            return Ok(());
        }
        self.append(&MetadataRecord::TopicConfigChanged {
            name: name.to_string(),
            configs: overrides.clone(),
        })?;
        for p in &topic.partitions {
            p.log().set_config(config.clone());
        }
        let changed = Topic {
            name: topic.name.clone(),
            id: topic.id,
            overrides,
            config,
            partitions: topic.partitions.clone(),
        };
        self.topics
            .write()
            .expect("metadata lock")
            .insert(name.to_string(), Arc::new(changed));
        tracing::info!(topic = name, "changed topic config");
        Ok(())
    }

    /// Deletes a topic: records it, forgets it, then renames its directories away and removes
    /// them (resumed at the next start if interrupted). Readers still holding slices of its segments keep their mappings (unlink is safe).
    pub fn delete_topic(&self, name: &str) -> Result<(), MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        let topic = self
            .topic(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        self.append(&MetadataRecord::TopicDeleted {
            name: name.to_string(),
        })?;
        self.topics.write().expect("metadata lock").remove(name);
        // A crash from here on leaves directories of a topic that is not live: the next start
        // removes them.
        self.logs
            .remove_logs(name, topic.id, 0..topic.partitions.len() as i32);
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// The LogManager holding the partitions' logs.
    pub fn logs(&self) -> &LogManager {
        &self.logs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;
    use std::path::Path;

    fn broker(dir: &Path) -> BrokerConfig {
        BrokerConfig {
            log_dirs: dir.to_path_buf(),
            ..Default::default()
        }
    }

    /// Locks the data directory and opens the metadata, as the broker does.
    fn open(b: &BrokerConfig) -> Result<Metadata, MetadataError> {
        let logs = LogManager::lock(&b.log_dirs, 1)?;
        Metadata::open(b, Arc::new(logs))
    }

    #[test]
    fn topics_survive_restart_and_deleted_ones_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let m = open(&b).unwrap();
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
            m.topic("a").unwrap().partitions[3]
                .log()
                .config()
                .retention_ms,
            5000
        );
        assert!(matches!(
            m.create_topic("a", 1, 1, BTreeMap::new()),
            Err(MetadataError::TopicExists(_))
        ));
        let id = m.topic("a").unwrap().id;
        drop(m);
        let m = open(&b).unwrap();
        let a = m.topic("a").unwrap();
        assert_eq!((a.partitions.len(), a.id), (4, id));
        assert_eq!(a.config.retention_ms, 5000);
        assert_eq!(a.partitions[0].log().config().retention_ms, 5000);
        assert!(m.topic("b").is_none());
        assert!(!dir.path().join("b-0").exists());
    }

    #[test]
    fn damage_before_the_last_record_stops_the_start_and_drops_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let m = open(&b).unwrap();
        for name in ["a", "b", "c"] {
            m.create_topic(name, 1, 1, BTreeMap::new()).unwrap();
        }
        drop(m);
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
        assert_eq!(open(&b).unwrap().topics().len(), 3);
    }

    #[test]
    fn torn_last_record_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        open(&b)
            .unwrap()
            .create_topic("a", 1, 1, BTreeMap::new())
            .unwrap();
        let path = dir.path().join(METADATA_DIR).join("metadata.log");
        let record = MetadataRecord::TopicDeleted { name: "a".into() };
        let torn = crate::metadata_log::frame(&record).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() - 3]).unwrap();
        let m = open(&b).unwrap();
        assert_eq!(m.topics().len(), 1);
        m.create_topic("c", 1, 1, BTreeMap::new()).unwrap();
        drop(m);
        assert_eq!(open(&b).unwrap().topics().len(), 2);
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
