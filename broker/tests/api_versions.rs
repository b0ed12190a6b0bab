//! Every API version that ApiVersions advertises is served: each is called at every version, the
//! response decodes at that version with nothing left over, and it says what Kafka would.

mod common;

use bytes::Bytes;
use common::{batch, create_topic, join_request, name, BrokerProcess, Conn};
use quipu_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use quipu_protocol::messages::create_topics_request::CreatableTopic;
use quipu_protocol::messages::delete_topics_request::DeleteTopicState;
use quipu_protocol::messages::describe_configs_request::DescribeConfigsResource;
use quipu_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use quipu_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use quipu_protocol::messages::metadata_request::MetadataRequestTopic;
use quipu_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

fn advertised(conn: &mut Conn) -> Vec<(ApiKey, i16, i16)> {
    let r: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    r.api_keys
        .iter()
        .map(|k| {
            (
                ApiKey::try_from(k.api_key).unwrap(),
                k.min_version,
                k.max_version,
            )
        })
        .collect()
}

fn create(conn: &mut Conn, topic: &str, partitions: i32) {
    assert_eq!(
        create_topic(conn, topic, partitions).topics[0].error_code,
        0
    );
}

fn call_at(conn: &mut Conn, api: ApiKey, v: i16) {
    match api {
        ApiKey::ApiVersions => {
            let r: ApiVersionsResponse = conn.call(api, v, &ApiVersionsRequest::default());
            assert_eq!(r.error_code, 0);
            assert_eq!(r.api_keys.len(), 31);
        }
        ApiKey::Metadata => {
            let mut t = MetadataRequestTopic::default();
            t.name = Some(name("vt"));
            let mut r = MetadataRequest::default();
            r.topics = Some(vec![t]);
            r.allow_auto_topic_creation = true;
            let resp: MetadataResponse = conn.call(api, v, &r);
            assert_eq!(resp.brokers.len(), 1);
            assert_eq!(resp.topics.len(), 1);
            assert_eq!(resp.topics[0].error_code, 0);
            assert_eq!(resp.topics[0].partitions.len(), 1);
            assert_eq!(resp.topics[0].partitions[0].leader_id.0, 0);
        }
        ApiKey::Produce => {
            let mut pd = PartitionProduceData::default();
            pd.index = 0;
            pd.records = Some(Bytes::from(batch(2)));
            let mut td = TopicProduceData::default();
            td.name = name("vt");
            td.partition_data = vec![pd];
            let mut r = ProduceRequest::default();
            r.acks = -1;
            r.timeout_ms = 5_000;
            r.topic_data = vec![td];
            let resp: ProduceResponse = conn.call(api, v, &r);
            let p = &resp.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 0);
            assert!(p.base_offset >= 0);
        }
        ApiKey::Fetch => {
            let mut fp = FetchPartition::default();
            fp.partition = 0;
            fp.fetch_offset = 0;
            fp.partition_max_bytes = 1 << 20;
            fp.current_leader_epoch = -1;
            let mut ft = FetchTopic::default();
            ft.topic = name("vt");
            ft.partitions = vec![fp];
            let mut r = FetchRequest::default();
            r.replica_id = BrokerId(-1);
            r.max_wait_ms = 100;
            r.min_bytes = 1;
            r.max_bytes = 1 << 20;
            r.session_epoch = -1;
            r.topics = vec![ft];
            let resp: FetchResponse = conn.call(api, v, &r);
            let p = &resp.responses[0].partitions[0];
            assert_eq!(p.error_code, 0);
            assert!(p.high_watermark >= 2);
            assert!(p.records.as_ref().is_some_and(|r| !r.is_empty()));
        }
        ApiKey::ListOffsets => {
            let mut results = Vec::new();
            let mut stamps = vec![-1i64, -2, 1_000];
            if v >= 7 {
                stamps.push(-3); // the record with the largest timestamp
            }
            for ts in stamps {
                let mut p = ListOffsetsPartition::default();
                p.partition_index = 0;
                p.timestamp = ts;
                p.current_leader_epoch = -1;
                let mut t = ListOffsetsTopic::default();
                t.name = name("vt");
                t.partitions = vec![p];
                let mut r = ListOffsetsRequest::default();
                r.replica_id = BrokerId(-1);
                r.topics = vec![t];
                let resp: ListOffsetsResponse = conn.call(api, v, &r);
                let p = &resp.topics[0].partitions[0];
                assert_eq!(p.error_code, 0);
                results.push(p.offset);
            }
            assert!(results[0] >= 2, "latest {results:?}");
            assert_eq!(results[1], 0, "earliest");
            assert_eq!(results[2], 0, "first record at or after 1000");
            if v >= 7 {
                // Every batch holds timestamps 1000 and 1001: the first 1001 is offset 1.
                assert_eq!(results[3], 1, "max timestamp");
            }
        }
        ApiKey::CreateTopics => {
            let mut t = CreatableTopic::default();
            t.name = name(&format!("ct-{v}"));
            t.num_partitions = 2;
            t.replication_factor = -1;
            let mut r = CreateTopicsRequest::default();
            r.topics = vec![t];
            let resp: CreateTopicsResponse = conn.call(api, v, &r);
            assert_eq!(
                resp.topics[0].error_code, 0,
                "{:?}",
                resp.topics[0].error_message
            );
            if v >= 5 {
                assert_eq!(resp.topics[0].num_partitions, 2);
            }
        }
        ApiKey::DeleteTopics => {
            let topic = format!("dt-{v}");
            create(conn, &topic, 1);
            let mut r = DeleteTopicsRequest::default();
            if v >= 6 {
                let mut s = DeleteTopicState::default();
                s.name = Some(name(&topic));
                r.topics = vec![s];
            } else {
                r.topic_names = vec![name(&topic)];
            }
            let resp: DeleteTopicsResponse = conn.call(api, v, &r);
            assert_eq!(resp.responses[0].error_code, 0);
            let again: DeleteTopicsResponse = conn.call(api, v, &r);
            assert_eq!(
                again.responses[0].error_code, 3,
                "UNKNOWN_TOPIC_OR_PARTITION once deleted"
            );
        }
        ApiKey::DescribeConfigs => {
            let mut res = DescribeConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = StrBytes::from_static_str("vt");
            let mut r = DescribeConfigsRequest::default();
            r.resources = vec![res];
            r.include_synonyms = true;
            let resp: DescribeConfigsResponse = conn.call(api, v, &r);
            assert_eq!(resp.results[0].error_code, 0);
            let retention = resp.results[0]
                .configs
                .iter()
                .find(|c| c.name.as_str() == "retention.ms")
                .unwrap_or_else(|| panic!("v{v}: {:?}", resp.results[0]));
            assert_eq!(retention.value.as_deref(), Some("604800000"));
        }
        ApiKey::CreatePartitions => {
            let topic = format!("cp-{v}");
            create(conn, &topic, 1);
            let mut t = CreatePartitionsTopic::default();
            t.name = name(&topic);
            t.count = 3;
            t.assignments = None; // as clients send it: an empty list is a (wrong) assignment
            let mut r = CreatePartitionsRequest::default();
            r.topics = vec![t];
            let resp: CreatePartitionsResponse = conn.call(api, v, &r);
            assert_eq!(resp.results[0].error_code, 0);
            let again: CreatePartitionsResponse = conn.call(api, v, &r);
            assert_eq!(
                again.results[0].error_code, 37,
                "INVALID_PARTITIONS when not growing"
            );
        }
        ApiKey::DeleteRecords => {
            let topic = format!("dr-{v}");
            create(conn, &topic, 1);
            for _ in 0..3 {
                let mut pd = PartitionProduceData::default();
                pd.records = Some(Bytes::from(batch(2)));
                let mut td = TopicProduceData::default();
                td.name = name(&topic);
                td.partition_data = vec![pd];
                let mut r = ProduceRequest::default();
                r.acks = 1;
                r.timeout_ms = 5_000;
                r.topic_data = vec![td];
                let _: ProduceResponse = conn.call(ApiKey::Produce, 9, &r);
            }
            let delete = |offset: i64| {
                let mut p = delete_records_request::DeleteRecordsPartition::default();
                p.partition_index = 0;
                p.offset = offset;
                let mut t = delete_records_request::DeleteRecordsTopic::default();
                t.name = name(&topic);
                t.partitions = vec![p];
                let mut r = DeleteRecordsRequest::default();
                r.topics = vec![t];
                r.timeout_ms = 5_000;
                r
            };
            let resp: DeleteRecordsResponse = conn.call(api, v, &delete(3));
            let p = &resp.topics[0].partitions[0];
            assert_eq!((p.error_code, p.low_watermark), (0, 3));
            let resp: DeleteRecordsResponse = conn.call(api, v, &delete(7));
            assert_eq!(
                resp.topics[0].partitions[0].error_code, 1,
                "OFFSET_OUT_OF_RANGE past the high watermark"
            );
            let resp: DeleteRecordsResponse = conn.call(api, v, &delete(-1));
            assert_eq!(
                resp.topics[0].partitions[0].low_watermark, 6,
                "-1 means the high watermark"
            );
        }
        ApiKey::AlterConfigs => {
            let topic = format!("ac-{v}");
            create(conn, &topic, 1);
            let alter = |configs: &[(&str, &str)], resource_type: i8| {
                let mut res = alter_configs_request::AlterConfigsResource::default();
                res.resource_type = resource_type;
                res.resource_name = StrBytes::from_string(if resource_type == 2 {
                    topic.clone()
                } else {
                    "0".into()
                });
                res.configs = configs
                    .iter()
                    .map(|(k, v)| {
                        let mut c = alter_configs_request::AlterableConfig::default();
                        c.name = StrBytes::from_string(k.to_string());
                        c.value = Some(StrBytes::from_string(v.to_string()));
                        c
                    })
                    .collect();
                let mut r = AlterConfigsRequest::default();
                r.resources = vec![res];
                r
            };
            let resp: AlterConfigsResponse = conn.call(
                api,
                v,
                &alter(&[("retention.ms", "1000"), ("segment.ms", "5000")], 2),
            );
            assert_eq!(
                resp.responses[0].error_code, 0,
                "{:?}",
                resp.responses[0].error_message
            );
            assert_eq!(
                describe(conn, &topic, "retention.ms"),
                ("1000".to_string(), 1)
            );
            // Replacing the set drops retention.ms back to its default.
            let resp: AlterConfigsResponse =
                conn.call(api, v, &alter(&[("segment.ms", "6000")], 2));
            assert_eq!(resp.responses[0].error_code, 0);
            assert_eq!(
                describe(conn, &topic, "retention.ms"),
                ("604800000".to_string(), 5)
            );
            assert_eq!(
                describe(conn, &topic, "segment.ms"),
                ("6000".to_string(), 1)
            );
            let resp: AlterConfigsResponse = conn.call(api, v, &alter(&[("retention.mz", "1")], 2));
            assert_eq!(resp.responses[0].error_code, 40, "INVALID_CONFIG");
            let resp: AlterConfigsResponse =
                conn.call(api, v, &alter(&[("num.partitions", "3")], 4));
            assert_eq!(
                resp.responses[0].error_code, 42,
                "INVALID_REQUEST for static broker settings"
            );
        }
        ApiKey::IncrementalAlterConfigs => {
            let topic = format!("iac-{v}");
            create(conn, &topic, 1);
            let alter = |name: &str, op: i8, value: Option<&str>| {
                let mut c = incremental_alter_configs_request::AlterableConfig::default();
                c.name = StrBytes::from_string(name.to_string());
                c.config_operation = op;
                c.value = value.map(|v| StrBytes::from_string(v.to_string()));
                let mut res = incremental_alter_configs_request::AlterConfigsResource::default();
                res.resource_type = 2;
                res.resource_name = StrBytes::from_string(topic.clone());
                res.configs = vec![c];
                let mut r = IncrementalAlterConfigsRequest::default();
                r.resources = vec![res];
                r
            };
            let resp: IncrementalAlterConfigsResponse =
                conn.call(api, v, &alter("retention.bytes", 0, Some("123456")));
            assert_eq!(
                resp.responses[0].error_code, 0,
                "{:?}",
                resp.responses[0].error_message
            );
            assert_eq!(
                describe(conn, &topic, "retention.bytes"),
                ("123456".to_string(), 1)
            );
            let resp: IncrementalAlterConfigsResponse =
                conn.call(api, v, &alter("retention.bytes", 1, None));
            assert_eq!(resp.responses[0].error_code, 0);
            assert_eq!(
                describe(conn, &topic, "retention.bytes"),
                ("-1".to_string(), 5)
            );
            let resp: IncrementalAlterConfigsResponse =
                conn.call(api, v, &alter("segment.bytes", 0, Some("5")));
            assert_eq!(
                resp.responses[0].error_code, 40,
                "INVALID_CONFIG below the minimum"
            );
        }
        ApiKey::OffsetForLeaderEpoch => {
            let ask = |epoch: i32, current: i32| {
                let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
                p.partition = 0;
                p.leader_epoch = epoch;
                p.current_leader_epoch = current;
                let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
                t.topic = name("vt");
                t.partitions = vec![p];
                let mut r = OffsetForLeaderEpochRequest::default();
                r.replica_id = BrokerId(-1);
                r.topics = vec![t];
                r
            };
            let hw = {
                let resp: OffsetForLeaderEpochResponse = conn.call(api, v, &ask(0, -1));
                let p = &resp.topics[0].partitions[0];
                assert_eq!((p.error_code, p.leader_epoch), (0, 0));
                p.end_offset
            };
            assert!(hw >= 2, "epoch 0 ends at the log end");
            let resp: OffsetForLeaderEpochResponse = conn.call(api, v, &ask(5, 0));
            assert_eq!(
                (
                    resp.topics[0].partitions[0].leader_epoch,
                    resp.topics[0].partitions[0].end_offset
                ),
                (0, hw)
            );
            let resp: OffsetForLeaderEpochResponse = conn.call(api, v, &ask(0, 3));
            assert_eq!(
                resp.topics[0].partitions[0].error_code, 75,
                "UNKNOWN_LEADER_EPOCH"
            );
        }
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = None;
            r.transaction_timeout_ms = 60_000;
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
            let first: InitProducerIdResponse = conn.call(api, v, &r);
            let second: InitProducerIdResponse = conn.call(api, v, &r);
            assert_eq!((first.error_code, first.producer_epoch), (0, 0));
            assert!(first.producer_id.0 >= 0);
            assert_ne!(
                first.producer_id, second.producer_id,
                "ids are never reused"
            );
            // The id works for idempotent produce.
            let records = quipu_protocol::testing::idempotent_batch(3, first.producer_id.0, 0, 0);
            let req = common::produce_request("vt", 0, -1, records.clone());
            let a: ProduceResponse = conn.call(ApiKey::Produce, 9, &req);
            let b: ProduceResponse = conn.call(ApiKey::Produce, 9, &req);
            let (a, b) = (
                &a.responses[0].partition_responses[0],
                &b.responses[0].partition_responses[0],
            );
            assert_eq!((a.error_code, b.error_code), (0, 0));
            assert_eq!(
                a.base_offset, b.base_offset,
                "a retry is answered with the original offset"
            );
            r.transactional_id = Some(TransactionalId(StrBytes::from_static_str("txn")));
            let refused: InitProducerIdResponse = conn.call(api, v, &r);
            assert_eq!(refused.error_code, 42, "INVALID_REQUEST: no transactions");
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            let key = StrBytes::from_string(format!("fc-{v}"));
            if v >= 4 {
                r.coordinator_keys = vec![key.clone()];
            } else {
                r.key = key.clone();
            }
            let resp: FindCoordinatorResponse = conn.call(api, v, &r);
            let (code, node, port) = if v >= 4 {
                let c = &resp.coordinators[0];
                assert_eq!(c.key, key);
                (c.error_code, c.node_id.0, c.port)
            } else {
                (resp.error_code, resp.node_id.0, resp.port)
            };
            assert_eq!((code, node), (0, 0));
            assert!(port > 0);
            if v >= 1 {
                // No transaction coordinator: an error clients do not retry.
                r.key_type = 1;
                let resp: FindCoordinatorResponse = conn.call(api, v, &r);
                let code = if v >= 4 {
                    resp.coordinators[0].error_code
                } else {
                    resp.error_code
                };
                assert_eq!(
                    code, 31,
                    "CLUSTER_AUTHORIZATION_FAILED: clients fail at once"
                );
            }
        }
        ApiKey::JoinGroup => {
            let group = format!("jg-{v}");
            let mut r = join_request(&group, "");
            if v == 0 {
                r.rebalance_timeout_ms = -1; // not in v0: the session timeout serves
            }
            let mut resp: JoinGroupResponse = conn.call(api, v, &r);
            if v >= 4 {
                assert_eq!(resp.error_code, 79, "MEMBER_ID_REQUIRED");
                assert!(!resp.member_id.is_empty());
                r.member_id = resp.member_id.clone();
                resp = conn.call(api, v, &r);
            }
            assert_eq!(resp.error_code, 0);
            assert_eq!(resp.generation_id, 1);
            assert_eq!(resp.leader, resp.member_id, "the only member leads");
            assert_eq!(resp.members.len(), 1);
            assert_eq!(resp.members[0].metadata, Bytes::from_static(b"meta"));
            assert_eq!(resp.protocol_name.as_deref(), Some("range"));
            // A member id the group never gave out.
            r.member_id = StrBytes::from_static_str("stranger");
            let resp: JoinGroupResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 25, "UNKNOWN_MEMBER_ID");
        }
        ApiKey::SyncGroup => {
            let group = format!("sg-{v}");
            let (member, generation) = join(conn, &group);
            let mut r = SyncGroupRequest::default();
            r.group_id = GroupId(StrBytes::from_string(group));
            r.generation_id = generation;
            r.member_id = member.clone();
            if v >= 5 {
                r.protocol_type = Some(StrBytes::from_static_str("consumer"));
                r.protocol_name = Some(StrBytes::from_static_str("range"));
            }
            let mut a = sync_group_request::SyncGroupRequestAssignment::default();
            a.member_id = member;
            a.assignment = Bytes::from_static(b"assigned");
            r.assignments = vec![a];
            let resp: SyncGroupResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 0);
            assert_eq!(resp.assignment, Bytes::from_static(b"assigned"));
            r.generation_id += 1;
            let resp: SyncGroupResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 22, "ILLEGAL_GENERATION");
        }
        ApiKey::Heartbeat => {
            let group = format!("hb-{v}");
            let (member, generation) = join_and_sync(conn, &group);
            let mut r = HeartbeatRequest::default();
            r.group_id = GroupId(StrBytes::from_string(group));
            r.generation_id = generation;
            r.member_id = member;
            let resp: HeartbeatResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 0);
            r.generation_id = generation + 5;
            let resp: HeartbeatResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 22, "ILLEGAL_GENERATION");
            r.member_id = StrBytes::from_static_str("stranger");
            let resp: HeartbeatResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 25, "UNKNOWN_MEMBER_ID");
        }
        ApiKey::LeaveGroup => {
            let group = format!("lg-{v}");
            let (member, _) = join_and_sync(conn, &group);
            let mut r = LeaveGroupRequest::default();
            r.group_id = GroupId(StrBytes::from_string(group.clone()));
            if v >= 3 {
                let mut m = leave_group_request::MemberIdentity::default();
                m.member_id = member;
                r.members = vec![m];
            } else {
                r.member_id = member;
            }
            let resp: LeaveGroupResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 0);
            if v >= 3 {
                assert_eq!(resp.members[0].error_code, 0);
            }
            assert_eq!(describe_group(conn, &group).group_state.as_str(), "Empty");
        }
        ApiKey::OffsetCommit => {
            let group = format!("oc-{v}");
            let mut r = commit_request(&group, 42);
            let resp: OffsetCommitResponse = conn.call(api, v, &r);
            assert_eq!(resp.topics[0].partitions[0].error_code, 0);
            assert_eq!(fetch_offset(conn, &group, 8), 42);
            // A member of a group that does not exist.
            r.generation_id_or_member_epoch = 3;
            r.member_id = StrBytes::from_static_str("stranger");
            r.group_id = GroupId(StrBytes::from_string(format!("none-{v}")));
            let resp: OffsetCommitResponse = conn.call(api, v, &r);
            let (code, name) = if v >= 9 {
                (69, "GROUP_ID_NOT_FOUND")
            } else {
                (22, "ILLEGAL_GENERATION")
            };
            assert_eq!(resp.topics[0].partitions[0].error_code, code, "{name}");
        }
        ApiKey::OffsetFetch => {
            let group = format!("of-{v}");
            let resp: OffsetCommitResponse =
                conn.call(ApiKey::OffsetCommit, 8, &commit_request(&group, 7));
            assert_eq!(resp.topics[0].partitions[0].error_code, 0);
            assert_eq!(fetch_offset(conn, &group, v), 7);
            assert_eq!(fetch_offset(conn, "never-committed", v), -1);
        }
        ApiKey::OffsetDelete => {
            let group = format!("od-{v}");
            let resp: OffsetCommitResponse =
                conn.call(ApiKey::OffsetCommit, 8, &commit_request(&group, 9));
            assert_eq!(resp.topics[0].partitions[0].error_code, 0);
            let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
            p.partition_index = 0;
            let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
            t.name = name("vt");
            t.partitions = vec![p];
            let mut r = OffsetDeleteRequest::default();
            r.group_id = GroupId(StrBytes::from_string(group.clone()));
            r.topics = vec![t];
            let resp: OffsetDeleteResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 0);
            assert_eq!(resp.topics[0].partitions[0].error_code, 0);
            assert_eq!(fetch_offset(conn, &group, 8), -1);
            r.group_id = GroupId(StrBytes::from_static_str("no-such-group"));
            let resp: OffsetDeleteResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 69, "GROUP_ID_NOT_FOUND");
        }
        ApiKey::ListGroups => {
            let group = format!("lsg-{v}");
            join_and_sync(conn, &group);
            let resp: ListGroupsResponse = conn.call(api, v, &ListGroupsRequest::default());
            assert_eq!(resp.error_code, 0);
            let g = resp
                .groups
                .iter()
                .find(|g| g.group_id.as_str() == group)
                .expect("listed");
            assert_eq!(g.protocol_type.as_str(), "consumer");
            if v >= 4 {
                assert_eq!(g.group_state.as_str(), "Stable");
                let mut r = ListGroupsRequest::default();
                r.states_filter = vec![StrBytes::from_static_str("Empty")];
                let resp: ListGroupsResponse = conn.call(api, v, &r);
                assert!(resp.groups.iter().all(|g| g.group_id.as_str() != group));
            }
        }
        ApiKey::DescribeGroups => {
            let group = format!("dg-{v}");
            let (member, _) = join_and_sync(conn, &group);
            let mut r = DescribeGroupsRequest::default();
            r.groups = vec![
                GroupId(StrBytes::from_string(group)),
                GroupId(StrBytes::from_static_str("ghost")),
            ];
            let resp: DescribeGroupsResponse = conn.call(api, v, &r);
            let g = &resp.groups[0];
            assert_eq!(
                (
                    g.error_code,
                    g.group_state.as_str(),
                    g.protocol_data.as_str()
                ),
                (0, "Stable", "range")
            );
            assert_eq!(g.members.len(), 1);
            assert_eq!(g.members[0].member_id, member);
            assert_eq!(
                g.members[0].member_assignment,
                Bytes::from_static(b"assigned")
            );
            assert_eq!(g.members[0].client_host.as_str(), "/127.0.0.1");
            let ghost = &resp.groups[1];
            assert_eq!(ghost.group_state.as_str(), "Dead");
            assert_eq!(ghost.error_code, if v >= 6 { 69 } else { 0 });
        }
        ApiKey::DeleteGroups => {
            let group = format!("del-{v}");
            let resp: OffsetCommitResponse =
                conn.call(ApiKey::OffsetCommit, 8, &commit_request(&group, 1));
            assert_eq!(resp.topics[0].partitions[0].error_code, 0);
            let busy = format!("busy-{v}");
            join_and_sync(conn, &busy);
            let mut r = DeleteGroupsRequest::default();
            r.groups_names = vec![
                GroupId(StrBytes::from_string(group.clone())),
                GroupId(StrBytes::from_string(busy)),
                GroupId(StrBytes::from_static_str("no-such-group")),
            ];
            let resp: DeleteGroupsResponse = conn.call(api, v, &r);
            let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
            assert_eq!(
                codes,
                vec![0, 68, 69],
                "deleted, NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND"
            );
            assert_eq!(fetch_offset(conn, &group, 8), -1);
        }
        ApiKey::DescribeCluster => {
            let mut r = DescribeClusterRequest::default();
            r.include_cluster_authorized_operations = true;
            r.endpoint_type = 1;
            let resp: DescribeClusterResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 0, "v{v}: {:?}", resp.error_message);
            assert_eq!(resp.brokers.len(), 1);
            assert!(!resp.cluster_id.is_empty());
            assert_eq!(resp.controller_id, resp.brokers[0].broker_id);
            assert_eq!(resp.cluster_authorized_operations, 8096);
        }
        ApiKey::DescribeQuorum => {
            let mut p = describe_quorum_request::PartitionData::default();
            p.partition_index = 0;
            let mut other = describe_quorum_request::PartitionData::default();
            other.partition_index = 1;
            let mut t = describe_quorum_request::TopicData::default();
            t.topic_name = name("__cluster_metadata");
            t.partitions = vec![p, other];
            let mut r = DescribeQuorumRequest::default();
            r.topics = vec![t];
            let resp: DescribeQuorumResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 0);
            let parts = &resp.topics[0].partitions;
            assert_eq!((parts[0].error_code, parts[0].leader_id.0), (0, 0), "v{v}");
            assert!(parts[0].high_watermark > 0, "the node's own records");
            assert_eq!(parts[0].current_voters.len(), 1);
            assert_eq!(
                parts[0].current_voters[0].log_end_offset,
                parts[0].high_watermark
            );
            assert_eq!(parts[1].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
        }
        ApiKey::ElectLeaders => {
            let mut t = elect_leaders_request::TopicPartitions::default();
            t.topic = name("vt");
            t.partitions = vec![0, 9];
            let mut r = ElectLeadersRequest::default();
            r.topic_partitions = Some(vec![t]);
            r.timeout_ms = 5_000;
            let resp: ElectLeadersResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 0);
            let results = &resp.replica_election_results[0].partition_result;
            // The one replica leads already; a partition that does not exist is unknown.
            assert_eq!(
                (results[0].error_code, results[1].error_code),
                (84, 3),
                "v{v}"
            );
        }
        ApiKey::AlterPartitionReassignments => {
            let partition = |index: i32, replicas: Option<Vec<i32>>| {
                let mut p = alter_partition_reassignments_request::ReassignablePartition::default();
                p.partition_index = index;
                p.replicas = replicas.map(|r| r.into_iter().map(BrokerId).collect());
                p
            };
            let mut t = alter_partition_reassignments_request::ReassignableTopic::default();
            t.name = name("vt");
            t.partitions = vec![partition(0, Some(vec![7])), partition(0, None)];
            let mut r = AlterPartitionReassignmentsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 5_000;
            let resp: AlterPartitionReassignmentsResponse = conn.call(api, v, &r);
            assert_eq!(resp.error_code, 0);
            let parts = &resp.responses[0].partitions;
            // Broker 7 is not registered; nothing is in progress to cancel.
            assert_eq!((parts[0].error_code, parts[1].error_code), (39, 85), "v{v}");
        }
        ApiKey::DescribeLogDirs => {
            let mut t = describe_log_dirs_request::DescribableLogDirTopic::default();
            t.topic = name("vt");
            t.partitions = vec![0];
            let mut r = DescribeLogDirsRequest::default();
            r.topics = Some(vec![t]);
            let resp: DescribeLogDirsResponse = conn.call(api, v, &r);
            let dir = &resp.results[0];
            assert_eq!((dir.error_code, dir.topics.len()), (0, 1), "v{v}");
            assert!(dir.topics[0].partitions[0].partition_size > 0);
            if v >= 4 {
                assert!(dir.total_bytes > 0 && dir.usable_bytes > 0);
            }
        }
        ApiKey::ListPartitionReassignments => {
            let r = ListPartitionReassignmentsRequest::default();
            let resp: ListPartitionReassignmentsResponse = conn.call(api, v, &r);
            assert_eq!((resp.error_code, resp.topics.len()), (0, 0));
        }
        other => panic!("{other:?} is advertised but this test does not call it"),
    }
}

