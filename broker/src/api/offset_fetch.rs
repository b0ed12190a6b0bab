//! OffsetFetch: a group's committed offsets (one group before v8, several from v8), as the group
//! coordinator keeps them.

use quipu_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

use crate::broker::Broker;
use crate::group::offsets_topic::OffsetValue;
use crate::group::state::INVALID_GROUP_ID;

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

super::handler::api!(
    OffsetFetch,
    1..=9,
    OffsetFetchRequest,
    |broker, request, meta| { meta.reply(&offset_fetch(&broker, request, meta.version)) }
);
