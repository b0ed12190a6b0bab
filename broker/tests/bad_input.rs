//! Bad input gets Kafka's error code or a closed connection, a log line, and the broker keeps
//! serving its other clients.

mod common;

use common::{batch, create_topic, produce_request, BrokerProcess, Conn};
use quipu_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use quipu_protocol::messages::*;
use quipu_protocol::{ResponseError, StrBytes};

fn api_versions_works(conn: &mut Conn) {
    let r: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

/// Opens a second client first, so that each test shows that bad input on one connection leaves
/// the other served.
fn broker_with_bystander(args: &[&str]) -> (BrokerProcess, Conn) {
    let b = BrokerProcess::start(args);
    let mut bystander = b.connect();
    api_versions_works(&mut bystander);
    (b, bystander)
}

fn after_bad_input(b: &mut BrokerProcess, bystander: &mut Conn, log_needle: &str) {
    assert!(b.alive(), "broker died: {}", b.log());
    api_versions_works(bystander);
    api_versions_works(&mut b.connect());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !b.log().contains(log_needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with {log_needle:?}: {}",
            b.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn frame_over_the_limit_closes_the_connection() {
    let (mut b, mut bystander) = broker_with_bystander(&["--set", "socket.request.max.bytes=4096"]);
    let mut c = b.connect();
    c.send_raw(&4097i32.to_be_bytes());
    assert!(c.is_closed());
    // A frame at the limit is read (it is garbage, so it closes too, but for its header).
    let mut c = b.connect();
    let mut frame = 4096i32.to_be_bytes().to_vec();
    frame.extend(vec![0xffu8; 4096]);
    c.send_raw(&frame);
    assert!(c.is_closed());
    after_bad_input(&mut b, &mut bystander, "exceeds the limit of 4096 bytes");
}

#[test]
fn negative_frame_size_closes_the_connection() {
    let (mut b, mut bystander) = broker_with_bystander(&[]);
    let mut c = b.connect();
    c.send_raw(&(-5i32).to_be_bytes());
    assert!(c.is_closed());
    after_bad_input(&mut b, &mut bystander, "is negative");
}

#[test]
fn truncated_size_or_frame_then_hang_up_leaves_the_broker_serving() {
    let (mut b, mut bystander) = broker_with_bystander(&[]);
    let mut c = b.connect();
    c.send_raw(&[0, 0]);
    drop(c);
    let mut c = b.connect();
    c.send_raw(&[0, 0, 0, 100, 0, 18, 0, 3]);
    drop(c);
    // A frame too short to hold a request header.
    let mut c = b.connect();
    c.send_raw(&[0, 0, 0, 3, 0, 18, 0]);
    assert!(c.is_closed());
    after_bad_input(&mut b, &mut bystander, "request header is truncated");
}

#[test]
fn unknown_api_key_closes_the_connection() {
    let (mut b, mut bystander) = broker_with_bystander(&[]);
    let mut c = b.connect();
    c.send_raw(&[0, 0, 0, 10, 0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0xff, 0xff]); // api key 999
    assert!(c.is_closed());
    after_bad_input(&mut b, &mut bystander, "unknown api key 999");
}

#[test]
fn unsupported_version_closes_the_connection_but_api_versions_answers() {
    let (mut b, mut bystander) = broker_with_bystander(&[]);
    let mut c = b.connect();
    // Produce v99, correlation id 1, null client id, no tagged fields, an empty body.
    c.send_raw(&[0, 0, 0, 11, 0, 0, 0, 99, 0, 0, 0, 1, 0xff, 0xff, 0]);
    assert!(c.is_closed());
    // ApiVersions at a version we lack: UNSUPPORTED_VERSION, in the v0 layout, with our versions.
    let mut c = b.connect();
    c.send_raw(&[0, 0, 0, 11, 0, 18, 0, 99, 0, 0, 0, 7, 0xff, 0xff, 0]);
    let r: ApiVersionsResponse = c.receive(ApiKey::ApiVersions, 0, 7);
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    let produce = r.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (3, 11));
    after_bad_input(&mut b, &mut bystander, "Produce v99 is not supported");
}

#[test]
fn batch_with_a_bad_crc_is_refused_with_corrupt_message() {
    let (mut b, mut bystander) = broker_with_bystander(&[]);
    let mut c = b.connect();
    create_topic(&mut c, "crc", 1);
    let mut records = batch(3);
    let last = records.len() - 1;
    records[last] ^= 0x40;
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_request("crc", 0, 1, records));
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, ResponseError::CorruptMessage.code());
    assert!(p.error_message.as_ref().unwrap().contains("CRC"));
    // The log took nothing; a good batch lands at offset 0.
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_request("crc", 0, 1, batch(3)));
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 0);
    after_bad_input(&mut b, &mut bystander, "CRC mismatch");
}

