//! The metadata image: what the metadata log's records add up to (topics, their partitions with
//! replicas and leaders, config overrides, the producer ids taken).
//!
//! Every node derives its image the same way: [`MetadataImage::apply`] is the one place a record
//! changes it, used when the log is replayed at start and when a committed record arrives at
//! runtime. Readers share published images as `Arc<MetadataImage>` and never see one change;
//! a writer applies records to its own copy and publishes the result.
//!
//! Invariants: topic names and ids are unique, and the id index names exactly the live topics; a
//! topic's partitions are numbered `0..n` with no gap and only grow; a partition's change comes
//! at a higher partition epoch and never moves its leader epoch back; a record that does not fit
//! the image is refused whole and changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::metadata_log::record::{MetadataRecord, PartitionRecord};

#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    topics: BTreeMap<String, Arc<TopicImage>>,
    /// The live topics' names by id: `topics` indexed the other way, kept with it.
    names_by_id: BTreeMap<Uuid, String>,
    /// Registered brokers by id.
    brokers: BTreeMap<i32, BrokerImage>,
    /// Producer ids below this are taken.
    producer_ids_end: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: Arc<str>,
    pub id: Uuid,
    /// The topic's config overrides, as set (the broker's defaults fill the rest).
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionImage>,
}

/// A registered broker: how clients reach it, its registration's epoch, and whether it is
/// fenced (a fenced broker leads nothing and is not listed to clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerImage {
    pub node_id: i32,
    pub broker_epoch: i64,
    pub host: String,
    pub port: i32,
    /// `broker.rack`, if the broker has one.
    pub rack: Option<String>,
    pub fenced: bool,
}

/// Where a partition's replicas are and which one leads, as Kafka's metadata says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// A reassignment in progress (both empty otherwise): `replicas` holds both sets.
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

impl PartitionImage {
    /// Whether a reassignment is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }
}

