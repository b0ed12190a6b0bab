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
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use quipu_config::topic::{TopicConfig, TopicConfigError};
use quipu_config::BrokerConfig;
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

/// Largest partition count a topic may have; a bound on what one request can make the broker open.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;
const METADATA_DIR: &str = "__cluster_metadata";

pub struct Metadata {
    broker: BrokerConfig,
    data_dir: PathBuf,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// The open metadata log, locked only while a record is appended.
    log_file: Mutex<File>,
    /// Serializes topic changes, which check, make directories and then append; held across
    /// that slow work, so that producer-id allocation, which only appends, never waits on it.
    changes: Mutex<()>,
    /// Serializes writers of the log start offset checkpoint.
    checkpoint_lock: Mutex<()>,
    producer_ids: Mutex<ProducerIds>,
}

/// Where the log start offsets moved by retention and DeleteRecords are kept, as Kafka keeps them.
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";
/// Where each compacted partition's first dirty offset (where the cleaner resumes) is kept.
const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";
/// Where each partition's recovery point (all below it is on disk) is kept, as Kafka keeps it.
const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
/// Written last at a clean shutdown, removed at start: without it, logs are recovered.
pub const CLEAN_SHUTDOWN_MARKER: &str = ".kafka_cleanshutdown";

/// How the partitions opened at start are to be loaded.
enum Startup<'a> {
    /// After a clean shutdown, or a partition just created: trust the files.
    Clean,
    /// After a crash: re-read each log from its checkpointed recovery point (0 if none).
    Recover(&'a crate::checkpoint::Offsets),
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
    /// Opens the metadata log under the data directory and replays it, opening every partition.
    pub fn open(broker: &BrokerConfig) -> Result<Self, MetadataError> {
        let data_dir = broker.log_dirs.clone();
        std::fs::create_dir_all(data_dir.join(METADATA_DIR))?;
        let path = data_dir.join(METADATA_DIR).join("metadata.log");
        let records: Vec<MetadataRecord> = crate::metadata_log::replay(&path)?;
        let log_file = OpenOptions::new().create(true).append(true).open(&path)?;
        let metadata = Self {
            broker: broker.clone(),
            data_dir,
            topics: RwLock::new(BTreeMap::new()),
            log_file: Mutex::new(log_file),
            changes: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            producer_ids: Mutex::new(ProducerIds {
                next: 0,
                block_end: 0,
            }),
        };
        // Fold the records into the final image first, then open each partition once.
        let mut image: BTreeMap<String, (Uuid, i32, BTreeMap<String, String>)> = BTreeMap::new();
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
                    let mut ids = metadata.producer_ids.lock().expect("producer ids lock");
                    ids.next = ids.next.max(block_end);
                    ids.block_end = ids.next;
                }
            }
        }
        metadata.remove_orphan_dirs(&image);
        let marker = metadata.data_dir.join(CLEAN_SHUTDOWN_MARKER);
        let clean = marker.exists();
        let recovery_points =
            crate::checkpoint::read(&metadata.data_dir.join(RECOVERY_POINT_CHECKPOINT));
        let startup = if clean {
            Startup::Clean
        } else {
            Startup::Recover(&recovery_points)
        };
        if !clean && !image.is_empty() {
            tracing::warn!(data_dir = %metadata.data_dir.display(), "no clean shutdown marker: recovering logs from their recovery points");
        }
        let topics = metadata.open_topics(image, &startup)?;
        metadata.sync_recovered(&topics)?;
        // From now on a crash must recover: the marker goes before anything is written.
        if clean {
            std::fs::remove_file(&marker)?;
            std::fs::File::open(&metadata.data_dir)?.sync_all()?;
        }
        // Log start offsets moved inside a segment (DeleteRecords) come from the checkpoint.
        for ((topic, partition), offset) in
            crate::checkpoint::read(&metadata.data_dir.join(LOG_START_CHECKPOINT))
        {
            if let Some(p) = topics
                .get(&topic)
                .and_then(|t| t.partitions.get(partition as usize))
            {
                let mut log = p.log();
                let end = log.log_end_offset();
                if let Err(e) = log.advance_log_start_offset(offset.min(end), end) {
                    tracing::warn!(topic, partition, error = %e, "cannot restore the log start offset");
                }
            }
        }
        // Where each compacted log's uncleaned part starts.
        for ((topic, partition), offset) in
            crate::checkpoint::read(&metadata.data_dir.join(CLEANER_CHECKPOINT))
        {
            if let Some(p) = topics
                .get(&topic)
                .and_then(|t| t.partitions.get(partition as usize))
            {
                p.log().set_first_dirty_offset(offset);
            }
        }
        *metadata.topics.write().expect("metadata lock") = topics;
        Ok(metadata)
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Opens every partition of the image's topics, `num.recovery.threads.per.data.dir` at a
    /// time (recovery after a crash re-reads each log from its recovery point).
    fn open_topics(
        &self,
        image: BTreeMap<String, (Uuid, i32, BTreeMap<String, String>)>,
        startup: &Startup<'_>,
    ) -> Result<BTreeMap<String, Arc<Topic>>, MetadataError> {
        let mut work = Vec::new();
        let mut shells = Vec::new();
        for (name, (id, partitions, overrides)) in image {
            let config = TopicConfig::with_overrides(&self.broker, &overrides)?;
            let name: Arc<str> = name.into();
            for p in 0..partitions {
                work.push((name.clone(), id, p, config.clone()));
            }
            shells.push((name, id, partitions, overrides, config));
        }
        let threads = self.broker.num_recovery_threads_per_data_dir as usize;
        let mut opened = crate::parallel::map(work, threads, |(name, id, p, config)| {
            self.open_partition(&name, id, p, &config, startup)
        })
        .into_iter();
        let mut topics = BTreeMap::new();
        for (name, id, partitions, overrides, config) in shells {
            let partitions = opened
                .by_ref()
                .take(partitions as usize)
                .map(|p| p.map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?;
            let topic = Topic {
                name: name.clone(),
                id,
                overrides,
                config,
                partitions,
            };
            topics.insert(name.to_string(), Arc::new(topic));
        }
        Ok(topics)
    }

    /// Makes what recovery rewrote durable with one sync of the file system, then lets each
    /// recovered log count it as flushed (its recovery point moves to its end).
    fn sync_recovered(&self, topics: &BTreeMap<String, Arc<Topic>>) -> std::io::Result<()> {
        let recovered: Vec<&Arc<Partition>> = topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.log().sync_pending())
            .collect();
        if recovered.is_empty() {
            return Ok(());
        }
        sync_file_system(&self.data_dir)?;
        for p in recovered {
            p.log().mark_synced(now_ms());
        }
        Ok(())
    }

    /// Opens a partition of a live topic at start. Its directory must carry the topic's id; a
    /// directory with no marker (written by a version that created directories after the
    /// record) gets one, and a damaged marker stops the start rather than risk live data.
    fn open_partition(
        &self,
        name: &Arc<str>,
        id: Uuid,
        p: i32,
        config: &TopicConfig,
        startup: &Startup<'_>,
    ) -> Result<Partition, MetadataError> {
        let dir = self.partition_dir(name, p);
        let marker = dir.join(PARTITION_MARKER);
        match read_marker(&marker) {
            Ok(Some(found)) if found == id => {}
            Ok(Some(found)) => {
                return Err(MetadataError::Damaged(format!(
                    "{} names topic id {found}, but {name} is {id}: refusing to start rather than mix the two",
                    marker.display()
                )))
            }
            Ok(None) => {
                tracing::warn!(dir = %dir.display(), "partition directory without its topic id: writing it");
                std::fs::create_dir_all(&dir)?;
                write_synced(&marker, marker_text(id).as_bytes())?;
            }
            Err(e) => {
                return Err(MetadataError::Damaged(format!(
                    "{} cannot be read ({e}): refusing to start rather than risk the partition's data",
                    marker.display()
                )))
            }
        }
        let recovery_point = match startup {
            Startup::Clean => None,
            Startup::Recover(points) => {
                Some(points.get(&(name.to_string(), p)).copied().unwrap_or(0))
            }
        };
        Ok(Partition::open(
            name.clone(),
            p,
            &dir,
            config.clone(),
            recovery_point,
            now_ms(),
        )?)
    }

    /// Makes and opens the directory of a partition not yet recorded, marked with its topic id
    /// (synced). Whatever sits at that path belongs to no live partition and is removed first.
    fn open_partition_fresh(
        &self,
        name: &Arc<str>,
        id: Uuid,
        p: i32,
        config: &TopicConfig,
    ) -> Result<Partition, MetadataError> {
        let dir = self.partition_dir(name, p);
        if dir.exists() {
            tracing::warn!(dir = %dir.display(), "removing a directory left where a new partition goes");
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        // Made durable with the rest of the new partitions, by one sync of the file system.
        std::fs::write(dir.join(PARTITION_MARKER), marker_text(id).as_bytes())?;
        Ok(Partition::open(
            name.clone(),
            p,
            &dir,
            config.clone(),
            None,
            now_ms(),
        )?)
    }

    /// Opens partitions `from..to` of a topic about to be recorded; on any failure, removes the
    /// directories made so far and returns the error, so nothing of the change is left.
    fn open_new_partitions(
        &self,
        name: &Arc<str>,
        id: Uuid,
        (from, to): (i32, i32),
        config: &TopicConfig,
    ) -> Result<Vec<Arc<Partition>>, MetadataError> {
        let threads = self.broker.num_recovery_threads_per_data_dir as usize;
        let results = crate::parallel::map((from..to).collect(), threads, |p| {
            self.open_partition_fresh(name, id, p, config).map(Arc::new)
        });
        let opened = match results.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(opened) => opened,
            Err(e) => {
                self.remove_partition_dirs(name, id, from..to);
                return Err(e);
            }
        };
        // The new directories and markers are durable before the record that makes them live.
        if let Err(e) = sync_file_system(&self.data_dir) {
            drop(opened);
            self.remove_partition_dirs(name, id, from..to);
            return Err(e.into());
        }
        Ok(opened)
    }

    /// Renames partition directories away (so a name is free at once) and removes them. A
    /// failure is logged; the next start removes what is left.
    fn remove_partition_dirs(&self, name: &str, id: Uuid, partitions: impl Iterator<Item = i32>) {
        for p in partitions {
            let dir = self.partition_dir(name, p);
            if !dir.exists() {
                continue;
            }
            let gone = self
                .data_dir
                .join(format!("{name}-{p}.{}-delete", id.simple()));
            if let Err(e) =
                std::fs::rename(&dir, &gone).and_then(|_| std::fs::remove_dir_all(&gone))
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove partition directory");
            }
        }
    }

    /// Writes every partition's recovery point to the checkpoint.
    pub fn checkpoint_recovery_points(&self) -> std::io::Result<()> {
        self.checkpoint(RECOVERY_POINT_CHECKPOINT, |log| log.recovery_point())
    }

    /// Writes every partition's log start offset to the checkpoint.
    pub fn checkpoint_log_start_offsets(&self) -> std::io::Result<()> {
        self.checkpoint(LOG_START_CHECKPOINT, |log| log.log_start_offset())
    }

    /// Writes every partition's first dirty offset (where the cleaner resumes) to the checkpoint.
    pub fn checkpoint_cleaner_offsets(&self) -> std::io::Result<()> {
        self.checkpoint(CLEANER_CHECKPOINT, |log| log.first_dirty_offset())
    }

    /// Writes one offset a partition, taken from its log by `offset_of`, to a checkpoint file.
    fn checkpoint(
        &self,
        file: &str,
        offset_of: impl Fn(&crate::log::Log) -> i64,
    ) -> std::io::Result<()> {
        let _writer = self.checkpoint_lock.lock().expect("checkpoint lock");
        let mut offsets = crate::checkpoint::Offsets::new();
        for topic in self.topics() {
            for p in &topic.partitions {
                offsets.insert((topic.name.to_string(), p.index()), offset_of(&p.log()));
            }
        }
        crate::checkpoint::write(&self.data_dir.join(file), &offsets)
    }

    /// Finishes, at start, what a crash interrupted: directories renamed for deletion are
    /// removed, and so is every partition directory that no live partition owns (a topic or
    /// partitions whose record was never written, or a deletion whose record was). A directory
    /// belongs to a live partition when its name is `<topic>-<index>` of a live topic with more
    /// than `index` partitions and its marker, if readable, carries that topic's id; those are
    /// never touched here.
    fn remove_orphan_dirs(&self, image: &BTreeMap<String, (Uuid, i32, BTreeMap<String, String>)>) {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return;
        };
        let mut removed = 0usize;
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let orphan = if file_name.ends_with("-delete") {
                true
            } else if let Some((topic, p)) = partition_dir_name(&file_name) {
                match (image.get(topic), read_marker(&path.join(PARTITION_MARKER))) {
                    (Some((id, count, _)), Ok(Some(found))) => found != *id || p >= *count,
                    (Some((_, count, _)), _) => p >= *count,
                    (None, _) => true,
                }
            } else {
                false
            };
            if !orphan {
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "cannot remove a partition directory no live partition owns")
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                directories = removed,
                "removed partition directories left by an interrupted topic change"
            );
        }
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
            self.remove_partition_dirs(&name, id, 0..partitions);
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
            self.remove_partition_dirs(name, topic.id, current..count);
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
        self.remove_partition_dirs(name, topic.id, 0..topic.partitions.len() as i32);
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Clean shutdown: every log flushed and trimmed (`num.recovery.threads.per.data.dir` at a
    /// time), the checkpoints written, and last the clean
    /// shutdown marker, which tells the next start that no recovery is needed. Any failure leaves
    /// the marker out, so the next start recovers. Returns whether the shutdown was clean.
    pub fn close(&self) -> bool {
        let partitions: Vec<(Arc<str>, Arc<Partition>)> = self
            .topics()
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.clone())))
            .collect();
        let threads = self.broker.num_recovery_threads_per_data_dir as usize;
        let closed = crate::parallel::map(partitions.clone(), threads, |(topic, p)| {
            let result = p.log().close_unsynced();
            if let Err(e) = &result {
                tracing::error!(%topic, partition = p.index(), error = %e, "cannot close log");
            }
            result.is_ok()
        });
        let mut clean = closed.into_iter().all(|ok| ok);
        // One sync of the file system makes every log durable; only then do the checkpoints
        // say so.
        match sync_file_system(&self.data_dir) {
            Ok(()) => {
                for (_, p) in &partitions {
                    p.log().mark_synced(now_ms());
                }
            }
            Err(e) => {
                clean = false;
                tracing::error!(error = %e, "cannot sync the logs to disk");
            }
        }
        for (what, result) in [
            ("recovery points", self.checkpoint_recovery_points()),
            ("log start offsets", self.checkpoint_log_start_offsets()),
            ("cleaner offsets", self.checkpoint_cleaner_offsets()),
        ] {
            if let Err(e) = result {
                clean = false;
                tracing::error!(error = %e, "cannot checkpoint {what}");
            }
        }
        if clean {
            if let Err(e) = write_synced(&self.data_dir.join(CLEAN_SHUTDOWN_MARKER), b"") {
                clean = false;
                tracing::error!(error = %e, "cannot write the clean shutdown marker");
            }
        }
        clean
    }
}