#[test]
fn produce_to_a_partition_or_topic_that_does_not_exist() {
    let (mut b, mut bystander) = broker_with_bystander(&[]);
    let mut c = b.connect();
    create_topic(&mut c, "two", 2);
    for (topic, partition) in [("two", 2), ("two", -1), ("missing", 0)] {
        let r: ProduceResponse = c.call(
            ApiKey::Produce,
            9,
            &produce_request(topic, partition, 1, batch(1)),
        );
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            ResponseError::UnknownTopicOrPartition.code(),
            "{topic}-{partition}"
        );
    }
    // Produce never creates topics.
    let mut m = MetadataRequest::default();
    m.topics = Some(vec![]);
    let r: MetadataResponse = c.call(ApiKey::Metadata, 12, &m);
    assert!(r.topics.is_empty());
    after_bad_input(&mut b, &mut bystander, "quipu broker started");
}

#[test]
fn a_partition_named_twice_is_appended_once_with_its_last_batch() {
    let b = BrokerProcess::start(&[]);
    let mut c = b.connect();
    create_topic(&mut c, "dup", 2);
    let part = |index: i32, records: usize| {
        let mut pd = PartitionProduceData::default();
        pd.index = index;
        pd.records = Some(batch(records).into());
        pd
    };
    let mut first = TopicProduceData::default();
    first.name = common::name("dup");
    first.partition_data = vec![part(0, 2), part(1, 1), part(0, 3)];
    let mut again = TopicProduceData::default();
    again.name = common::name("dup");
    again.partition_data = vec![part(1, 4)];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5_000;
    request.topic_data = vec![first, again];
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &request);
    assert_eq!(r.responses.len(), 1, "one answer per topic");
    let answered: Vec<(i32, i16, i64)> = r.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code, p.base_offset))
        .collect();
    assert_eq!(answered, [(0, 0, 0), (1, 0, 0)], "one answer per partition");
    // The next appends land after the last batch named for each partition, and only it.
    for (partition, next_offset) in [(0, 3), (1, 4)] {
        let r: ProduceResponse = c.call(
            ApiKey::Produce,
            9,
            &produce_request("dup", partition, 1, batch(1)),
        );
        assert_eq!(
            r.responses[0].partition_responses[0].base_offset,
            next_offset
        );
    }
}

#[test]
fn invalid_topic_names_are_refused() {
    let (mut b, mut bystander) = broker_with_bystander(&[]);
    let mut c = b.connect();
    for name in ["bad name", "..", "a/b", &"x".repeat(250)] {
        let r = create_topic(&mut c, name, 1);
        assert_eq!(
            r.topics[0].error_code,
            ResponseError::InvalidTopicException.code(),
            "{name}"
        );
        // Nor does Metadata create it.
        let mut t = metadata_request::MetadataRequestTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(name.into())));
        let mut m = MetadataRequest::default();
        m.topics = Some(vec![t]);
        m.allow_auto_topic_creation = true;
        let r: MetadataResponse = c.call(ApiKey::Metadata, 12, &m);
        assert_eq!(
            r.topics[0].error_code,
            ResponseError::InvalidTopicException.code(),
            "{name}"
        );
    }
    after_bad_input(&mut b, &mut bystander, "create topic refused");
}

#[test]
fn body_that_does_not_parse_closes_the_connection() {
    let (mut b, mut bystander) = broker_with_bystander(&[]);
    let mut c = b.connect();
    // Metadata v1 header, then a topic count of 5 and nothing after it.
    c.send_raw(&[0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 5]);
    assert!(c.is_closed());
    after_bad_input(&mut b, &mut bystander, "cannot parse Metadata v1 request");
}

