//! A group's committed offsets: OffsetCommit as a member of a generation, and OffsetFetch.
//!
//! Invariant: a commit carries the committing member's generation and id (-1 and "" outside any
//! generation, as the admin client commits), so a member fenced by a rebalance cannot overwrite
//! its successor's commits: the coordinator answers ILLEGAL_GENERATION, and the member joins
//! again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use quipu_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use quipu_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use quipu_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    TopicName,
};
use quipu_protocol::StrBytes;

use crate::cluster::{backoff, Cluster};
use crate::error::{Error, Result};
use crate::topic_partition::TopicPartition;

use super::membership::{rejoin_error, Generation};

/// Highest OffsetFetch version used: v8 batches groups in another shape.
const MAX_OFFSET_FETCH_VERSION: i16 = 7;
/// Highest OffsetCommit version used: v9 is for the KIP-848 protocol.
const MAX_OFFSET_COMMIT_VERSION: i16 = 8;
/// OffsetFetch attempts after the first, on errors a retry may cure.
const OFFSET_FETCH_RETRIES: u32 = 10;

/// The OffsetCommit of `offsets` (next offset to read, per partition) to `group_id`, as
/// `generation`'s member (`None`: outside any generation).
pub(super) fn commit_request(
    group_id: &str,
    instance_id: Option<&str>,
    generation: Option<&Generation>,
    offsets: &[(TopicPartition, i64)],
) -> OffsetCommitRequest {
    let (generation_id, member_id) = match generation {
        Some(g) => (g.generation_id, g.member_id.clone()),
        None => (-1, String::new()),
    };
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, offset) in offsets {
        by_topic.entry(&tp.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1),
        );
    }
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
        .with_generation_id_or_member_epoch(generation_id)
        .with_member_id(StrBytes::from_string(member_id))
        .with_group_instance_id(instance_id.map(|i| StrBytes::from_string(i.to_string())))
        .with_retention_time_ms(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        )
}

/// Sends `request` to `group_id`'s coordinator. Raises `rejoin` when the coordinator answers
/// that the member must join again (its generation is over).
pub(super) async fn send_commit(
    cluster: &Arc<Cluster>,
    group_id: &str,
    request: &OffsetCommitRequest,
    rejoin: &AtomicBool,
) -> Result<()> {
    let conn = cluster.coordinator(group_id).await?;
    let version = conn
        .version_for::<OffsetCommitRequest>()?
        .min(MAX_OFFSET_COMMIT_VERSION);
    let response = conn.send_version(request, version).await?;
    if let Some(e) = commit_error(&response) {
        if rejoin_error(&e) {
            rejoin.store(true, Ordering::Release);
        }
        if e.invalidates_metadata() {
            cluster.invalidate_coordinator(group_id);
        }
        return Err(e);
    }
    Ok(())
}

/// The first partition the coordinator refused to commit, as an error.
fn commit_error(response: &OffsetCommitResponse) -> Option<Error> {
    response.topics.iter().find_map(|t| {
        t.partitions.iter().find_map(|p| {
            Error::broker(
                p.error_code,
                format!("commit offset of {}-{}", t.name.0, p.partition_index),
            )
        })
    })
}

