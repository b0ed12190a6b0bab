//! The request handlers through their context: a broker opened on a temporary directory, each
//! request encoded, answered by `api::handle` (registry, shape check, decode, handler) and the
//! response decoded, with no socket.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use quipu_config::BrokerConfig;
use quipu_protocol::header::RequestHeader;
use quipu_protocol::messages::*;
use quipu_protocol::{Decodable, Encodable, ResponseError, StrBytes};

use super::{handle, Handled};
use crate::metadata_log::record::MetadataRecord;
use crate::request_context::RequestContext;

fn ctx(dir: &std::path::Path) -> Arc<RequestContext> {
    let config = BrokerConfig {
        log_dirs: dir.to_path_buf(),
        ..BrokerConfig::default()
    };
    // On the test's runtime, as the lifecycle opens it.
    tokio::task::block_in_place(|| crate::broker::Broker::open(config, 9092))
        .unwrap()
        .requests
}

/// Sends `request` as `api` v`version` and decodes the response.
async fn call<Req: Encodable, Resp: Decodable>(
    ctx: &Arc<RequestContext>,
    api: ApiKey,
    version: i16,
    request: &Req,
) -> Resp {
    let mut body = BytesMut::new();
    request.encode(&mut body, version).unwrap();
    let header = RequestHeader {
        api_key: api,
        api_version: version,
        correlation_id: 7,
        client_id: Some("unit".into()),
        header_version: api.request_header_version(version),
    };
    let peer = "127.0.0.1:1".parse().unwrap();
    let Handled::Response(chunks) = handle(ctx.clone(), header, body.freeze(), peer, None)
        .await
        .unwrap()
    else {
        panic!("no response")
    };
    let mut frame: Bytes = chunks.concat().into();
    frame.advance(4);
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    Resp::decode(&mut frame, version).unwrap()
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

async fn create(ctx: &Arc<RequestContext>, name: &str, partitions: i32) -> i16 {
    let mut t = create_topics_request::CreatableTopic::default();
    t.name = topic_name(name);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut r = CreateTopicsRequest::default();
    r.topics.push(t);
    r.timeout_ms = 5_000;
    let resp: CreateTopicsResponse = call(ctx, ApiKey::CreateTopics, 7, &r).await;
    resp.topics[0].error_code
}

async fn produce(ctx: &Arc<RequestContext>, topic: &str, partition: i32) -> (i16, i64) {
    let mut pd = produce_request::PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(Bytes::from(quipu_protocol::testing::batch(
        3,
        10,
        1_000,
        quipu_protocol::records::Compression::None,
    )));
    let mut td = produce_request::TopicProduceData::default();
    td.name = topic_name(topic);
    td.partition_data.push(pd);
    let mut r = ProduceRequest::default();
    r.acks = -1;
    r.timeout_ms = 5_000;
    r.topic_data.push(td);
    let resp: ProduceResponse = call(ctx, ApiKey::Produce, 9, &r).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn list_latest(
    ctx: &Arc<RequestContext>,
    topic: &str,
    current_leader_epoch: i32,
) -> (i16, i64) {
    let mut p = list_offsets_request::ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = -1;
    p.current_leader_epoch = current_leader_epoch;
    let mut t = list_offsets_request::ListOffsetsTopic::default();
    t.name = topic_name(topic);
    t.partitions.push(p);
    let mut r = ListOffsetsRequest::default();
    r.replica_id = BrokerId(-1);
    r.topics.push(t);
    let resp: ListOffsetsResponse = call(ctx, ApiKey::ListOffsets, 8, &r).await;
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_is_created_described_written_and_its_offsets_listed() {
    let dir = tempfile::tempdir().unwrap();
    let b = ctx(dir.path());
    assert_eq!(create(&b, "orders", 2).await, 0);
    assert_eq!(
        create(&b, "orders", 2).await,
        ResponseError::TopicAlreadyExists.code()
    );
    let mut r = MetadataRequest::default();
    let mut mt = metadata_request::MetadataRequestTopic::default();
    mt.name = Some(topic_name("orders"));
    r.topics = Some(vec![mt]);
    let md: MetadataResponse = call(&b, ApiKey::Metadata, 12, &r).await;
    let t = &md.topics[0];
    assert_eq!(t.partitions.len(), 2);
    for p in &t.partitions {
        // Placement comes from the image: this node leads at the first epoch.
        assert_eq!((p.leader_id, p.leader_epoch), (BrokerId(0), 0));
        assert_eq!(p.isr_nodes, vec![BrokerId(0)]);
    }
    assert_eq!(produce(&b, "orders", 0).await, (0, 0));
    assert_eq!(produce(&b, "orders", 0).await, (0, 3));
    assert_eq!(list_latest(&b, "orders", -1).await, (0, 6));
    assert_eq!(list_latest(&b, "orders", 0).await, (0, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_that_cannot_be_reached_get_kafkas_errors() {
    let dir = tempfile::tempdir().unwrap();
    let b = ctx(dir.path());
    assert_eq!(create(&b, "t", 1).await, 0);
    assert_eq!(
        list_latest(&b, "t", 1).await.0,
        ResponseError::UnknownLeaderEpoch.code()
    );
    assert_eq!(
        list_latest(&b, "missing", -1).await.0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        produce(&b, "t", 5).await.0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    b.replicas.partition("t", 0).unwrap().take_offline(&"test");
    assert_eq!(
        produce(&b, "t", 0).await.0,
        ResponseError::KafkaStorageError.code()
    );
    assert_eq!(
        produce(&b, "__consumer_offsets", 0).await.0,
        ResponseError::UnknownTopicOrPartition.code(),
        "not created until a group needs it"
    );
}

async fn find_group_coordinator(ctx: &Arc<RequestContext>, group: &str) -> (i16, i32) {
    let mut r = FindCoordinatorRequest::default();
    r.coordinator_keys = vec![StrBytes::from_string(group.to_string())];
    let resp: FindCoordinatorResponse = call(ctx, ApiKey::FindCoordinator, 4, &r).await;
    let c = &resp.coordinators[0];
    (c.error_code, c.node_id.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_named_is_the_leader_of_the_groups_offsets_partition() {
    let dir = tempfile::tempdir().unwrap();
    let b = ctx(dir.path());
    assert_eq!(find_group_coordinator(&b, "g").await, (0, 0));
    // Another broker leads the group's partition: this one names no coordinator it cannot
    // give an address for.
    let index =
        crate::group::offsets_topic::partition_for("g", b.config.offsets_topic_num_partitions);
    let mut image = (*b.metadata.image()).clone();
    let moved = crate::metadata_log::record::PartitionRecord {
        leader: 2,
        leader_epoch: 1,
        partition_epoch: 1,
        ..crate::metadata_log::record::PartitionRecord::on_one_node("__consumer_offsets", index, 0)
    };
    image
        .apply(&crate::metadata_log::record::MetadataRecord::Partition(
            moved,
        ))
        .unwrap();
    b.metadata.swap_image(Arc::new(image));
    assert_eq!(
        find_group_coordinator(&b, "g").await,
        (ResponseError::CoordinatorNotAvailable.code(), -1)
    );
    // Once broker 2 is registered and unfenced, it is named.
    let mut image = (*b.metadata.image()).clone();
    for record in [
        MetadataRecord::BrokerRegistered {
            node_id: 2,
            broker_epoch: 1,
            host: "two.local".into(),
            port: 9192,
            rack: None,
        },
        MetadataRecord::BrokerFencing {
            node_id: 2,
            fenced: false,
        },
    ] {
        image.apply(&record).unwrap();
    }
    b.metadata.swap_image(Arc::new(image));
    assert_eq!(find_group_coordinator(&b, "g").await, (0, 2));
    let md: MetadataResponse = call(&b, ApiKey::Metadata, 12, &MetadataRequest::default()).await;
    let listed: Vec<_> = md.brokers.iter().map(|b| (b.node_id.0, b.port)).collect();
    assert_eq!(
        listed,
        vec![(0, 9092), (2, 9192)],
        "every unfenced broker, by id"
    );
}
