//! Admin answers as Apache Kafka gives them (issue 11, item 26): DescribeConfigs for groups,
//! ListGroups for a group that emptied, and the authorized-operations bit sets of Metadata,
//! DescribeGroups and DescribeCluster.

mod common;

use common::{create_topic, find_coordinator, join_request, BrokerProcess, Conn};
use quipu_protocol::messages::describe_configs_request::DescribeConfigsResource;
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

const TOPIC_OPERATIONS: i32 = 3576;
const CLUSTER_OPERATIONS: i32 = 8096;
const GROUP_OPERATIONS: i32 = 3400;

fn describe_group_configs(
    conn: &mut Conn,
    group: &str,
    keys: Option<Vec<&str>>,
) -> DescribeConfigsResponse {
    let mut res = DescribeConfigsResource::default();
    res.resource_type = 32;
    res.resource_name = StrBytes::from_string(group.to_string());
    res.configuration_keys = keys.map(|k| {
        k.into_iter()
            .map(|k| StrBytes::from_string(k.to_string()))
            .collect()
    });
    let mut r = DescribeConfigsRequest::default();
    r.resources = vec![res];
    r.include_documentation = true;
    conn.call(ApiKey::DescribeConfigs, 4, &r)
}

#[test]
fn describe_configs_answers_group_resources_with_kafkas_defaults() {
    let b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    // Kafka answers any group name, existing or not.
    let resp = describe_group_configs(&mut conn, "no-such-group", None);
    let result = &resp.results[0];
    assert_eq!(result.error_code, 0, "{:?}", result.error_message);
    let entries: Vec<(String, Option<String>, i8, i8)> = result
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()),
                c.config_source,
                c.config_type,
            )
        })
        .collect();
    assert_eq!(entries.len(), 6);
    assert!(entries.contains(&(
        "consumer.session.timeout.ms".into(),
        Some("45000".into()),
        5,
        3
    )));
    assert!(entries.contains(&(
        "share.auto.offset.reset".into(),
        Some("latest".into()),
        5,
        2
    )));
    assert!(result
        .configs
        .iter()
        .all(|c| c.documentation.is_some() && !c.read_only));
    let one = describe_group_configs(&mut conn, "g", Some(vec!["consumer.heartbeat.interval.ms"]));
    assert_eq!(one.results[0].configs.len(), 1);
    assert_eq!(one.results[0].configs[0].value.as_deref(), Some("5000"));
    let empty = describe_group_configs(&mut conn, "", None);
    assert_eq!(empty.results[0].error_code, 42, "INVALID_REQUEST");
}

#[test]
fn a_group_that_emptied_is_still_listed_as_a_consumer_group() {
    let b = BrokerProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let mut conn = b.connect();
    find_coordinator(&mut conn, "emptied");
    let joined: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 3, &join_request("emptied", ""));
    assert_eq!(joined.error_code, 0);
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = GroupId(StrBytes::from_static_str("emptied"));
    leave.member_id = joined.member_id.clone();
    let left: LeaveGroupResponse = conn.call(ApiKey::LeaveGroup, 2, &leave);
    assert_eq!(left.error_code, 0);
    let listed: ListGroupsResponse =
        conn.call(ApiKey::ListGroups, 5, &ListGroupsRequest::default());
    let g = listed
        .groups
        .iter()
        .find(|g| g.group_id.as_str() == "emptied")
        .expect("listed");
    assert_eq!(
        (
            g.protocol_type.as_str(),
            g.group_state.as_str(),
            g.group_type.as_str()
        ),
        ("consumer", "Empty", "classic")
    );
}

#[test]
fn authorized_operations_are_kafkas_bit_sets_when_asked_for() {
    let b = BrokerProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let mut conn = b.connect();
    find_coordinator(&mut conn, "opsg");
    create_topic(&mut conn, "ops", 1);
    for v in 8..=12 {
        let mut t = metadata_request::MetadataRequestTopic::default();
        t.name = Some(common::name("ops"));
        let mut missing = metadata_request::MetadataRequestTopic::default();
        missing.name = Some(common::name("missing"));
        let mut r = MetadataRequest::default();
        r.topics = Some(vec![t, missing]);
        r.include_topic_authorized_operations = true;
        r.include_cluster_authorized_operations = v <= 10;
        let resp: MetadataResponse = conn.call(ApiKey::Metadata, v, &r);
        assert!(
            resp.topics
                .iter()
                .all(|t| t.topic_authorized_operations == TOPIC_OPERATIONS),
            "v{v}, including the unknown topic"
        );
        let cluster = if v <= 10 {
            CLUSTER_OPERATIONS
        } else {
            i32::MIN
        };
        assert_eq!(resp.cluster_authorized_operations, cluster, "v{v}");
        r.include_topic_authorized_operations = false;
        r.include_cluster_authorized_operations = false;
        let plain: MetadataResponse = conn.call(ApiKey::Metadata, v, &r);
        assert_eq!(plain.topics[0].topic_authorized_operations, i32::MIN);
        assert_eq!(plain.cluster_authorized_operations, i32::MIN);
    }
    let joined: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 3, &join_request("opsg", ""));
    assert_eq!(joined.error_code, 0);
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(StrBytes::from_static_str("opsg"))];
    r.include_authorized_operations = true;
    let resp: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, 5, &r);
    assert_eq!(resp.groups[0].authorized_operations, GROUP_OPERATIONS);
    r.include_authorized_operations = false;
    let resp: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, 5, &r);
    assert_eq!(resp.groups[0].authorized_operations, i32::MIN);
    for v in 0..=2 {
        let mut r = DescribeClusterRequest::default();
        r.endpoint_type = 1;
        let resp: DescribeClusterResponse = conn.call(ApiKey::DescribeCluster, v, &r);
        assert_eq!(resp.cluster_authorized_operations, i32::MIN);
        if v >= 1 {
            r.endpoint_type = 2;
            let wrong: DescribeClusterResponse = conn.call(ApiKey::DescribeCluster, v, &r);
            assert_eq!(wrong.error_code, 114, "MISMATCHED_ENDPOINT_TYPE");
        }
    }
}
