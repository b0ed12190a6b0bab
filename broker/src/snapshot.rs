//! Snapshots of the metadata image: the shortest record list that rebuilds an image, so that
//! replay can start from a snapshot instead of the log's first record, and a digest of an image
//! that nodes compare to show they agree.
//!
//! A snapshot lists the registered brokers (each registration, then its unfencing if it is
//! unfenced), then, for each topic in name order, its creation record, then its partitions in
//! order, then (last) the producer-id block. Replaying it into an empty image gives an image
//! equal to the one it was taken from; its encoding is the same bytes for equal images, so the
//! digest of the encoding is the digest of the image.
//!
//! Invariant: `MetadataImage::default().apply_all(records_of(i))` equals `i`, for every image
//! that `apply` can build.

use crate::image::MetadataImage;
use crate::metadata_log::record::{encode_all, MetadataRecord, PartitionRecord};

/// The records that rebuild `image` from an empty one.
pub fn records_of(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for b in image.brokers() {
        records.push(MetadataRecord::BrokerRegistered {
            node_id: b.node_id,
            broker_epoch: b.broker_epoch,
            host: b.host.clone(),
            port: b.port,
            rack: b.rack.clone(),
        });
        if !b.fenced {
            records.push(MetadataRecord::BrokerFencing {
                node_id: b.node_id,
                fenced: false,
            });
        }
    }
    for topic in image.topics() {
        records.push(MetadataRecord::TopicCreated {
            name: topic.name.to_string(),
            topic_id: topic.id,
            configs: topic.configs.clone(),
        });
        for (index, p) in topic.partitions.iter().enumerate() {
            records.push(MetadataRecord::Partition(PartitionRecord {
                topic: topic.name.to_string(),
                partition: index as i32,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                adding_replicas: p.adding_replicas.clone(),
                removing_replicas: p.removing_replicas.clone(),
            }));
        }
    }
    if image.producer_ids_end() > 0 {
        records.push(MetadataRecord::ProducerIdsAllocated {
            block_end: image.producer_ids_end(),
        });
    }
    records
}

/// A digest of `image`: equal images have equal digests, on every node.
pub fn digest(image: &MetadataImage) -> u32 {
    crc32c::crc32c(&encode_all(&records_of(image)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;

    /// A record drawn from a small space of names, so that many of them apply to what the
    /// records before them built (and some do not, as at runtime they would be refused).
    fn record() -> impl Strategy<Value = MetadataRecord> {
        let name = prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(str::to_string);
        let configs = prop::collection::btree_map(
            prop::sample::select(vec!["retention.ms", "segment.bytes"]).prop_map(str::to_string),
            (1u32..1000).prop_map(|v| v.to_string()),
            0..2,
        );
        prop_oneof![
            (name.clone(), any::<u128>(), configs.clone()).prop_map(|(name, id, configs)| {
                MetadataRecord::TopicCreated {
                    name,
                    topic_id: Uuid::from_u128(id),
                    configs,
                }
            }),
            (name.clone(), 0i32..4, 1i32..4, 0i32..5).prop_map(
                |(topic, partition, node, epoch)| {
                    MetadataRecord::Partition(PartitionRecord {
                        topic,
                        partition,
                        replicas: vec![node, node % 3 + 1],
                        isr: vec![node],
                        leader: node,
                        leader_epoch: epoch,
                        partition_epoch: epoch,
                        adding_replicas: Vec::new(),
                        removing_replicas: Vec::new(),
                    })
                }
            ),
            name.clone()
                .prop_map(|name| MetadataRecord::TopicDeleted { name }),
            (name, configs)
                .prop_map(|(name, configs)| MetadataRecord::TopicConfigChanged { name, configs }),
            (0i64..5000).prop_map(|block_end| MetadataRecord::ProducerIdsAllocated { block_end }),
            (1i32..4, 0i64..6, 9092i32..9095).prop_map(|(node_id, broker_epoch, port)| {
                MetadataRecord::BrokerRegistered {
                    node_id,
                    broker_epoch,
                    host: format!("b{node_id}"),
                    port,
                    rack: (node_id % 2 == 0).then(|| format!("r{node_id}")),
                }
            }),
            (1i32..4, any::<bool>())
                .prop_map(|(node_id, fenced)| MetadataRecord::BrokerFencing { node_id, fenced }),
        ]
    }

    /// Applies what applies, as the controller commits only records that do.
    fn build(records: &[MetadataRecord]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for r in records {
            let _ = image.apply(r);
        }
        image
    }

    fn same(a: &MetadataImage, b: &MetadataImage) -> bool {
        let topics = |i: &MetadataImage| -> BTreeMap<String, _> {
            i.topics()
                .map(|t| (t.name.to_string(), (**t).clone()))
                .collect()
        };
        let brokers = |i: &MetadataImage| i.brokers().cloned().collect::<Vec<_>>();
        topics(a) == topics(b)
            && a.producer_ids_end() == b.producer_ids_end()
            && brokers(a) == brokers(b)
    }

    proptest! {
        #[test]
        fn a_snapshot_and_the_rest_give_the_image_the_whole_log_gives(
            records in prop::collection::vec(record(), 0..60),
            cut in 0usize..60,
        ) {
            let cut = cut.min(records.len());
            let whole = build(&records);
            let mut from_snapshot = MetadataImage::default();
            from_snapshot.apply_all(&records_of(&build(&records[..cut]))).unwrap();
            for r in &records[cut..] {
                let _ = from_snapshot.apply(r);
            }
            prop_assert!(same(&whole, &from_snapshot));
            prop_assert_eq!(digest(&whole), digest(&from_snapshot));
        }

        #[test]
        fn images_that_differ_have_digests_that_differ(
            records in prop::collection::vec(record(), 1..40),
        ) {
            let image = build(&records);
            let mut changed = image.clone();
            let bumped = changed.producer_ids_end() + 1;
            changed.apply(&MetadataRecord::ProducerIdsAllocated { block_end: bumped }).unwrap();
            prop_assert_ne!(digest(&image), digest(&changed));
        }
    }
}