#[test]
fn hostile_array_length_does_not_allocate_or_crash() {
    let (mut b, mut bystander) = broker_with_bystander(&[]);
    let mut c = b.connect();
    // Produce v3: transactional id null, acks, timeout, then a topic count of i32::MAX.
    let mut frame = vec![
        0, 0, 0, 3, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 1, 0, 0, 0x13, 0x88,
    ];
    frame.extend(i32::MAX.to_be_bytes());
    let mut framed = (frame.len() as i32).to_be_bytes().to_vec();
    framed.extend(frame);
    c.send_raw(&framed);
    assert!(c.is_closed());
    after_bad_input(&mut b, &mut bystander, "cannot parse Produce v3 request");
}

/// Issue 11, item 7: counts read from the wire are checked at Kafka 4.4's limits before the
/// decoder reserves memory by them, so a broker whose address space is bounded (as strict
/// overcommit bounds it) refuses hostile counts with a closed connection and keeps serving.
/// The build before this check aborted on the first of them under this limit.
#[test]
fn hostile_counts_are_refused_at_kafkas_limits_within_a_bounded_address_space() {
    let mut b = BrokerProcess::start_with_address_space_limit(&[], 6 << 30);
    let mut bystander = b.connect();
    api_versions_works(&mut bystander);
    let frame = |api: i16, version: i16, header_tags: &[u8], body: &[u8]| {
        let mut f = api.to_be_bytes().to_vec();
        f.extend(version.to_be_bytes());
        f.extend(7i32.to_be_bytes());
        f.extend([0xff, 0xff]); // no client id
        f.extend(header_tags);
        f.extend(body);
        let mut framed = (f.len() as i32).to_be_bytes().to_vec();
        framed.extend(f);
        framed
    };
    let varint = |mut n: u32| {
        let mut b = Vec::new();
        while n >= 0x80 {
            b.push((n as u8) | 0x80);
            n >>= 7;
        }
        b.push(n as u8);
        b
    };
    let tags = |count: u32| {
        let mut b = varint(count);
        for _ in 0..count {
            b.extend([100, 0]); // an unknown tag with no value
        }
        b
    };
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        // Metadata v12 (flexible header): topics as a compact array of 2^32 - 2.
        (
            "Metadata",
            frame(3, 12, &[0], &[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 0]),
        ),
        // Fetch v4: a topic count of i32::MAX.
        ("Fetch", {
            let mut body = vec![0xff, 0xff, 0xff, 0xff]; // replica id
            body.extend([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]); // wait, min and max bytes, isolation
            body.extend(i32::MAX.to_be_bytes());
            frame(1, 4, &[], &body)
        }),
        // JoinGroup v5: a million and one protocols, each claimed in the bytes that follow.
        ("JoinGroup", {
            let mut body = vec![
                0, 1, b'g', 0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10, 0, 0, 0xff, 0xff,
            ];
            body.extend([0, 8]);
            body.extend(b"consumer");
            body.extend(1_000_001i32.to_be_bytes());
            body.extend(vec![0u8; 1_000_001 * 6]);
            frame(11, 5, &[], &body)
        }),
        // ApiVersions v3 whose header has 10 001 tagged fields.
        ("tagged", frame(18, 3, &tags(10_001), &[0, 0, 0])),
        // Metadata v12 whose body ends with 10 001 tagged fields.
        ("Metadata", {
            let mut body = vec![1, 1, 1];
            body.extend(tags(10_001));
            frame(3, 12, &[0], &body)
        }),
    ];
    for (needle, bytes) in hostile {
        let mut c = b.connect();
        c.send_raw(&bytes);
        assert!(c.is_closed(), "{needle}: the connection stays open");
        after_bad_input(&mut b, &mut bystander, needle);
    }
    // At the limit, a header's tagged fields are accepted.
    let mut c = b.connect();
    c.send_raw(&frame(18, 3, &tags(10_000), &[1, 1, 0]));
    let answer = c.read_frame().expect("answered");
    assert_eq!(&answer[..4], &7i32.to_be_bytes(), "ApiVersions answered");
}
