//! Static membership (KIP-345) and rebalance timing as Apache Kafka's group coordinator runs
//! them (issue 11, items 21 and 24): a static member that restarts gets its assignment back with
//! no rebalance, its old member id is fenced, a static member that does not rejoin keeps its
//! place until its session expires, and one that stops is removed when it does.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{find_coordinator, join_request, BrokerProcess, Conn};
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

const UNKNOWN_MEMBER_ID: i16 = 25;
const FENCED_INSTANCE_ID: i16 = 82;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn no_delay() -> BrokerProcess {
    BrokerProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"])
}

/// A JoinGroup request of a member with `instance` (static when set), whose subscription
/// metadata is `metadata`.
fn join_as(
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    metadata: &'static [u8],
) -> JoinGroupRequest {
    let mut r = join_request(group, member_id);
    r.group_instance_id = instance.map(s);
    r.protocols[0].metadata = Bytes::from_static(metadata);
    r
}

fn sync(
    conn: &mut Conn,
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
    assignments: &[(&str, &'static [u8])],
) -> SyncGroupResponse {
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member_id);
    r.group_instance_id = instance.map(s);
    r.generation_id = generation;
    r.assignments = assignments
        .iter()
        .map(|(m, a)| {
            let mut x = sync_group_request::SyncGroupRequestAssignment::default();
            x.member_id = s(m);
            x.assignment = Bytes::from_static(a);
            x
        })
        .collect();
    conn.call(ApiKey::SyncGroup, 5, &r)
}

fn heartbeat(
    conn: &mut Conn,
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
) -> i16 {
    let mut r = HeartbeatRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member_id);
    r.group_instance_id = instance.map(s);
    r.generation_id = generation;
    let resp: HeartbeatResponse = conn.call(ApiKey::Heartbeat, 4, &r);
    resp.error_code
}

fn describe(conn: &mut Conn, group: &str) -> describe_groups_response::DescribedGroup {
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(s(group))];
    let resp: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, 5, &r);
    resp.groups.into_iter().next().unwrap()
}

/// A static member alone in a stable group, with assignment `b"mine"`: its member id and
/// generation.
fn stable_static_member(conn: &mut Conn, group: &str, instance: &str) -> (String, i32) {
    let joined: JoinGroupResponse = conn.call(
        ApiKey::JoinGroup,
        5,
        &join_as(group, "", Some(instance), b"owned: p0, p1"),
    );
    assert_eq!(joined.error_code, 0);
    let id = joined.member_id.to_string();
    let synced = sync(
        conn,
        group,
        &id,
        Some(instance),
        joined.generation_id,
        &[(&id, b"mine")],
    );
    assert_eq!(synced.error_code, 0);
    (id, joined.generation_id)
}

#[test]
fn a_restarted_static_leader_gets_its_assignment_back_without_a_rebalance() {
    let b = no_delay();
    let mut conn = b.connect();
    find_coordinator(&mut conn, "g");
    let (old_id, generation) = stable_static_member(&mut conn, "restart", "a");
    // The same instance comes back with a new process: no member id, and a subscription whose
    // bytes differ (a restarted Java consumer owns no partitions yet) but whose protocol is the
    // same. Kafka keeps the generation and tells the leader (v9) to skip the assignment.
    let back: JoinGroupResponse = conn.call(
        ApiKey::JoinGroup,
        9,
        &join_as("restart", "", Some("a"), b"owned: none"),
    );
    assert_eq!(back.error_code, 0);
    assert_ne!(back.member_id.to_string(), old_id);
    assert_eq!(back.generation_id, generation, "no new generation");
    assert_eq!(back.leader, back.member_id);
    assert!(back.skip_assignment);
    assert_eq!(back.members.len(), 1);
    let new_id = back.member_id.to_string();
    let synced = sync(&mut conn, "restart", &new_id, Some("a"), generation, &[]);
    assert_eq!(synced.error_code, 0);
    assert_eq!(synced.assignment, Bytes::from_static(b"mine"));
    assert_eq!(
        describe(&mut conn, "restart").group_state.as_str(),
        "Stable"
    );
    // The old process is fenced, not merely unknown: its client stops instead of rejoining.
    assert_eq!(
        heartbeat(&mut conn, "restart", &old_id, Some("a"), generation),
        FENCED_INSTANCE_ID
    );
    let again = sync(&mut conn, "restart", &old_id, Some("a"), generation, &[]);
    assert_eq!(again.error_code, FENCED_INSTANCE_ID);
    assert_eq!(
        heartbeat(&mut conn, "restart", &new_id, Some("a"), generation),
        0
    );
}

#[test]
fn before_v9_a_restarted_static_leader_is_told_the_old_leader_and_syncs_as_a_follower() {
    let b = no_delay();
    let mut conn = b.connect();
    find_coordinator(&mut conn, "g");
    let (old_id, generation) = stable_static_member(&mut conn, "old-client", "a");
    let back: JoinGroupResponse = conn.call(
        ApiKey::JoinGroup,
        5,
        &join_as("old-client", "", Some("a"), b"owned: none"),
    );
    assert_eq!(
        (back.error_code, back.generation_id),
        (0, generation),
        "no rebalance"
    );
    assert_eq!(back.leader.to_string(), old_id, "Kafka reports the old id");
    assert!(back.members.is_empty());
    let synced = sync(
        &mut conn,
        "old-client",
        &back.member_id,
        Some("a"),
        generation,
        &[],
    );
    assert_eq!(synced.assignment, Bytes::from_static(b"mine"));
}