/// Makes everything written to the file system that holds `dir` durable (syncfs(2)): one call
/// where thousands of partitions changed together, instead of several fsyncs each. It reports
/// a writeback error of any file on that file system since the last sync.
fn sync_file_system(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let handle = File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open for the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The file in each partition directory that names its topic id, as Kafka writes it.
const PARTITION_MARKER: &str = "partition.metadata";

fn marker_text(id: Uuid) -> String {
    format!("version: 0\ntopic_id: {id}\n")
}

/// The topic id a partition directory's marker names: `None` when there is no marker, an error
/// when it cannot be read or parsed.
fn read_marker(path: &Path) -> std::io::Result<Option<Uuid>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
        .map(Some)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no topic id"))
}

/// `<topic>-<index>` as a partition directory is named, when `name` is one.
fn partition_dir_name(name: &str) -> Option<(&str, i32)> {
    let (topic, index) = name.rsplit_once('-')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: i32 = index.parse().ok()?;
    validate_topic_name(topic).ok()?;
    Some((topic, index))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(dir: &Path) -> BrokerConfig {
        BrokerConfig {
            log_dirs: dir.to_path_buf(),
            ..Default::default()
        }
    }

    #[test]
    fn topics_survive_restart_and_deleted_ones_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let m = Metadata::open(&b).unwrap();
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
        let m = Metadata::open(&b).unwrap();
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
        let m = Metadata::open(&b).unwrap();
        for name in ["a", "b", "c"] {
            m.create_topic(name, 1, 1, BTreeMap::new()).unwrap();
        }
        drop(m);
        let path = dir.path().join(METADATA_DIR).join("metadata.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let first = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize + 8;
        bytes[first + 20] ^= 1; // inside record 2 of 3
        std::fs::write(&path, &bytes).unwrap();
        let e = Metadata::open(&b)
            .err()
            .expect("the start stops")
            .to_string();
        assert!(e.contains("damaged record at byte"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
        bytes[first + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Metadata::open(&b).unwrap().topics().len(), 3);
    }

    #[test]
    fn torn_last_record_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        Metadata::open(&b)
            .unwrap()
            .create_topic("a", 1, 1, BTreeMap::new())
            .unwrap();
        let path = dir.path().join(METADATA_DIR).join("metadata.log");
        let record = MetadataRecord::TopicDeleted { name: "a".into() };
        let torn = crate::metadata_log::frame(&record).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() - 3]).unwrap();
        let m = Metadata::open(&b).unwrap();
        assert_eq!(m.topics().len(), 1);
        m.create_topic("c", 1, 1, BTreeMap::new()).unwrap();
        drop(m);
        assert_eq!(Metadata::open(&b).unwrap().topics().len(), 2);
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