/// Committed offsets of `group_id`: of `partitions`, or of every partition it has committed.
pub(crate) async fn fetch_committed(
    cluster: &Arc<Cluster>,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<Vec<(TopicPartition, Option<i64>)>> {
    let topics = partitions.map(offset_fetch_topics);
    let mut attempt = 0;
    loop {
        match fetch_committed_once(cluster, group_id, topics.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retriable() && attempt < OFFSET_FETCH_RETRIES => {
                if e.invalidates_metadata() {
                    cluster.invalidate_coordinator(group_id);
                }
                attempt += 1;
                backoff(cluster.config.retry_backoff_ms, attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// OffsetFetch's topics for `partitions`.
fn offset_fetch_topics(partitions: &[TopicPartition]) -> Vec<OffsetFetchRequestTopic> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partition_indexes(ps)
        })
        .collect()
}

async fn fetch_committed_once(
    cluster: &Arc<Cluster>,
    group_id: &str,
    topics: Option<Vec<OffsetFetchRequestTopic>>,
) -> Result<Vec<(TopicPartition, Option<i64>)>> {
    let conn = cluster.coordinator(group_id).await?;
    let version = conn
        .version_for::<OffsetFetchRequest>()?
        .min(MAX_OFFSET_FETCH_VERSION);
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
        .with_topics(topics);
    let response = conn.send_version(&request, version).await?;
    committed_offsets(group_id, &response)
}

/// The offsets of an OffsetFetch response, sorted; `None` where nothing is committed.
fn committed_offsets(
    group_id: &str,
    response: &OffsetFetchResponse,
) -> Result<Vec<(TopicPartition, Option<i64>)>> {
    if let Some(e) = Error::broker(response.error_code, format!("offsets of group {group_id}")) {
        return Err(e);
    }
    let mut out = Vec::new();
    for t in &response.topics {
        for p in &t.partitions {
            if let Some(e) = Error::broker(
                p.error_code,
                format!("offset of {}-{}", t.name.0, p.partition_index),
            ) {
                return Err(e);
            }
            out.push((
                TopicPartition::new(t.name.0.as_str(), p.partition_index),
                (p.committed_offset >= 0).then_some(p.committed_offset),
            ));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use quipu_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    use quipu_protocol::messages::offset_fetch_response::{
        OffsetFetchResponsePartition, OffsetFetchResponseTopic,
    };
    use quipu_protocol::ResponseError;

    use crate::test_support::request_shape;

    use super::*;

    fn name(topic: &str) -> TopicName {
        TopicName(StrBytes::from_string(topic.to_string()))
    }

    #[test]
    fn a_commit_carries_the_generation_and_member_or_none() {
        let generation = Generation {
            member_id: "m-1".into(),
            generation_id: 4,
            protocol: "range".into(),
            leader: false,
        };
        let offsets = [
            (TopicPartition::new("b", 0), 7),
            (TopicPartition::new("a", 1), 3),
            (TopicPartition::new("b", 2), 9),
        ];
        let r = commit_request("g", Some("static-1"), Some(&generation), &offsets);
        assert_eq!(r.generation_id_or_member_epoch, 4);
        assert_eq!(r.member_id.as_str(), "m-1");
        assert_eq!(r.group_instance_id.as_deref(), Some("static-1"));
        let topics = request_shape(
            &r.topics,
            |t| t.name.0.as_str(),
            |t| &t.partitions,
            |p| (p.partition_index, p.committed_offset),
        );
        assert_eq!(topics, [("a", vec![(1, 3)]), ("b", vec![(0, 7), (2, 9)])]);

        let outside = commit_request("g", None, None, &offsets);
        assert_eq!(outside.generation_id_or_member_epoch, -1);
        assert_eq!(outside.member_id.as_str(), "");
        assert_eq!(outside.group_instance_id, None);
    }

    #[test]
    fn a_refused_partition_makes_the_commit_fail() {
        let partition = |index, code| {
            OffsetCommitResponsePartition::default()
                .with_partition_index(index)
                .with_error_code(code)
        };
        let mut response =
            OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![partition(0, 0), partition(1, 0)])]);
        assert!(commit_error(&response).is_none());
        response.topics[0].partitions[1].error_code = ResponseError::IllegalGeneration.code();
        let e = commit_error(&response).expect("refused");
        assert_eq!(e.broker_error(), Some(ResponseError::IllegalGeneration));
        assert!(e.to_string().contains("t-1"), "{e}");
    }

    #[test]
    fn fetched_offsets_come_sorted_with_none_where_nothing_is_committed() {
        let partition = |index, offset| {
            OffsetFetchResponsePartition::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
        };
        let response = OffsetFetchResponse::default().with_topics(vec![
            OffsetFetchResponseTopic::default()
                .with_name(name("b"))
                .with_partitions(vec![partition(1, -1), partition(0, 12)]),
            OffsetFetchResponseTopic::default()
                .with_name(name("a"))
                .with_partitions(vec![partition(0, 0)]),
        ]);
        assert_eq!(
            committed_offsets("g", &response).unwrap(),
            [
                (TopicPartition::new("a", 0), Some(0)),
                (TopicPartition::new("b", 0), Some(12)),
                (TopicPartition::new("b", 1), None),
            ]
        );
        let refused = response.with_error_code(ResponseError::GroupAuthorizationFailed.code());
        assert!(committed_offsets("g", &refused).is_err());
    }

    #[test]
    fn offset_fetch_asks_each_topic_once() {
        let topics = offset_fetch_topics(&[
            TopicPartition::new("b", 3),
            TopicPartition::new("a", 0),
            TopicPartition::new("b", 1),
        ]);
        let shape: Vec<(&str, &[i32])> = topics
            .iter()
            .map(|t| (t.name.0.as_str(), t.partition_indexes.as_slice()))
            .collect();
        assert_eq!(shape, [("a", &[0][..]), ("b", &[3, 1][..])]);
    }
}
