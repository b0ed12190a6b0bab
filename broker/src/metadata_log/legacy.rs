//! Records as the metadata log held them before the binary records: JSON, one a frame
//! (version 1), with a topic's partitions counted rather than placed. Read, never written; each
//! is upgraded to the binary records as it is read, its partitions placed on this node (the only
//! one such a log knew).
//!
//! Invariant: upgrading a legacy log gives the records that would have been written for the same
//! changes today, so replay has one apply path whatever the file's age.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::record::{MetadataRecord, PartitionRecord};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum LegacyRecord {
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
    TopicConfigChanged {
        name: String,
        configs: BTreeMap<String, String>,
    },
    ProducerIdsAllocated {
        block_end: i64,
    },
}

/// Upgrades a legacy log record by record; it tracks each live topic's partition count, which
/// a legacy `PartitionsCreated` needs to say which partitions are new.
pub struct Upgrader {
    node_id: i32,
    partitions: BTreeMap<String, i32>,
}

impl Upgrader {
    pub fn new(node_id: i32) -> Self {
        Self {
            node_id,
            partitions: BTreeMap::new(),
        }
    }

    pub fn upgrade(&mut self, record: LegacyRecord) -> Vec<MetadataRecord> {
        match record {
            LegacyRecord::TopicCreated {
                name,
                topic_id,
                partitions,
                configs,
            } => {
                let mut out = vec![MetadataRecord::TopicCreated {
                    name: name.clone(),
                    topic_id,
                    configs,
                }];
                out.extend(self.place(&name, 0, partitions));
                out
            }
            LegacyRecord::PartitionsCreated { name, partitions } => {
                let from = self.partitions.get(&name).copied().unwrap_or(0);
                self.place(&name, from, partitions)
            }
            LegacyRecord::TopicDeleted { name } => {
                self.partitions.remove(&name);
                vec![MetadataRecord::TopicDeleted { name }]
            }
            LegacyRecord::TopicConfigChanged { name, configs } => {
                vec![MetadataRecord::TopicConfigChanged { name, configs }]
            }
            LegacyRecord::ProducerIdsAllocated { block_end } => {
                vec![MetadataRecord::ProducerIdsAllocated { block_end }]
            }
        }
    }

    /// Partitions `from..to` of `topic`, on this node, at the first epochs.
    fn place(&mut self, topic: &str, from: i32, to: i32) -> Vec<MetadataRecord> {
        self.partitions.insert(topic.to_string(), to.max(from));
        (from..to)
            .map(|p| {
                MetadataRecord::Partition(PartitionRecord::on_one_node(topic, p, self.node_id))
            })
            .collect()
    }
}
