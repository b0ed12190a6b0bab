//! Every served request: an api key, a version and a body. The shape check accepts or refuses
//! it; whatever it accepts, kafka-protocol decodes without a large allocation (libFuzzer's
//! -malloc_limit_mb catches one) and, when the decode succeeds, it read exactly the bytes the
//! check walked: the check's tables match the decoder.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use quipu_protocol::messages::*;
use quipu_protocol::request_shape::check_request;
use quipu_protocol::Decodable;

fn decoded<M: Decodable>(body: &[u8], version: i16) -> Option<usize> {
    let mut buf = Bytes::copy_from_slice(body);
    M::decode(&mut buf, version).ok()?;
    Some(body.len() - buf.len())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let Ok(api) = ApiKey::try_from(i16::from_be_bytes([data[0], data[1]])) else {
        return;
    };
    let version = i16::from_be_bytes([data[2], data[3]]);
    let body = &data[4..];
    let Ok(walked) = check_request(api, version, body) else {
        return;
    };
    let read = match api {
        ApiKey::Produce => decoded::<ProduceRequest>(body, version),
        ApiKey::Fetch => decoded::<FetchRequest>(body, version),
        ApiKey::ListOffsets => decoded::<ListOffsetsRequest>(body, version),
        ApiKey::Metadata => decoded::<MetadataRequest>(body, version),
        ApiKey::ApiVersions => decoded::<ApiVersionsRequest>(body, version),
        ApiKey::CreateTopics => decoded::<CreateTopicsRequest>(body, version),
        ApiKey::DeleteTopics => decoded::<DeleteTopicsRequest>(body, version),
        ApiKey::DescribeConfigs => decoded::<DescribeConfigsRequest>(body, version),
        ApiKey::DescribeCluster => decoded::<DescribeClusterRequest>(body, version),
        ApiKey::CreatePartitions => decoded::<CreatePartitionsRequest>(body, version),
        ApiKey::DeleteRecords => decoded::<DeleteRecordsRequest>(body, version),
        ApiKey::AlterConfigs => decoded::<AlterConfigsRequest>(body, version),
        ApiKey::IncrementalAlterConfigs => decoded::<IncrementalAlterConfigsRequest>(body, version),
        ApiKey::OffsetForLeaderEpoch => decoded::<OffsetForLeaderEpochRequest>(body, version),
        ApiKey::InitProducerId => decoded::<InitProducerIdRequest>(body, version),
        ApiKey::FindCoordinator => decoded::<FindCoordinatorRequest>(body, version),
        ApiKey::JoinGroup => decoded::<JoinGroupRequest>(body, version),
        ApiKey::SyncGroup => decoded::<SyncGroupRequest>(body, version),
        ApiKey::Heartbeat => decoded::<HeartbeatRequest>(body, version),
        ApiKey::LeaveGroup => decoded::<LeaveGroupRequest>(body, version),
        ApiKey::OffsetCommit => decoded::<OffsetCommitRequest>(body, version),
        ApiKey::OffsetFetch => decoded::<OffsetFetchRequest>(body, version),
        ApiKey::OffsetDelete => decoded::<OffsetDeleteRequest>(body, version),
        ApiKey::ListGroups => decoded::<ListGroupsRequest>(body, version),
        ApiKey::DescribeGroups => decoded::<DescribeGroupsRequest>(body, version),
        ApiKey::DeleteGroups => decoded::<DeleteGroupsRequest>(body, version),
        _ => None,
    };
    if let Some(read) = read {
        assert_eq!(
            read, walked,
            "{api:?} v{version}: the decoder and the shape check disagree"
        );
    }
});