/// Joins `group` alone (JoinGroup v9, with the member-id round); returns member id and generation.
fn join(conn: &mut Conn, group: &str) -> (StrBytes, i32) {
    let first: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 9, &join_request(group, ""));
    assert_eq!(first.error_code, 79);
    let resp: JoinGroupResponse =
        conn.call(ApiKey::JoinGroup, 9, &join_request(group, &first.member_id));
    assert_eq!(resp.error_code, 0);
    (resp.member_id, resp.generation_id)
}

/// Joins `group` alone and assigns itself `assigned`: the group is then stable.
fn join_and_sync(conn: &mut Conn, group: &str) -> (StrBytes, i32) {
    let (member, generation) = join(conn, group);
    let mut a = sync_group_request::SyncGroupRequestAssignment::default();
    a.member_id = member.clone();
    a.assignment = Bytes::from_static(b"assigned");
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.generation_id = generation;
    r.member_id = member.clone();
    r.assignments = vec![a];
    let resp: SyncGroupResponse = conn.call(ApiKey::SyncGroup, 5, &r);
    assert_eq!(resp.error_code, 0);
    (member, generation)
}

fn describe_group(conn: &mut Conn, group: &str) -> describe_groups_response::DescribedGroup {
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(StrBytes::from_string(group.to_string()))];
    let mut resp: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, 5, &r);
    resp.groups.remove(0)
}

