//! OffsetCommit answered as Apache Kafka answers it (issue 11, items 19 and 20): unknown topics
//! and partitions, and commits while the group rebalances, in Kafka's order of checks.

mod common;

use common::{create_topic, find_coordinator, join_request, BrokerProcess, Conn};
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_COORDINATOR: i16 = 16;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;

/// JoinGroup v3 (no member-id round): member id and generation.
fn join(conn: &mut Conn, group: &str, member_id: &str) -> (String, i32) {
    let r: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 3, &join_request(group, member_id));
    assert_eq!(r.error_code, 0);
    (r.member_id.to_string(), r.generation_id)
}

fn sync(conn: &mut Conn, group: &str, member_id: &str, generation: i32) {
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.member_id = StrBytes::from_string(member_id.to_string());
    r.generation_id = generation;
    let resp: SyncGroupResponse = conn.call(ApiKey::SyncGroup, 3, &r);
    assert_eq!(resp.error_code, 0);
}

/// One OffsetCommit v8; the error codes of its partitions, in order.
fn commit(
    conn: &mut Conn,
    group: &str,
    generation: i32,
    member_id: &str,
    partitions: &[(&str, i32)],
) -> Vec<i16> {
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.generation_id_or_member_epoch = generation;
    r.member_id = StrBytes::from_string(member_id.to_string());
    for (topic, partition) in partitions {
        let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
        p.partition_index = *partition;
        p.committed_offset = 7;
        let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
        t.name = common::name(topic);
        t.partitions = vec![p];
        r.topics.push(t);
    }
    let resp: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, 8, &r);
    resp.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

#[test]
fn commits_for_topics_or_partitions_that_do_not_exist_are_refused_per_partition() {
    let b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    find_coordinator(&mut conn, "g");
    assert_eq!(create_topic(&mut conn, "real", 2).topics[0].error_code, 0);
    let codes = commit(
        &mut conn,
        "admin",
        -1,
        "",
        &[("real", 1), ("missing", 0), ("real", 2), ("real", -1)],
    );
    assert_eq!(
        codes,
        vec![
            0,
            UNKNOWN_TOPIC_OR_PARTITION,
            UNKNOWN_TOPIC_OR_PARTITION,
            UNKNOWN_TOPIC_OR_PARTITION
        ]
    );
}

#[test]
fn commits_during_a_rebalance_are_checked_member_then_generation_then_state() {
    let b = BrokerProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let mut conn = b.connect();
    find_coordinator(&mut conn, "g");
    assert_eq!(create_topic(&mut conn, "orders", 1).topics[0].error_code, 0);
    let orders = [("orders", 0)];
    let (a, generation) = join(&mut conn, "g", "");
    sync(&mut conn, "g", &a, generation);
    // A second member's join waits for `a` to rejoin: the group prepares a rebalance.
    let mut other = b.connect();
    let waiting = other.send(ApiKey::JoinGroup, 3, &join_request("g", ""));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Preparing: the generation has not moved, and Kafka takes the commit.
    assert_eq!(commit(&mut conn, "g", generation, &a, &orders), vec![0]);
    let (_, next) = join(&mut conn, "g", &a);
    let _: JoinGroupResponse = other.receive(ApiKey::JoinGroup, 3, waiting);
    assert_eq!(next, generation + 1);
    // Completing (waiting for SyncGroup): a stale generation, an admin commit and a current one.
    assert_eq!(
        commit(&mut conn, "g", generation, &a, &orders),
        vec![ILLEGAL_GENERATION]
    );
    assert_eq!(
        commit(&mut conn, "g", -1, "", &orders),
        vec![UNKNOWN_MEMBER_ID]
    );
    assert_eq!(
        commit(&mut conn, "g", next, "nobody", &orders),
        vec![UNKNOWN_MEMBER_ID]
    );
    assert_eq!(
        commit(&mut conn, "g", next, &a, &orders),
        vec![REBALANCE_IN_PROGRESS]
    );
}

/// OffsetFetch `version` of partition 0 of `t` for `group`: the top-level error (v2+), the
/// partition's error and its committed offset.
fn fetch_offset(conn: &mut Conn, group: &str, version: i16) -> (i16, i16, i64) {
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
    t.name = common::name("t");
    t.partition_indexes = vec![0];
    r.topics = Some(vec![t]);
    let resp: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, version, &r);
    let p = resp.topics.first().and_then(|t| t.partitions.first());
    (
        resp.error_code,
        p.map_or(0, |p| p.error_code),
        p.map_or(-1, |p| p.committed_offset),
    )
}

/// As in Kafka, a broker answers for a group only once it has taken up the `__consumer_offsets`
/// partition that holds it: before the first FindCoordinator there is none, and group requests
/// are told NOT_COORDINATOR (v1 OffsetFetch per partition, as it has no top-level error).
#[test]
fn group_requests_before_the_offsets_topic_exists_are_told_not_coordinator() {
    let b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    // Kafka refuses partitions of unknown topics before it asks the coordinator.
    assert_eq!(create_topic(&mut conn, "t", 1).topics[0].error_code, 0);
    let early: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 3, &join_request("early", ""));
    assert_eq!(early.error_code, NOT_COORDINATOR);
    assert_eq!(
        fetch_offset(&mut conn, "early", 1),
        (0, NOT_COORDINATOR, -1)
    );
    assert_eq!(
        fetch_offset(&mut conn, "early", 5),
        (NOT_COORDINATOR, 0, -1)
    );
    assert_eq!(
        commit(&mut conn, "early", -1, "", &[("t", 0)]),
        vec![NOT_COORDINATOR]
    );
    find_coordinator(&mut conn, "early");
    assert_eq!(fetch_offset(&mut conn, "early", 5), (0, 0, -1));
    join(&mut conn, "early", "");
}
