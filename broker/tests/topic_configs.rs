//! Topic configs as Apache Kafka defines them (issue 11, item 22): every one is accepted with
//! Kafka's validation and described, `compression.type` recompresses what producers send, and
//! `message.timestamp.before.max.ms` / `after.max.ms` refuse records out of range.

mod common;

use bytes::Bytes;
use common::{fetch_request, name, produce_request, BrokerProcess, Conn};
use quipu_protocol::batch_builder::{BatchBuilder, ProducerFields};
use quipu_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use quipu_protocol::messages::describe_configs_request::DescribeConfigsResource;
use quipu_protocol::messages::*;
use quipu_protocol::record_batch::RecordBatchView;
use quipu_protocol::records::RecordBatchDecoder;
use quipu_protocol::StrBytes;

const INVALID_TIMESTAMP: i16 = 32;
const INVALID_CONFIG: i16 = 40;

fn create_with(conn: &mut Conn, topic: &str, configs: &[(&str, &str)]) -> (i16, Option<String>) {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = 1;
    t.replication_factor = 1;
    t.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = StrBytes::from_string(k.to_string());
            c.value = Some(StrBytes::from_string(v.to_string()));
            c
        })
        .collect();
    let mut r = CreateTopicsRequest::default();
    r.topics = vec![t];
    r.timeout_ms = 5_000;
    let resp: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &r);
    let t = &resp.topics[0];
    (
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// A batch of `values` at `timestamps_ms`, keyed `k<i>`, compressed with `codec`.
fn batch_of(codec: i16, timestamps_ms: &[i64], values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::new(1024);
    for (i, (ts, v)) in timestamps_ms.iter().zip(values).enumerate() {
        let key = format!("k{i}");
        b.append::<&[u8], &[u8]>(*ts, Some(key.as_bytes()), Some(v.as_bytes()), &[]);
    }
    b.finish(codec, ProducerFields::NONE).unwrap()
}

fn produce(
    conn: &mut Conn,
    topic: &str,
    batch: Bytes,
) -> produce_response::PartitionProduceResponse {
    let r: ProduceResponse = conn.call(
        ApiKey::Produce,
        9,
        &produce_request(topic, 0, 1, batch.to_vec()),
    );
    r.responses[0].partition_responses[0].clone()
}

/// The first stored batch of partition 0: its codec and its (key, value) records.
fn stored(conn: &mut Conn, topic: &str) -> (i16, Vec<(Bytes, Bytes)>) {
    let r: FetchResponse = conn.call(
        ApiKey::Fetch,
        12,
        &fetch_request(topic, 0, 1 << 20, 1 << 20),
    );
    let mut records = r.responses[0].partitions[0].records.clone().unwrap();
    let codec = RecordBatchView::parse(&records)
        .unwrap()
        .compression_codec();
    let sets = RecordBatchDecoder::decode_all(&mut records).unwrap();
    let kv = sets
        .into_iter()
        .flat_map(|s| s.records)
        .map(|r| (r.key.unwrap(), r.value.unwrap()))
        .collect();
    (codec, kv)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn every_kafka_topic_config_is_accepted_validated_and_described() {
    let b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    let settings = [
        ("file.delete.delay.ms", "1000"),
        ("preallocate", "true"),
        ("segment.jitter.ms", "5"),
        ("unclean.leader.election.enable", "true"),
        ("compression.type", "zstd"),
        ("compression.zstd.level", "7"),
        ("leader.replication.throttled.replicas", "0:1"),
        ("local.retention.ms", "-2"),
        ("remote.storage.enable", "false"),
        ("message.timestamp.before.max.ms", "86400000"),
    ];
    assert_eq!(create_with(&mut conn, "all", &settings), (0, None));
    let mut res = DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_static_str("all");
    let mut r = DescribeConfigsRequest::default();
    r.resources = vec![res];
    let resp: DescribeConfigsResponse = conn.call(ApiKey::DescribeConfigs, 4, &r);
    let configs = &resp.results[0].configs;
    assert_eq!(configs.len(), 33, "every topic config Kafka 4.3 defines");
    for (k, v) in settings {
        let c = configs.iter().find(|c| c.name.as_str() == k).unwrap();
        assert_eq!((c.value.as_deref(), c.config_source), (Some(v), 1), "{k}");
    }
    // Kafka's validation, and its message for tiered storage on a broker without it.
    for bad in [
        ("compression.lz4.level", "18"),
        ("compression.gzip.level", "0"),
        ("follower.replication.throttled.replicas", "x"),
        ("no.such.config", "1"),
    ] {
        assert_eq!(
            create_with(&mut conn, "bad", &[bad]).0,
            INVALID_CONFIG,
            "{bad:?}"
        );
    }
    let (code, message) = create_with(&mut conn, "bad", &[("remote.storage.enable", "true")]);
    assert_eq!(code, INVALID_CONFIG);
    assert!(message
        .unwrap()
        .contains("Tiered Storage functionality is disabled"));
}

#[test]
fn compression_type_recompresses_what_producers_send() {
    let b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    let now = now_ms();
    let values = ["one", "two", "three"];
    let expected: Vec<(Bytes, Bytes)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (Bytes::from(format!("k{i}")), Bytes::from(v.to_string())))
        .collect();
    // (topic compression.type, codec the producer used, codec stored)
    for (target, sent, codec) in [
        ("zstd", 0, 4),
        ("uncompressed", 1, 0),
        ("gzip", 3, 1),
        ("lz4", 2, 3),
        ("snappy", 4, 2),
        ("producer", 3, 3),
        ("zstd", 4, 4),
    ] {
        let topic = format!("to-{target}-from-{sent}");
        let mut configs = vec![("compression.type", target)];
        if target == "gzip" {
            configs.push(("compression.gzip.level", "9"));
        }
        assert_eq!(create_with(&mut conn, &topic, &configs).0, 0);
        let batch = batch_of(sent, &[now, now + 1, now + 2], &values);
        let p = produce(&mut conn, &topic, batch);
        assert_eq!((p.error_code, p.base_offset), (0, 0), "{topic}");
        assert_eq!(
            stored(&mut conn, &topic),
            (codec, expected.clone()),
            "{topic}"
        );
    }
}

#[test]
fn timestamps_out_of_the_topics_range_are_refused_per_record() {
    let b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    let now = now_ms();
    let two_hours_ms = 2 * 3_600_000;
    // Kafka 4's default refuses records more than an hour ahead of the broker's clock.
    assert_eq!(create_with(&mut conn, "default", &[]).0, 0);
    let p = produce(
        &mut conn,
        "default",
        batch_of(0, &[now, now + two_hours_ms, now], &["a", "b", "c"]),
    );
    assert_eq!(p.error_code, INVALID_TIMESTAMP);
    assert_eq!(p.base_offset, -1);
    let indexes: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, vec![1]);
    assert!(p.record_errors[0]
        .batch_index_error_message
        .as_ref()
        .unwrap()
        .contains("is out of range"));
    // Nothing of the batch was appended; an in-range batch goes to offset 0.
    let ok = produce(&mut conn, "default", batch_of(4, &[now, now], &["a", "b"]));
    assert_eq!((ok.error_code, ok.base_offset), (0, 0));

    // before.max.ms bounds the past; compressed batches are walked too.
    assert_eq!(
        create_with(
            &mut conn,
            "recent",
            &[("message.timestamp.before.max.ms", "60000")]
        )
        .0,
        0
    );
    let p = produce(
        &mut conn,
        "recent",
        batch_of(4, &[1_000, now], &["old", "new"]),
    );
    assert_eq!(p.error_code, INVALID_TIMESTAMP);
    assert_eq!(p.record_errors.len(), 1);
    assert_eq!(p.record_errors[0].batch_index, 0);

    // Unbounded, or LogAppendTime (the broker stamps the time), accepts any timestamp.
    for (topic, configs) in [
        (
            "open",
            vec![("message.timestamp.after.max.ms", "9223372036854775807")],
        ),
        ("stamped", vec![("message.timestamp.type", "LogAppendTime")]),
    ] {
        assert_eq!(create_with(&mut conn, topic, &configs).0, 0);
        let p = produce(
            &mut conn,
            topic,
            batch_of(0, &[now + two_hours_ms], &["later"]),
        );
        assert_eq!(p.error_code, 0, "{topic}");
    }
}
