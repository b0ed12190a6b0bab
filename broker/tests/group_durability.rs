//! Committed offsets and group membership through a kill -9: an acknowledged OffsetCommit is in
//! `__consumer_offsets` (the page cache holds it once acknowledged), so after a crash and restart
//! OffsetFetch returns it and DescribeGroups shows the stable group again.

mod common;

use bytes::Bytes;
use common::{find_coordinator, name, BrokerProcess, Conn};
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

fn commit(conn: &mut Conn, group: &str, partition: i32, offset: i64) {
    let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
    p.partition_index = partition;
    p.committed_offset = offset;
    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = name("t");
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.generation_id_or_member_epoch = -1;
    r.topics = vec![t];
    let resp: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, 8, &r);
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);
}

fn fetch_all(conn: &mut Conn, group: &str) -> Vec<(i32, i64)> {
    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
    g.group_id = GroupId(StrBytes::from_string(group.to_string()));
    g.member_epoch = -1;
    g.topics = None;
    let mut r = OffsetFetchRequest::default();
    r.groups = vec![g];
    let resp: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, 8, &r);
    let mut out: Vec<(i32, i64)> = resp.groups[0]
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition_index, p.committed_offset))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn committed_offsets_and_membership_survive_kill_9() {
    let mut broker = BrokerProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let mut conn = broker.connect();
    find_coordinator(&mut conn, "g");
    // Commits name partitions that exist, as Kafka requires.
    assert_eq!(
        common::create_topic(&mut conn, "t", 3).topics[0].error_code,
        0
    );
    for i in 0..200 {
        commit(&mut conn, &format!("g{}", i % 7), i % 3, i as i64);
    }
    // A stable group with one member and its assignment.
    let mut p = join_group_request::JoinGroupRequestProtocol::default();
    p.name = StrBytes::from_static_str("range");
    let mut j = JoinGroupRequest::default();
    j.group_id = GroupId(StrBytes::from_static_str("stable"));
    j.session_timeout_ms = 30_000;
    j.rebalance_timeout_ms = 30_000;
    j.protocol_type = StrBytes::from_static_str("consumer");
    j.protocols = vec![p];
    let joined: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 3, &j);
    assert_eq!(joined.error_code, 0);
    let mut a = sync_group_request::SyncGroupRequestAssignment::default();
    a.member_id = joined.member_id.clone();
    a.assignment = Bytes::from_static(b"mine");
    let mut s = SyncGroupRequest::default();
    s.group_id = j.group_id.clone();
    s.generation_id = joined.generation_id;
    s.member_id = joined.member_id.clone();
    s.assignments = vec![a];
    let synced: SyncGroupResponse = conn.call(ApiKey::SyncGroup, 3, &s);
    assert_eq!(synced.error_code, 0);
    let before: Vec<_> = (0..7)
        .map(|g| fetch_all(&mut conn, &format!("g{g}")))
        .collect();
    assert_eq!(before[0].len(), 3);

    broker.kill();
    broker.start_again();
    let mut conn = broker.connect();
    let after: Vec<_> = (0..7)
        .map(|g| fetch_all(&mut conn, &format!("g{g}")))
        .collect();
    assert_eq!(after, before);
    let mut d = DescribeGroupsRequest::default();
    d.groups = vec![j.group_id.clone()];
    let described: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, 5, &d);
    let g = &described.groups[0];
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.members[0].member_id, joined.member_id);
    assert_eq!(g.members[0].member_assignment, Bytes::from_static(b"mine"));
    // The member carries on in its generation.
    let mut h = HeartbeatRequest::default();
    h.group_id = j.group_id.clone();
    h.generation_id = joined.generation_id;
    h.member_id = joined.member_id.clone();
    let hb: HeartbeatResponse = conn.call(ApiKey::Heartbeat, 3, &h);
    assert_eq!(hb.error_code, 0);
}
