//! Retries on errors that call for fresh metadata, against a scripted broker: the first
//! produce and fetch answers are NOT_LEADER_OR_FOLLOWER, and the client must ask for metadata
//! again and retry rather than fail. (A single real broker never says that; a cluster does when
//! leadership moves.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quipu_client::{
    Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use quipu_protocol::header::decode_request_header;
use quipu_protocol::messages::api_versions_response::ApiVersion;
use quipu_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use quipu_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use quipu_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use quipu_protocol::messages::{
    ApiKey, ApiVersionsResponse, FetchRequest, FetchResponse, MetadataResponse, ProduceRequest,
    ProduceResponse, ResponseHeader, TopicName,
};
use quipu_protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Script {
    metadata_requests: AtomicUsize,
    produce_requests: AtomicUsize,
    fetch_requests: AtomicUsize,
    /// The records of the one partition, as the client produced them.
    log: std::sync::Mutex<Option<Bytes>>,
    /// Answer produce requests as soon as their header is in, before reading their records.
    answer_early: bool,
}

async fn serve(listener: TcpListener, script: Arc<Script>) {
    let port = listener.local_addr().unwrap().port();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(connection(stream, script.clone(), port));
    }
}

async fn connection(mut stream: TcpStream, script: Arc<Script>, port: u16) {
    loop {
        let mut size = [0u8; 4];
        if stream.read_exact(&mut size).await.is_err() {
            return;
        }
        let size = i32::from_be_bytes(size) as usize;
        let mut prefix = [0u8; 8];
        if stream.read_exact(&mut prefix).await.is_err() {
            return;
        }
        if script.answer_early && i16::from_be_bytes([prefix[0], prefix[1]]) == 0 {
            let version = i16::from_be_bytes([prefix[2], prefix[3]]);
            let correlation_id = i32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
            script.produce_requests.fetch_add(1, Ordering::SeqCst);
            let mut body = BytesMut::new();
            ProduceResponse::default()
                .with_responses(vec![TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_static_str("moving")))
                    .with_partition_responses(vec![PartitionProduceResponse::default()
                        .with_index(0)
                        .with_base_offset(0)
                        .with_log_append_time_ms(-1)])])
                .encode(&mut body, version)
                .unwrap();
            let mut head = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(correlation_id)
                .encode(&mut head, ProduceResponse::header_version(version))
                .unwrap();
            let mut out = BytesMut::new();
            out.put_i32((head.len() + body.len()) as i32);
            out.extend_from_slice(&head);
            out.extend_from_slice(&body);
            if stream.write_all(&out).await.is_err() {
                return;
            }
            let mut rest = vec![0u8; size - 8];
            if stream.read_exact(&mut rest).await.is_err() {
                return;
            }
            continue;
        }
        let mut frame = prefix.to_vec();
        frame.resize(size, 0);
        if stream.read_exact(&mut frame[8..]).await.is_err() {
            return;
        }
        let mut frame = Bytes::from(frame);
        let header = decode_request_header(&mut frame).unwrap();
        let version = header.api_version;
        let mut body = BytesMut::new();
        let response_header_version = match header.api_key {
            ApiKey::ApiVersions => {
                let keys = [(0, 3, 11), (1, 4, 12), (3, 0, 12), (2, 1, 8)];
                ApiVersionsResponse::default()
                    .with_api_keys(
                        keys.iter()
                            .map(|(k, min, max)| {
                                ApiVersion::default()
                                    .with_api_key(*k)
                                    .with_min_version(*min)
                                    .with_max_version(*max)
                            })
                            .chain([ApiVersion::default()
                                .with_api_key(18)
                                .with_min_version(0)
                                .with_max_version(3)])
                            .collect(),
                    )
                    .encode(&mut body, version)
                    .unwrap();
                0 // ApiVersions responses always use header v0
            }
            ApiKey::Metadata => {
                script.metadata_requests.fetch_add(1, Ordering::SeqCst);
                MetadataResponse::default()
                    .with_brokers(vec![MetadataResponseBroker::default()
                        .with_node_id(1.into())
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(port as i32)])
                    .with_controller_id(1.into())
                    .with_topics(vec![MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_static_str("moving"))))
                        .with_partitions(vec![MetadataResponsePartition::default()
                            .with_partition_index(0)
                            .with_leader_id(1.into())
                            .with_replica_nodes(vec![1.into()])
                            .with_isr_nodes(vec![1.into()])])])
                    .encode(&mut body, version)
                    .unwrap();
                quipu_protocol::messages::MetadataResponse::header_version(version)
            }
            ApiKey::Produce => {
                let request = ProduceRequest::decode(&mut frame, version).unwrap();
                let n = script.produce_requests.fetch_add(1, Ordering::SeqCst);
                let records = request.topic_data[0].partition_data[0].records.clone();
                let error_code = if n == 0 { 6 } else { 0 }; // NOT_LEADER_OR_FOLLOWER once
                if error_code == 0 {
                    *script.log.lock().unwrap() = records;
                }
                ProduceResponse::default()
                    .with_responses(vec![TopicProduceResponse::default()
                        .with_name(TopicName(StrBytes::from_static_str("moving")))
                        .with_partition_responses(vec![PartitionProduceResponse::default()
                            .with_index(0)
                            .with_error_code(error_code)
                            .with_base_offset(if error_code == 0 { 0 } else { -1 })
                            .with_log_append_time_ms(-1)])])
                    .encode(&mut body, version)
                    .unwrap();
                ProduceResponse::header_version(version)
            }
            ApiKey::Fetch => {
                let _ = FetchRequest::decode(&mut frame, version).unwrap();
                let n = script.fetch_requests.fetch_add(1, Ordering::SeqCst);
                let log = script.log.lock().unwrap().clone();
                let partition = if n == 0 {
                    PartitionData::default().with_error_code(6)
                } else {
                    PartitionData::default()
                        .with_high_watermark(1)
                        .with_records(log)
                };
                FetchResponse::default()
                    .with_responses(vec![FetchableTopicResponse::default()
                        .with_topic(TopicName(StrBytes::from_static_str("moving")))
                        .with_partitions(vec![partition.with_partition_index(0)])])
                    .encode(&mut body, version)
                    .unwrap();
                FetchResponse::header_version(version)
            }
            other => panic!("the script has no answer to {other:?}"),
        };
        let mut out = BytesMut::new();
        let mut head = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(header.correlation_id)
            .encode(&mut head, response_header_version)
            .unwrap();
        out.put_i32((head.len() + body.len()) as i32);
        out.extend_from_slice(&head);
        out.extend_from_slice(&body);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_refreshes_metadata_and_retries_produce_and_fetch() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let script = Arc::new(Script::default());
    tokio::spawn(serve(listener, script.clone()));

    let mut config = ProducerConfig::new(&addr);
    config.enable_idempotence = Some(false);
    config.client.retry_backoff_ms = 10;
    let producer = Producer::new(config).unwrap();
    let written = producer
        .send(ProducerRecord::new("moving", "hello").with_partition(0))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(written.offset, 0);
    assert_eq!(
        script.produce_requests.load(Ordering::SeqCst),
        2,
        "sent again"
    );
    let metadata_after_produce = script.metadata_requests.load(Ordering::SeqCst);
    assert!(
        metadata_after_produce >= 2,
        "metadata asked for again after NOT_LEADER_OR_FOLLOWER"
    );
    producer.close().await.unwrap();

    let mut config = ConsumerConfig::new(&addr);
    config.client.retry_backoff_ms = 10;
    let mut consumer = Consumer::new(config).unwrap();
    let tp = TopicPartition::new("moving", 0);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, 0).unwrap();
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while records.is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        records = consumer.poll(Duration::from_millis(200)).await.unwrap();
    }
    assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
    assert!(script.fetch_requests.load(Ordering::SeqCst) >= 2);
    assert!(
        script.metadata_requests.load(Ordering::SeqCst) > metadata_after_produce,
        "the consumer asked for metadata again after NOT_LEADER_OR_FOLLOWER"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_arrives_while_the_request_is_still_being_written_is_matched() {
    // A broker may answer as soon as it has read a request, which can be before the client's
    // writer task runs again after a large write; the answer must find its request.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let script = Arc::new(Script {
        answer_early: true,
        ..Default::default()
    });
    tokio::spawn(serve(listener, script.clone()));
    let mut config = ProducerConfig::new(&addr);
    config.enable_idempotence = Some(false);
    config.max_request_size_bytes = 8 << 20;
    config.batch_size_bytes = 8 << 20;
    config.client.request_timeout_ms = 5_000;
    config.retries = 0;
    let producer = Producer::new(config).unwrap();
    for _ in 0..5 {
        let big = ProducerRecord::new("moving", vec![0u8; 4 << 20]).with_partition(0);
        let written = producer.send(big).await.unwrap().await.unwrap();
        assert_eq!(written.offset, 0);
    }
    assert_eq!(script.produce_requests.load(Ordering::SeqCst), 5);
}