/// A commit of `offset` for partition 0 of `vt` outside group management (generation -1).
fn commit_request(group: &str, offset: i64) -> OffsetCommitRequest {
    let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    p.committed_leader_epoch = -1;
    p.committed_metadata = Some(StrBytes::from_static_str("meta"));
    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = name("vt");
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.generation_id_or_member_epoch = -1;
    r.retention_time_ms = -1;
    r.topics = vec![t];
    r
}

/// The committed offset of partition 0 of `vt` for `group`, through OffsetFetch `v`.
fn fetch_offset(conn: &mut Conn, group: &str, v: i16) -> i64 {
    let mut r = OffsetFetchRequest::default();
    if v >= 8 {
        let mut t = offset_fetch_request::OffsetFetchRequestTopics::default();
        t.name = name("vt");
        t.partition_indexes = vec![0];
        let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
        g.group_id = GroupId(StrBytes::from_string(group.to_string()));
        g.member_epoch = -1;
        g.topics = Some(vec![t]);
        r.groups = vec![g];
        let resp: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, v, &r);
        assert_eq!(resp.groups[0].error_code, 0);
        let p = &resp.groups[0].topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        return p.committed_offset;
    }
    let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
    t.name = name("vt");
    t.partition_indexes = vec![0];
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.topics = Some(vec![t]);
    let resp: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, v, &r);
    assert_eq!(resp.error_code, 0);
    resp.topics[0].partitions[0].committed_offset
}

