//! OffsetCommit, OffsetFetch and OffsetDelete: committed offsets, kept by the group coordinator in
//! `__consumer_offsets`.

use quipu_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use quipu_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use quipu_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

use crate::broker::Broker;
use crate::group::offsets_topic::OffsetValue;
use crate::group::state::{INVALID_GROUP_ID, NONE, UNKNOWN_TOPIC_OR_PARTITION};
use crate::group::CommitEntry;

/// OffsetCommit: partitions of topics or partitions that do not exist get
/// UNKNOWN_TOPIC_OR_PARTITION, as in Kafka, whatever the group says; the rest go to the
/// coordinator, which is not asked at all when nothing is left.
pub fn offset_commit(
    broker: &Broker,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let exists = |topic: &str, partition: i32| {
        broker
            .metadata
            .topic(topic)
            .is_some_and(|t| (0..t.partition_count).contains(&partition))
    };
    let known: Vec<Vec<bool>> = request
        .topics
        .iter()
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| exists(&t.name.0, p.partition_index))
                .collect()
        })
        .collect();
    let entries: Vec<CommitEntry> = request
        .topics
        .iter()
        .zip(&known)
        .flat_map(|(t, known)| {
            t.partitions
                .iter()
                .zip(known)
                .filter(|(_, known)| **known)
                .map(|(p, _)| CommitEntry {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
        })
        .collect();
    let mut errors = if entries.is_empty() {
        Vec::new()
    } else {
        broker.groups.commit(
            broker,
            &request.group_id.0,
            request.generation_id_or_member_epoch,
            &request.member_id,
            request.group_instance_id.as_deref(),
            entries,
            version,
        )
    }
    .into_iter();
    let mut response = OffsetCommitResponse::default();
    for (t, known) in request.topics.iter().zip(&known) {
        let mut rt = OffsetCommitResponseTopic::default();
        rt.name = t.name.clone();
        for (p, known) in t.partitions.iter().zip(known) {
            let mut rp = OffsetCommitResponsePartition::default();
            rp.partition_index = p.partition_index;
            rp.error_code = if *known {
                errors.next().unwrap_or(NONE)
            } else {
                UNKNOWN_TOPIC_OR_PARTITION
            };
            rt.partitions.push(rp);
        }
        response.topics.push(rt);
    }
    response
}

type Wanted = Option<Vec<(String, i32)>>;
/// Committed offsets by topic: (topic, [(partition, offset if committed)]).
type TopicOffsets = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

fn fetch_group(broker: &Broker, group_id: &str, wanted: Wanted) -> TopicOffsets {
    let mut by_topic: TopicOffsets = Vec::new();
    for (topic, partition, value) in broker.groups.fetch_offsets(group_id, wanted) {
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, ps)) => ps.push((partition, value)),
            None => by_topic.push((topic, vec![(partition, value)])),
        }
    }
    by_topic
}

pub fn offset_fetch(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    let (epoch_of, metadata_of) = (
        move |v: &Option<OffsetValue>| {
            if version >= 5 {
                v.as_ref().map_or(-1, |v| v.leader_epoch)
            } else {
                -1
            }
        },
        |v: &Option<OffsetValue>| {
            Some(StrBytes::from_string(
                v.as_ref().map(|v| v.metadata.clone()).unwrap_or_default(),
            ))
        },
    );
    if version >= 8 {
        for g in &request.groups {
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            if g.group_id.is_empty() {
                rg.error_code = INVALID_GROUP_ID;
                response.groups.push(rg);
                continue;
            }
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .flat_map(|t| {
                        t.partition_indexes
                            .iter()
                            .map(|p| (t.name.0.to_string(), *p))
                    })
                    .collect()
            });
            for (topic, partitions) in fetch_group(broker, &g.group_id.0, wanted) {
                let mut rt = OffsetFetchResponseTopics::default();
                rt.name = TopicName(StrBytes::from_string(topic));
                for (p, v) in partitions {
                    let mut rp = OffsetFetchResponsePartitions::default();
                    rp.partition_index = p;
                    rp.committed_offset = v.as_ref().map_or(-1, |v| v.offset);
                    rp.committed_leader_epoch = epoch_of(&v);
                    rp.metadata = metadata_of(&v);
                    rt.partitions.push(rp);
                }
                rg.topics.push(rt);
            }
            response.groups.push(rg);
        }
        return response;
    }
    if request.group_id.is_empty() {
        response.error_code = INVALID_GROUP_ID;
        return response;
    }
    let wanted = request.topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(|p| (t.name.0.to_string(), *p))
            })
            .collect()
    });
    for (topic, partitions) in fetch_group(broker, &request.group_id.0, wanted) {
        let mut rt = OffsetFetchResponseTopic::default();
        rt.name = TopicName(StrBytes::from_string(topic));
        for (p, v) in partitions {
            let mut rp = OffsetFetchResponsePartition::default();
            rp.partition_index = p;
            rp.committed_offset = v.as_ref().map_or(-1, |v| v.offset);
            rp.committed_leader_epoch = epoch_of(&v);
            rp.metadata = metadata_of(&v);
            rt.partitions.push(rp);
        }
        response.topics.push(rt);
    }
    response
}

pub fn offset_delete(broker: &Broker, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let mut response = OffsetDeleteResponse::default();
    match broker
        .groups
        .delete_offsets(broker, &request.group_id.0, &partitions)
    {
        Err(code) => response.error_code = code,
        Ok(errors) => {
            let mut errors = errors.into_iter();
            for t in &request.topics {
                let mut rt = OffsetDeleteResponseTopic::default();
                rt.name = t.name.clone();
                for p in &t.partitions {
                    let mut rp = OffsetDeleteResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = errors.next().unwrap_or(NONE);
                    rt.partitions.push(rp);
                }
                response.topics.push(rt);
            }
        }
    }
    response
}
