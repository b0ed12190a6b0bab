//! The broker's view of the cluster metadata: the latest image the metadata log's records give,
//! and the topics served from it, each with its partitions.
//!
//! At start the records are replayed into the image by [`MetadataImage::apply`] and the
//! LogManager opens every live partition's log. At runtime each committed batch is applied the
//! same way ([`Metadata::swap_image`]), and the publisher hands what it changed to the
//! replica manager: new partitions are served from their logs, a config change reaches every
//! partition's log, a deleted topic's logs are removed. Handlers read [`Metadata::topic`] and
//! friends, and find partitions through the replica manager.
//!
//! Invariants: the served topics are what the image says (names, ids, partition counts,
//! overrides); an image, once published, never changes under its readers; each partition
//! directory carries its topic id, so a directory left from a deleted topic of the same name is
//! never mistaken for the new one's (the LogManager's marker check).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use quipu_config::topic::{TopicConfig, TopicConfigError};
use quipu_config::BrokerConfig;
use quipu_storage::log_manager::{LiveTopic, LogManager, LogManagerError};
use uuid::Uuid;

use crate::image::{Change, MetadataImage, TopicImage};
use crate::metadata_log::record::MetadataRecord;
use crate::metadata_log::MetadataLogError;
use crate::publisher::MetadataSubscriber;
use crate::replica_manager::ReplicaManager;

/// A topic as the broker serves it: the image's topic with its effective config. Its
/// partitions are the replica manager's.
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub overrides: BTreeMap<String, String>,
    pub config: TopicConfig,
    pub partition_count: i32,
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
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(#[from] TopicConfigError),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Log(#[from] MetadataLogError),
    #[error("{0}")]
    Damaged(String),
    /// No active controller took the change in time.
    #[error("no active controller: {0}")]
    NotController(String),
}

impl From<LogManagerError> for MetadataError {
    fn from(e: LogManagerError) -> Self {
        match e {
            LogManagerError::Io(e) => MetadataError::Io(e),
            LogManagerError::Damaged(why) => MetadataError::Damaged(why),
        }
    }
}

/// Where the metadata log lives under the data directory.
pub const METADATA_DIR: &str = "__cluster_metadata";

/// The internal topic of committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The internal topic of transaction state (Quipu has no transactions yet).
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Topics only the broker writes and clients may not produce to, as Kafka's `Topic.isInternal`.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TRANSACTION_STATE_TOPIC
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
    if !quipu_storage::log_manager::is_topic_name(name) {
        return err("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

pub struct Metadata {
    broker: BrokerConfig,
    /// Where the partitions this broker hosts are served.
    replicas: Arc<ReplicaManager>,
    image: RwLock<Arc<MetadataImage>>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
}

impl Metadata {
    /// Replays `records` into the image, then has the LogManager open the log of every live
    /// partition with a replica on this broker; the publisher's first batch serves them.
    pub fn open(
        broker: &BrokerConfig,
        logs: Arc<LogManager>,
        replicas: Arc<ReplicaManager>,
        records: &[MetadataRecord],
    ) -> Result<Self, MetadataError> {
        let mut image = MetadataImage::default();
        for record in records {
            image.apply(record)?;
        }
        let live = image
            .topics()
            .map(|t| {
                Ok(LiveTopic {
                    name: t.name.clone(),
                    id: t.id,
                    partitions: (0..t.partitions.len() as i32)
                        .filter(|p| t.partitions[*p as usize].replicas.contains(&broker.node_id))
                        .collect(),
                    config: TopicConfig::with_overrides(broker, &t.configs)?,
                })
            })
            .collect::<Result<Vec<_>, MetadataError>>()?;
        logs.load(&live, crate::clock::now_ms())?;
        Ok(Self {
            broker: broker.clone(),
            replicas,
            image: RwLock::new(Arc::new(image)),
            topics: RwLock::new(BTreeMap::new()),
        })
    }

    /// The latest image; it never changes under its holder.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().expect("metadata image lock").clone()
    }

    /// Publishes the image a committed batch gave (the caller applied the batch to a copy of
    /// the current one, in log order).
    pub fn swap_image(&self, next: Arc<MetadataImage>) {
        *self.image.write().expect("metadata image lock") = next;
    }

    /// Serves `t` with `config`, its partitions through the replica manager.
    fn serve_topic(&self, t: &TopicImage, config: TopicConfig) {
        let replaced = self.topic(&t.name).is_some_and(|c| c.id != t.id);
        self.replicas.apply_topic(t, &config, replaced);
        let topic = Topic {
            name: t.name.clone(),
            id: t.id,
            overrides: t.configs.clone(),
            config,
            partition_count: t.partitions.len() as i32,
        };
        self.topics
            .write()
            .expect("metadata lock")
            .insert(t.name.to_string(), Arc::new(topic));
    }

    /// Stops serving a deleted topic; the replica manager removes its partitions and logs.
    fn unserve(&self, gone: &TopicImage) {
        let served = self
            .topics
            .write()
            .expect("metadata lock")
            .remove(&*gone.name);
        drop(served);
        self.replicas.remove_topic(gone);
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
}

impl MetadataSubscriber for Metadata {
    /// Acts on what a committed batch changed: topics whose partitions or config changed are
    /// served anew from the image, deleted topics stop being served and their logs go.
    fn on_metadata(&self, image: &MetadataImage, changes: &[Change]) {
        let mut touched: Vec<&str> = Vec::new();
        for change in changes {
            match change {
                Change::TopicCreated(name) | Change::ConfigChanged(name) => touched.push(name),
                Change::Partition { topic, .. } => touched.push(topic),
                Change::TopicDeleted(gone) => self.unserve(gone),
                Change::ProducerIds | Change::Broker(_) => {}
            }
        }
        touched.dedup();
        for name in touched {
            let Some(t) = image.topic(name) else {
                continue; // deleted later in the same batch
            };
            match TopicConfig::with_overrides(&self.broker, &t.configs) {
                Ok(config) => self.serve_topic(t, config),
                // The controller checked the overrides before committing them.
                Err(e) => {
                    tracing::error!(topic = name, error = %e, "committed topic config does not apply")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