/// A topic setting's value and source, from DescribeConfigs.
fn describe(conn: &mut Conn, topic: &str, key: &str) -> (String, i8) {
    let mut res = DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(topic.to_string());
    res.configuration_keys = Some(vec![StrBytes::from_string(key.to_string())]);
    let mut r = DescribeConfigsRequest::default();
    r.resources = vec![res];
    let resp: DescribeConfigsResponse = conn.call(ApiKey::DescribeConfigs, 4, &r);
    let c = &resp.results[0].configs[0];
    (c.value.as_ref().unwrap().to_string(), c.config_source)
}

#[test]
fn every_advertised_version_of_every_api_is_served() {
    let b = BrokerProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let mut conn = b.connect();
    let apis = advertised(&mut conn);
    // Metadata first, so that the topic the others use exists.
    for (api, min, max) in apis
        .iter()
        .filter(|a| a.0 == ApiKey::Metadata)
        .chain(apis.iter().filter(|a| a.0 != ApiKey::Metadata))
    {
        for v in *min..=*max {
            if matches!(
                *api,
                ApiKey::Fetch | ApiKey::ListOffsets | ApiKey::OffsetForLeaderEpoch
            ) {
                // Data to read.
                call_at(&mut conn, ApiKey::Produce, 9);
            }
            call_at(&mut conn, *api, v);
        }
    }
}

