//! Where a consumer's positions come from: ListOffsets (a partition's beginning, its end, the
//! first record at a timestamp), the group's committed offsets, and the `auto.offset.reset`
//! policy for partitions without one.
//!
//! Invariants: positions are set only for partitions assigned (and only through
//! [`Subscription::set_position`], which drops what was buffered); a seek to a timestamp with
//! no record at or after it goes to the end; with `auto.offset.reset=none`, a partition without
//! a committed offset is an error, never a guess.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use quipu_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use quipu_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, TopicName};
use quipu_protocol::StrBytes;

use crate::cluster::{backoff, Cluster};
use crate::config::OffsetReset;
use crate::error::{Error, Result};
use crate::group_member::GroupMember;
use crate::topic_partition::TopicPartition;

use super::subscription::Subscription;

/// ListOffsets timestamp for the earliest offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets timestamp for the latest offset (the high watermark).
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets attempts after the first, on errors a retry may cure.
const LIST_OFFSETS_RETRIES: u32 = 10;

/// Seeks `partitions` to the offset ListOffsets gives for `timestamp` (to the end where no
/// record is at or after it).
pub(super) async fn seek_to_listed(
    cluster: &Arc<Cluster>,
    subscription: &mut Subscription,
    partitions: &[TopicPartition],
    timestamp: i64,
) -> Result<()> {
    subscription.check_assigned(partitions)?;
    let found = list_offsets(cluster, &at(partitions, timestamp)).await?;
    let mut missing = Vec::new();
    for (tp, offset) in found {
        match offset {
            Some(o) => subscription.set_position(&tp, Some(o))?,
            None => missing.push(tp),
        }
    }
    if !missing.is_empty() {
        // No record at or after the timestamp: the end.
        let ends = list_offsets(cluster, &at(&missing, LATEST_TIMESTAMP)).await?;
        for (tp, offset) in ends {
            subscription.set_position(&tp, offset)?;
        }
    }
    Ok(())
}

/// The offsets of `partitions` for `timestamp`, -1 where there is none.
pub(super) async fn listed(
    cluster: &Arc<Cluster>,
    partitions: &[TopicPartition],
    timestamp: i64,
) -> Result<Vec<(TopicPartition, i64)>> {
    Ok(list_offsets(cluster, &at(partitions, timestamp))
        .await?
        .into_iter()
        .map(|(tp, o)| (tp, o.unwrap_or(-1)))
        .collect())
}

/// Positions for partitions that have none: the committed offset, else the reset policy.
pub(super) async fn resolve_positions(
    cluster: &Arc<Cluster>,
    subscription: &mut Subscription,
    group: Option<&GroupMember>,
    policy: OffsetReset,
) -> Result<()> {
    let missing = subscription.missing_positions();
    if missing.is_empty() {
        return Ok(());
    }
    let mut unresolved = missing.clone();
    if let Some(g) = group {
        let committed = g.committed(cluster, &missing).await?;
        unresolved.clear();
        let committed: HashMap<_, _> = committed.into_iter().collect();
        for tp in missing {
            match committed.get(&tp).copied().flatten() {
                Some(o) => subscription.set_position(&tp, Some(o))?,
                None => unresolved.push(tp),
            }
        }
    }
    reset(cluster, subscription, &unresolved, policy).await
}

/// Moves `partitions` to where `policy` says a consumer without a usable offset starts.
pub(super) async fn reset(
    cluster: &Arc<Cluster>,
    subscription: &mut Subscription,
    partitions: &[TopicPartition],
    policy: OffsetReset,
) -> Result<()> {
    if partitions.is_empty() {
        return Ok(());
    }
    let timestamp = reset_timestamp(policy, &partitions[0])?;
    seek_to_listed(cluster, subscription, partitions, timestamp).await
}

/// The ListOffsets timestamp `policy` resets to; an error naming `first` when it is `none`.
fn reset_timestamp(policy: OffsetReset, first: &TopicPartition) -> Result<i64> {
    match policy {
        OffsetReset::Earliest => Ok(EARLIEST_TIMESTAMP),
        OffsetReset::Latest => Ok(LATEST_TIMESTAMP),
        OffsetReset::None => Err(Error::InvalidArgument(format!(
            "no committed offset for {first} and auto.offset.reset is none"
        ))),
    }
}

/// The consumer's group, for `what` (commits, committed offsets), which need one.
pub(super) fn needs_group<'a>(
    group: Option<&'a GroupMember>,
    what: &str,
) -> Result<&'a GroupMember> {
    group.ok_or_else(|| Error::InvalidArgument(format!("{what} need a group.id")))
}

/// Each of `partitions` asked at `timestamp`.
fn at(partitions: &[TopicPartition], timestamp: i64) -> Vec<(TopicPartition, i64)> {
    partitions
        .iter()
        .map(|tp| (tp.clone(), timestamp))
        .collect()
}