#[test]
fn a_static_member_that_does_not_rejoin_keeps_its_place_until_its_session_expires() {
    let b = no_delay();
    let mut a_conn = b.connect();
    find_coordinator(&mut a_conn, "g");
    let mut b_conn = b.connect();
    let group = "slow";
    // A: static, 30 s session; both rebalance timeouts 1 s.
    let mut a_req = join_as(group, "", Some("a"), b"a-sub");
    a_req.session_timeout_ms = 30_000;
    a_req.rebalance_timeout_ms = 1_000;
    let a: JoinGroupResponse = a_conn.call(ApiKey::JoinGroup, 5, &a_req);
    assert_eq!((a.error_code, a.generation_id), (0, 1));
    let a_id = a.member_id.to_string();
    // B joins; A rejoins so that both are in generation 2.
    let mut b_req = join_as(group, "", None, b"b-sub");
    b_req.rebalance_timeout_ms = 1_000;
    let asked: JoinGroupResponse = b_conn.call(ApiKey::JoinGroup, 5, &b_req);
    assert_eq!(asked.error_code, 79, "MEMBER_ID_REQUIRED");
    b_req.member_id = asked.member_id.clone();
    let b_cid = b_conn.send(ApiKey::JoinGroup, 5, &b_req);
    std::thread::sleep(Duration::from_millis(200));
    a_req.member_id = s(&a_id);
    let a2: JoinGroupResponse = a_conn.call(ApiKey::JoinGroup, 5, &a_req);
    let b2: JoinGroupResponse = b_conn.receive(ApiKey::JoinGroup, 5, b_cid);
    assert_eq!((a2.generation_id, b2.generation_id), (2, 2));
    let b_id = b2.member_id.to_string();
    assert_eq!(
        a2.leader.to_string(),
        a_id,
        "the leader that rejoined stays leader"
    );
    let mut follower = SyncGroupRequest::default();
    follower.group_id = GroupId(s(group));
    follower.generation_id = 2;
    follower.member_id = s(&b_id);
    let b_sync = b_conn.send(ApiKey::SyncGroup, 5, &follower);
    let assignments: &[(&str, &'static [u8])] = &[(&a_id, b"p0"), (&b_id, b"p1")];
    let synced = sync(&mut a_conn, group, &a_id, Some("a"), 2, assignments);
    assert_eq!(synced.error_code, 0);
    let b_synced: SyncGroupResponse = b_conn.receive(ApiKey::SyncGroup, 5, b_sync);
    assert_eq!(b_synced.assignment, Bytes::from_static(b"p1"));

    // B changes its subscription; A (not polling) never rejoins. After the rebalance timeout
    // the join completes with B as leader, and A is still a member with its subscription, so
    // B cannot take A's partitions before A's session expires.
    b_req.member_id = s(&b_id);
    b_req.protocols[0].metadata = Bytes::from_static(b"b-sub-2");
    let started = Instant::now();
    let b3: JoinGroupResponse = b_conn.call(ApiKey::JoinGroup, 5, &b_req);
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!((b3.error_code, b3.generation_id), (0, 3));
    assert_eq!(b3.leader.to_string(), b_id, "a member that rejoined leads");
    let mut members: Vec<(String, Bytes)> = b3
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.metadata.clone()))
        .collect();
    members.sort();
    let mut expected = vec![
        (a_id.clone(), Bytes::from_static(b"a-sub")),
        (b_id.clone(), Bytes::from_static(b"b-sub-2")),
    ];
    expected.sort();
    assert_eq!(members, expected, "the static member stays in the roster");
    let synced = sync(
        &mut b_conn,
        group,
        &b_id,
        None,
        3,
        &[(&a_id, b"p0"), (&b_id, b"p1")],
    );
    assert_eq!(synced.assignment, Bytes::from_static(b"p1"));
    assert_eq!(describe(&mut b_conn, group).members.len(), 2);
}

#[test]
fn a_static_member_that_stops_is_removed_when_its_session_expires() {
    let b = BrokerProcess::start(&[
        "--set",
        "group.initial.rebalance.delay.ms=0",
        "--set",
        "group.min.session.timeout.ms=1000",
    ]);
    let mut conn = b.connect();
    find_coordinator(&mut conn, "g");
    let mut first = join_as("closed", "", Some("a"), b"sub");
    first.session_timeout_ms = 1_500;
    let joined: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 5, &first);
    let old_id = joined.member_id.to_string();
    sync(
        &mut conn,
        "closed",
        &old_id,
        Some("a"),
        joined.generation_id,
        &[(&old_id, b"mine")],
    );
    // A second process with the same instance id takes over; the first is fenced.
    let second: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 5, &first);
    assert_eq!(second.error_code, 0);
    assert_eq!(
        heartbeat(&mut conn, "closed", &old_id, Some("a"), 1),
        FENCED_INSTANCE_ID
    );
    // The second closes as a static member does, without LeaveGroup: once its session has
    // passed, the group is empty and may be deleted.
    std::thread::sleep(Duration::from_millis(2_200));
    let d = describe(&mut conn, "closed");
    assert_eq!(d.group_state.as_str(), "Empty");
    assert!(d.members.is_empty());
    assert_eq!(
        d.protocol_type.as_str(),
        "consumer",
        "Kafka keeps the protocol type of an emptied group"
    );
    assert_eq!(
        heartbeat(&mut conn, "closed", &second.member_id, Some("a"), 1),
        UNKNOWN_MEMBER_ID
    );
    let mut r = DeleteGroupsRequest::default();
    r.groups_names = vec![GroupId(s("closed"))];
    let resp: DeleteGroupsResponse = conn.call(ApiKey::DeleteGroups, 2, &r);
    assert_eq!(resp.results[0].error_code, 0);
}