#[test]
fn responses_keep_request_order_when_a_long_poll_waits() {
    let b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    create(&mut conn, "order", 1);
    // A fetch that waits 1 s for data that never comes, then an ApiVersions: the ApiVersions is
    // handled at once, but its response must follow the fetch's.
    let mut fp = FetchPartition::default();
    fp.partition_max_bytes = 1 << 20;
    fp.current_leader_epoch = -1;
    let mut ft = FetchTopic::default();
    ft.topic = name("order");
    ft.partitions = vec![fp];
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(-1);
    r.max_wait_ms = 1_000;
    r.min_bytes = 1;
    r.max_bytes = 1 << 20;
    r.session_epoch = -1;
    r.topics = vec![ft];
    let started = std::time::Instant::now();
    let fetch_id = conn.send(ApiKey::Fetch, 12, &r);
    let versions_id = conn.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let _: FetchResponse = conn.receive(ApiKey::Fetch, 12, fetch_id);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    let _: ApiVersionsResponse = conn.receive(ApiKey::ApiVersions, 3, versions_id);
}

#[test]
fn a_long_poll_answers_as_soon_as_data_arrives() {
    let b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    create(&mut conn, "poll", 1);
    let mut fp = FetchPartition::default();
    fp.partition_max_bytes = 1 << 20;
    fp.current_leader_epoch = -1;
    let mut ft = FetchTopic::default();
    ft.topic = name("poll");
    ft.partitions = vec![fp];
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(-1);
    r.max_wait_ms = 30_000;
    r.min_bytes = 1;
    r.max_bytes = 1 << 20;
    r.session_epoch = -1;
    r.topics = vec![ft];
    let started = std::time::Instant::now();
    let id = conn.send(ApiKey::Fetch, 12, &r);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut producer = b.connect();
    let mut pd = PartitionProduceData::default();
    pd.records = Some(Bytes::from(batch(1)));
    let mut td = TopicProduceData::default();
    td.name = name("poll");
    td.partition_data = vec![pd];
    let mut p = ProduceRequest::default();
    p.acks = 1;
    p.timeout_ms = 5_000;
    p.topic_data = vec![td];
    let _: ProduceResponse = producer.call(ApiKey::Produce, 9, &p);
    let resp: FetchResponse = conn.receive(ApiKey::Fetch, 12, id);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(resp.responses[0].partitions[0].high_watermark, 1);
    assert!(!resp.responses[0].partitions[0]
        .records
        .as_ref()
        .unwrap()
        .is_empty());
}
