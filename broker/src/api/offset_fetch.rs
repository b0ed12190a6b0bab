//! OffsetFetch: a group's committed offsets (one group before v8, several from v8), as the group
//! coordinator keeps them.

use quipu_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use quipu_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

use crate::group::offsets_topic::OffsetValue;
use crate::group::state::INVALID_GROUP_ID;
use crate::request_context::RequestContext;

type Wanted = Option<Vec<(String, i32)>>;

/// Committed offsets by topic: (topic, [(partition, offset if committed)]).
type TopicOffsets = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

/// One group's committed offsets by topic, or the group's error.
fn fetch_group(ctx: &RequestContext, group_id: &str, wanted: Wanted) -> Result<TopicOffsets, i16> {
    if group_id.is_empty() {
        return Err(INVALID_GROUP_ID);
    }
    let mut by_topic: TopicOffsets = Vec::new();
    for (topic, partition, value) in ctx.groups.fetch_offsets(group_id, wanted)? {
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, ps)) => ps.push((partition, value)),
            None => by_topic.push((topic, vec![(partition, value)])),
        }
    }
    Ok(by_topic)
}

/// The partitions a request names, as (topic, partition).
fn wanted<'a>(topics: impl Iterator<Item = (&'a TopicName, &'a [i32])>) -> Vec<(String, i32)> {
    topics
        .flat_map(|(name, partitions)| partitions.iter().map(|p| (name.0.to_string(), *p)))
        .collect()
}

/// A committed offset as the response carries it: offset, leader epoch (v5+), metadata.
fn committed(v: &Option<OffsetValue>, version: i16) -> (i64, i32, Option<StrBytes>) {
    let epoch = match v {
        Some(v) if version >= 5 => v.leader_epoch,
        _ => -1,
    };
    let metadata = v.as_ref().map(|v| v.metadata.clone()).unwrap_or_default();
    (
        v.as_ref().map_or(-1, |v| v.offset),
        epoch,
        Some(StrBytes::from_string(metadata)),
    )
}

/// v8+: one of the request's groups.
fn group_entry(
    ctx: &RequestContext,
    g: &OffsetFetchRequestGroup,
    version: i16,
) -> OffsetFetchResponseGroup {
    let mut rg = OffsetFetchResponseGroup::default();
    rg.group_id = g.group_id.clone();
    let wanted = g
        .topics
        .as_ref()
        .map(|ts| wanted(ts.iter().map(|t| (&t.name, t.partition_indexes.as_slice()))));
    match fetch_group(ctx, &g.group_id.0, wanted) {
        Err(code) => rg.error_code = code,
        Ok(topics) => {
            for (topic, partitions) in topics {
                let mut rt = OffsetFetchResponseTopics::default();
                rt.name = TopicName(StrBytes::from_string(topic));
                for (p, v) in partitions {
                    let mut rp = OffsetFetchResponsePartitions::default();
                    rp.partition_index = p;
                    (rp.committed_offset, rp.committed_leader_epoch, rp.metadata) =
                        committed(&v, version);
                    rt.partitions.push(rp);
                }
                rg.topics.push(rt);
            }
        }
    }
    rg
}

/// Before v8: the request's one group. An error is the response's (v2+) or, as v1 has no
/// top-level error, each requested partition's.
fn single_group(
    ctx: &RequestContext,
    request: &OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    let asked = request
        .topics
        .as_ref()
        .map(|ts| wanted(ts.iter().map(|t| (&t.name, t.partition_indexes.as_slice()))));
    let topics = match fetch_group(ctx, &request.group_id.0, asked.clone()) {
        Ok(topics) => topics,
        Err(code) if version >= 2 => {
            response.error_code = code;
            return response;
        }
        Err(code) => {
            let failed = asked
                .unwrap_or_default()
                .into_iter()
                .map(|(t, p)| (t, p, code));
            return partition_errors(response, failed);
        }
    };
    for (topic, partitions) in topics {
        let mut rt = OffsetFetchResponseTopic::default();
        rt.name = TopicName(StrBytes::from_string(topic));
        for (p, v) in partitions {
            let mut rp = OffsetFetchResponsePartition::default();
            rp.partition_index = p;
            (rp.committed_offset, rp.committed_leader_epoch, rp.metadata) = committed(&v, version);
            rt.partitions.push(rp);
        }
        response.topics.push(rt);
    }
    response
}

/// `response` with `code` on each (topic, partition) of `failed`.
fn partition_errors(
    mut response: OffsetFetchResponse,
    failed: impl Iterator<Item = (String, i32, i16)>,
) -> OffsetFetchResponse {
    for (topic, p, code) in failed {
        let name = TopicName(StrBytes::from_string(topic));
        if response.topics.last().is_none_or(|t| t.name != name) {
            let mut rt = OffsetFetchResponseTopic::default();
            rt.name = name;
            response.topics.push(rt);
        }
        let mut rp = OffsetFetchResponsePartition::default();
        rp.partition_index = p;
        rp.committed_offset = -1;
        rp.error_code = code;
        response
            .topics
            .last_mut()
            .expect("pushed")
            .partitions
            .push(rp);
    }
    response
}

pub fn offset_fetch(
    ctx: &RequestContext,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version < 8 {
        return single_group(ctx, &request, version);
    }
    let mut response = OffsetFetchResponse::default();
    for g in &request.groups {
        response.groups.push(group_entry(ctx, g, version));
    }
    response
}

super::handler::api!(
    OffsetFetch,
    1..=9,
    OffsetFetchRequest,
    |ctx, request, meta| { meta.reply(&offset_fetch(&ctx, request, meta.version)) }
);