/// What one record changed, for those that act on changes (the LogManager, the partitions,
/// the group coordinator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    TopicCreated(String),
    /// A partition was added (`created`) or its placement or leadership changed.
    Partition {
        topic: String,
        partition: i32,
        created: bool,
    },
    /// The topic as it was when it was deleted.
    TopicDeleted(Arc<TopicImage>),
    ConfigChanged(String),
    ProducerIds,
    /// A broker registered, or was fenced or unfenced.
    Broker(i32),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ApplyError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic id {0} is taken")]
    TopicIdTaken(Uuid),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("partition {partition} of '{topic}' would leave a gap after {count} partitions")]
    PartitionGap {
        topic: String,
        partition: i32,
        count: usize,
    },
    #[error("broker {0} is not registered")]
    UnknownBroker(i32),
    #[error("broker {node_id} registers at epoch {epoch}, not above its epoch {current}")]
    StaleBrokerEpoch {
        node_id: i32,
        epoch: i64,
        current: i64,
    },
    #[error("producer id block end {0} is not above the ids already taken")]
    ProducerIdsBack(i64),
    #[error("partition {partition} of '{topic}' changes at partition epoch {epoch}, not above its epoch {current}, or moves its leader epoch back")]
    StalePartitionEpoch {
        topic: String,
        partition: i32,
        epoch: i32,
        current: i32,
    },
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicImage>> {
        self.topics.get(self.names_by_id.get(&id)?)
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicImage>> {
        self.topics.values()
    }

    pub fn producer_ids_end(&self) -> i64 {
        self.producer_ids_end
    }

    pub fn broker(&self, node_id: i32) -> Option<&BrokerImage> {
        self.brokers.get(&node_id)
    }

    /// Every registered broker, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values()
    }

    /// Applies one record, or refuses it and changes nothing.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<Change, ApplyError> {
        match record {
            MetadataRecord::TopicCreated {
                name,
                topic_id,
                configs,
            } => self.create_topic(name, *topic_id, configs),
            MetadataRecord::Partition(p) => self.set_partition(p),
            MetadataRecord::TopicDeleted { name } => {
                let gone = self
                    .topics
                    .remove(name)
                    .ok_or_else(|| ApplyError::UnknownTopic(name.clone()))?;
                self.names_by_id.remove(&gone.id);
                Ok(Change::TopicDeleted(gone))
            }
            MetadataRecord::TopicConfigChanged { name, configs } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| ApplyError::UnknownTopic(name.clone()))?;
                Arc::make_mut(topic).configs = configs.clone();
                Ok(Change::ConfigChanged(name.clone()))
            }
            MetadataRecord::ProducerIdsAllocated { block_end } => {
                // Equal is refused too: two controllers reserving the same block would hand
                // out the same ids.
                if *block_end <= self.producer_ids_end {
                    return Err(ApplyError::ProducerIdsBack(*block_end));
                }
                self.producer_ids_end = *block_end;
                Ok(Change::ProducerIds)
            }
            MetadataRecord::BrokerRegistered {
                node_id,
                broker_epoch,
                host,
                port,
                rack,
            } => self.register_broker(BrokerImage {
                node_id: *node_id,
                broker_epoch: *broker_epoch,
                host: host.clone(),
                port: *port,
                rack: rack.clone(),
                fenced: true,
            }),
            MetadataRecord::BrokerFencing { node_id, fenced } => {
                let broker = self
                    .brokers
                    .get_mut(node_id)
                    .ok_or(ApplyError::UnknownBroker(*node_id))?;
                broker.fenced = *fenced;
                Ok(Change::Broker(*node_id))
            }
        }
    }

    /// A registration replaces the broker's last one only at a higher epoch.
    fn register_broker(&mut self, broker: BrokerImage) -> Result<Change, ApplyError> {
        if let Some(current) = self.brokers.get(&broker.node_id) {
            if broker.broker_epoch <= current.broker_epoch {
                return Err(ApplyError::StaleBrokerEpoch {
                    node_id: broker.node_id,
                    epoch: broker.broker_epoch,
                    current: current.broker_epoch,
                });
            }
        }
        let node_id = broker.node_id;
        self.brokers.insert(node_id, broker);
        Ok(Change::Broker(node_id))
    }

    /// Applies records in order, all or none: on a refusal the image is left as it was.
    pub fn apply_all(&mut self, records: &[MetadataRecord]) -> Result<Vec<Change>, ApplyError> {
        let mut next = self.clone();
        let changes = records
            .iter()
            .map(|r| next.apply(r))
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(
            next.names_by_id.len(),
            next.topics.len(),
            "the id index names exactly the live topics"
        );
        *self = next;
        Ok(changes)
    }

    fn create_topic(
        &mut self,
        name: &str,
        id: Uuid,
        configs: &BTreeMap<String, String>,
    ) -> Result<Change, ApplyError> {
        if self.topics.contains_key(name) {
            return Err(ApplyError::TopicExists(name.to_string()));
        }
        if self.topic_by_id(id).is_some() {
            return Err(ApplyError::TopicIdTaken(id));
        }
        let topic = TopicImage {
            name: name.into(),
            id,
            configs: configs.clone(),
            partitions: Vec::new(),
        };
        self.topics.insert(name.to_string(), Arc::new(topic));
        self.names_by_id.insert(id, name.to_string());
        Ok(Change::TopicCreated(name.to_string()))
    }

    fn set_partition(&mut self, p: &PartitionRecord) -> Result<Change, ApplyError> {
        let topic = self
            .topics
            .get_mut(&p.topic)
            .ok_or_else(|| ApplyError::UnknownTopic(p.topic.clone()))?;
        let count = topic.partitions.len();
        let index = usize::try_from(p.partition).ok().filter(|i| *i <= count);
        let Some(index) = index else {
            return Err(ApplyError::PartitionGap {
                topic: p.topic.clone(),
                partition: p.partition,
                count,
            });
        };
        let image = PartitionImage {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            adding_replicas: p.adding_replicas.clone(),
            removing_replicas: p.removing_replicas.clone(),
        };
        let created = index == count;
        if let Some(current) = topic.partitions.get(index) {
            // A change made from an older state (two proposals from one image) is refused:
            // partition epochs fence changes of the in-sync set and of leadership.
            if p.partition_epoch <= current.partition_epoch || p.leader_epoch < current.leader_epoch
            {
                return Err(ApplyError::StalePartitionEpoch {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    epoch: p.partition_epoch,
                    current: current.partition_epoch,
                });
            }
        }
        let partitions = &mut Arc::make_mut(topic).partitions;
        if created {
            partitions.push(image);
        } else {
            partitions[index] = image;
        }
        Ok(Change::Partition {
            topic: p.topic.clone(),
            partition: p.partition,
            created,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(name: &str) -> MetadataRecord {
        MetadataRecord::TopicCreated {
            name: name.into(),
            topic_id: Uuid::new_v4(),
            configs: BTreeMap::new(),
        }
    }

    fn partition(topic: &str, partition: i32, leader_epoch: i32) -> MetadataRecord {
        MetadataRecord::Partition(PartitionRecord {
            topic: topic.into(),
            partition,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch,
            partition_epoch: leader_epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        })
    }

    #[test]
    fn records_build_the_image_and_changes_say_what_moved() {
        let mut image = MetadataImage::default();
        let changes = image
            .apply_all(&[created("a"), partition("a", 0, 0), partition("a", 1, 0)])
            .unwrap();
        assert_eq!(changes[0], Change::TopicCreated("a".into()));
        assert_eq!(image.topic("a").unwrap().partitions.len(), 2);
        let moved = image.apply(&partition("a", 1, 5)).unwrap();
        assert_eq!(
            moved,
            Change::Partition {
                topic: "a".into(),
                partition: 1,
                created: false
            }
        );
        assert_eq!(image.topic("a").unwrap().partitions[1].leader_epoch, 5);
        let gone = image
            .apply(&MetadataRecord::TopicDeleted { name: "a".into() })
            .unwrap();
        assert!(matches!(gone, Change::TopicDeleted(t) if t.partitions.len() == 2));
        assert!(image.topic("a").is_none());
    }

    #[test]
    fn a_published_image_does_not_change_under_its_readers() {
        let mut image = MetadataImage::default();
        image
            .apply_all(&[created("a"), partition("a", 0, 0)])
            .unwrap();
        let published = Arc::new(image.clone());
        image.apply(&partition("a", 0, 3)).unwrap();
        assert_eq!(published.topic("a").unwrap().partitions[0].leader_epoch, 0);
        assert_eq!(image.topic("a").unwrap().partitions[0].leader_epoch, 3);
    }

    #[test]
    fn records_that_do_not_fit_are_refused_whole() {
        let mut image = MetadataImage::default();
        image
            .apply_all(&[created("a"), partition("a", 0, 0)])
            .unwrap();
        let before = format!("{image:?}");
        let refused = image.apply_all(&[partition("a", 1, 0), partition("a", 3, 0)]);
        assert!(matches!(refused, Err(ApplyError::PartitionGap { .. })));
        assert_eq!(format!("{image:?}"), before, "nothing of the batch applied");
        assert!(matches!(
            image.apply(&created("a")),
            Err(ApplyError::TopicExists(_))
        ));
        assert!(matches!(
            image.apply(&partition("b", 0, 0)),
            Err(ApplyError::UnknownTopic(_))
        ));
        image
            .apply(&MetadataRecord::ProducerIdsAllocated { block_end: 2000 })
            .unwrap();
        assert!(image
            .apply(&MetadataRecord::ProducerIdsAllocated { block_end: 1000 })
            .is_err());
        // A partition change from an older state is refused.
        image.apply(&partition("a", 0, 4)).unwrap();
        assert!(matches!(
            image.apply(&partition("a", 0, 4)),
            Err(ApplyError::StalePartitionEpoch { .. })
        ));
    }
}