/// The offsets ListOffsets gives for each `(partition, timestamp)` (-2 earliest, -1 latest),
/// asked of each partition's leader; `None` where no record is at or after the timestamp.
pub(crate) async fn list_offsets(
    cluster: &Arc<Cluster>,
    queries: &[(TopicPartition, i64)],
) -> Result<Vec<(TopicPartition, Option<i64>)>> {
    let mut attempt = 0;
    loop {
        match list_offsets_once(cluster, queries).await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retriable() && attempt < LIST_OFFSETS_RETRIES => {
                for (tp, _) in queries {
                    cluster.invalidate(&tp.topic);
                }
                attempt += 1;
                backoff(cluster.config.retry_backoff_ms, attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn list_offsets_once(
    cluster: &Arc<Cluster>,
    queries: &[(TopicPartition, i64)],
) -> Result<Vec<(TopicPartition, Option<i64>)>> {
    let mut by_leader: BTreeMap<i32, Vec<&(TopicPartition, i64)>> = BTreeMap::new();
    for q in queries {
        let (leader, _) = cluster.leader(&q.0.topic, q.0.partition).await?;
        by_leader.entry(leader).or_default().push(q);
    }
    let mut out = Vec::new();
    for (leader, qs) in by_leader {
        let request = list_offsets_request(&qs);
        let conn = cluster.connection(leader).await?;
        let response = conn.send(&request).await?;
        read_listed(&response, &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// One leader's ListOffsets for `queries`.
fn list_offsets_request(queries: &[&(TopicPartition, i64)]) -> ListOffsetsRequest {
    let mut topics: Vec<ListOffsetsTopic> = Vec::new();
    for (tp, ts) in queries {
        let p = ListOffsetsPartition::default()
            .with_partition_index(tp.partition)
            .with_current_leader_epoch(-1)
            .with_timestamp(*ts);
        match topics.iter_mut().find(|t| t.name.0.as_str() == tp.topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_isolation_level(0)
        .with_topics(topics)
}

/// Appends the offsets of `response` to `out`; an error at the first partition refused.
fn read_listed(
    response: &ListOffsetsResponse,
    out: &mut Vec<(TopicPartition, Option<i64>)>,
) -> Result<()> {
    for t in &response.topics {
        for p in &t.partitions {
            let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
            if let Some(e) = Error::broker(p.error_code, format!("list offsets of {tp}")) {
                return Err(e);
            }
            out.push((tp, (p.offset >= 0).then_some(p.offset)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use quipu_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };
    use quipu_protocol::ResponseError;

    use crate::test_support::request_shape;

    use super::*;

    #[test]
    fn the_reset_policy_picks_the_beginning_or_the_end_or_refuses() {
        let tp = TopicPartition::new("t", 2);
        assert_eq!(
            reset_timestamp(OffsetReset::Earliest, &tp).unwrap(),
            EARLIEST_TIMESTAMP
        );
        assert_eq!(
            reset_timestamp(OffsetReset::Latest, &tp).unwrap(),
            LATEST_TIMESTAMP
        );
        let e = reset_timestamp(OffsetReset::None, &tp).unwrap_err();
        assert!(e.to_string().contains("t-2"), "{e}");
    }

    #[test]
    fn list_offsets_asks_each_topic_once_with_each_partitions_timestamp() {
        let queries = [
            (TopicPartition::new("a", 0), EARLIEST_TIMESTAMP),
            (TopicPartition::new("b", 1), 1_000),
            (TopicPartition::new("a", 3), LATEST_TIMESTAMP),
        ];
        let refs: Vec<&(TopicPartition, i64)> = queries.iter().collect();
        let request = list_offsets_request(&refs);
        let shape = request_shape(
            &request.topics,
            |t| t.name.0.as_str(),
            |t| &t.partitions,
            |p| (p.partition_index, p.timestamp),
        );
        assert_eq!(
            shape,
            [("a", vec![(0, -2), (3, -1)]), ("b", vec![(1, 1_000)])]
        );
    }

    #[test]
    fn a_listed_offset_of_minus_one_is_none_and_a_refused_partition_an_error() {
        let partition = |index, offset| {
            ListOffsetsPartitionResponse::default()
                .with_partition_index(index)
                .with_offset(offset)
        };
        let mut response =
            ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![partition(0, 42), partition(1, -1)])]);
        let mut out = Vec::new();
        read_listed(&response, &mut out).unwrap();
        assert_eq!(
            out,
            [
                (TopicPartition::new("t", 0), Some(42)),
                (TopicPartition::new("t", 1), None),
            ]
        );
        response.topics[0].partitions[1].error_code = ResponseError::NotLeaderOrFollower.code();
        assert!(read_listed(&response, &mut Vec::new())
            .unwrap_err()
            .is_retriable());
    }

    #[test]
    fn commits_and_committed_offsets_need_a_group() {
        let e = needs_group(None, "commits").err().expect("no group");
        assert_eq!(e.to_string(), "invalid argument: commits need a group.id");
        let member = GroupMember::new("g".into(), None);
        assert!(needs_group(Some(&member), "commits").is_ok());
    }
}
