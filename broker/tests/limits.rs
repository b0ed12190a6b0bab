//! Limits and configuration at their edges: connections, in-flight requests, acks=0, oversize
//! batches, validate-only creation, and the configuration layers as the binary reads them.

mod common;

use common::{batch, fetch_request, name, produce_request, BrokerProcess, Conn};
use quipu_protocol::messages::create_topics_request::CreatableTopic;
use quipu_protocol::messages::metadata_request::MetadataRequestTopic;
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

fn metadata(conn: &mut Conn, topic: &str) -> MetadataResponse {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name(topic));
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![t]);
    r.allow_auto_topic_creation = true;
    conn.call(ApiKey::Metadata, 12, &r)
}

/// A connection that has been served once (the broker's start-up probe may still hold a slot
/// for a moment, so a refused one is retried).
fn served_connection(b: &BrokerProcess) -> Conn {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut c = b.connect();
        c.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        if c.read_frame().is_some() {
            return c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection slot became free"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn connections_over_max_connections_are_closed() {
    let b = BrokerProcess::start(&["--set", "max.connections=2"]);
    let first = served_connection(&b);
    let mut second = served_connection(&b);
    metadata(&mut second, "m");
    let mut third = b.connect();
    assert!(third.is_closed(), "a third connection must be refused");
    drop(first);
    // The freed slot serves a new client.
    served_connection(&b);
    assert!(b.log().contains("max.connections reached"));
}

#[test]
fn pipelined_requests_at_the_in_flight_limit_are_answered_in_order() {
    let b = BrokerProcess::start(&["--set", "connection.max.in.flight.requests=2"]);
    let mut c = b.connect();
    metadata(&mut c, "pipe");
    // Twenty requests written at once, with long polls among them: all answered, in order.
    let mut ids = Vec::new();
    for i in 0..20 {
        if i % 5 == 0 {
            let mut f = fetch_request("pipe", 0, 1 << 20, 1 << 20);
            f.max_wait_ms = 200;
            f.min_bytes = 1;
            ids.push((ApiKey::Fetch, c.send(ApiKey::Fetch, 12, &f)));
        } else {
            ids.push((
                ApiKey::ApiVersions,
                c.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
            ));
        }
    }
    for (api, id) in ids {
        match api {
            ApiKey::Fetch => {
                let _: FetchResponse = c.receive(api, 12, id);
            }
            _ => {
                let _: ApiVersionsResponse = c.receive(api, 3, id);
            }
        }
    }
}

#[test]
fn acks_zero_gets_no_response_and_the_next_request_is_answered() {
    let b = BrokerProcess::start(&[]);
    let mut c = b.connect();
    metadata(&mut c, "fire");
    c.send(ApiKey::Produce, 9, &produce_request("fire", 0, 0, batch(3)));
    let r = metadata(&mut c, "fire");
    assert_eq!(r.topics[0].error_code, 0);
    let f: FetchResponse = c.call(
        ApiKey::Fetch,
        12,
        &fetch_request("fire", 0, 1 << 20, 1 << 20),
    );
    assert_eq!(f.responses[0].partitions[0].high_watermark, 3);
}

#[test]
fn a_batch_larger_than_the_fetch_limits_still_comes_whole() {
    let b = BrokerProcess::start(&[]);
    let mut c = b.connect();
    metadata(&mut c, "big");
    let one = batch(50);
    for _ in 0..3 {
        let r: ProduceResponse = c.call(
            ApiKey::Produce,
            9,
            &produce_request("big", 0, 1, one.clone()),
        );
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let f: FetchResponse = c.call(
        ApiKey::Fetch,
        12,
        &fetch_request("big", 0, 1 << 20, 1 << 20),
    );
    assert_eq!(
        f.responses[0].partitions[0].records.as_ref().unwrap().len(),
        one.len() * 3
    );
    // Limits far below one batch: exactly one whole batch.
    let f: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_request("big", 0, 10, 10));
    assert_eq!(
        f.responses[0].partitions[0].records.as_ref().unwrap().len(),
        one.len()
    );
    // Room for two batches and a half: two.
    let limit = (one.len() * 5 / 2) as i32;
    let f: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_request("big", 0, limit, 1 << 20));
    assert_eq!(
        f.responses[0].partitions[0].records.as_ref().unwrap().len(),
        one.len() * 2
    );
    // From the middle of the second batch: the second and third.
    let f: FetchResponse = c.call(
        ApiKey::Fetch,
        12,
        &fetch_request("big", 60, 1 << 20, 1 << 20),
    );
    assert_eq!(
        f.responses[0].partitions[0].records.as_ref().unwrap().len(),
        one.len() * 2
    );
    // Past the end: OFFSET_OUT_OF_RANGE.
    let f: FetchResponse = c.call(
        ApiKey::Fetch,
        12,
        &fetch_request("big", 151, 1 << 20, 1 << 20),
    );
    assert_eq!(f.responses[0].partitions[0].error_code, 1);
}

#[test]
fn validate_only_creates_nothing() {
    let b = BrokerProcess::start(&["--set", "auto.create.topics.enable=false"]);
    let mut c = b.connect();
    let mut t = CreatableTopic::default();
    t.name = name("dry");
    t.num_partitions = 4;
    t.replication_factor = 1;
    let mut r = CreateTopicsRequest::default();
    r.topics = vec![t];
    r.validate_only = true;
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &r);
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].num_partitions, 4);
    assert_eq!(
        metadata(&mut c, "dry").topics[0].error_code,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    // And a bad replication factor is refused even when only validating.
    r.topics[0].replication_factor = 3;
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &r);
    assert_eq!(resp.topics[0].error_code, 38, "INVALID_REPLICATION_FACTOR");
}

#[test]
fn configuration_layers_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quipu.toml");
    std::fs::write(
        &file,
        "num.partitions = 2\n[log]\nsegment.bytes = 1048576\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    // File alone.
    let b = BrokerProcess::start(&["--config", file_arg]);
    assert_eq!(
        metadata(&mut b.connect(), "a").topics[0].partitions.len(),
        2
    );
    drop(b);
    // Environment beats the file.
    let env = [("QUIPU_NUM_PARTITIONS", "5")];
    let b = BrokerProcess::start_with_env(&["--config", file_arg], &env);
    assert_eq!(
        metadata(&mut b.connect(), "a").topics[0].partitions.len(),
        5
    );
    drop(b);
    // Flags beat the environment.
    let b =
        BrokerProcess::start_with_env(&["--config", file_arg, "--set", "num.partitions=7"], &env);
    assert_eq!(
        metadata(&mut b.connect(), "a").topics[0].partitions.len(),
        7
    );
}

#[test]
fn unknown_key_or_bad_value_stops_the_broker_with_a_message() {
    for (args, needle) in [
        (vec!["--set", "num.partitionz=3"], "num_partitionz"),
        (vec!["--set", "num.partitions=lots"], "num_partitions"),
        (
            vec!["--set", "log.message.timestamp.type=Whenever"],
            "CreateTime or LogAppendTime",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_quipu"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tempfile::tempdir().unwrap().path())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn acks_all_below_min_insync_replicas_is_refused() {
    let b = BrokerProcess::start(&[]);
    let mut c = b.connect();
    let mut t = CreatableTopic::default();
    t.name = name("strict");
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut cfg = create_topics_request::CreatableTopicConfig::default();
    cfg.name = StrBytes::from_static_str("min.insync.replicas");
    cfg.value = Some(StrBytes::from_static_str("2"));
    t.configs = vec![cfg];
    let mut r = CreateTopicsRequest::default();
    r.topics = vec![t];
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &r);
    assert_eq!(resp.topics[0].error_code, 0);
    let all: ProduceResponse = c.call(
        ApiKey::Produce,
        9,
        &produce_request("strict", 0, -1, batch(1)),
    );
    assert_eq!(
        all.responses[0].partition_responses[0].error_code, 19,
        "NOT_ENOUGH_REPLICAS"
    );
    // acks=1 does not wait for replicas and lands.
    let one: ProduceResponse = c.call(
        ApiKey::Produce,
        9,
        &produce_request("strict", 0, 1, batch(1)),
    );
    assert_eq!(one.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(one.responses[0].partition_responses[0].base_offset, 0);
    // Bad acks: INVALID_REQUIRED_ACKS.
    let bad: ProduceResponse = c.call(
        ApiKey::Produce,
        9,
        &produce_request("strict", 0, 2, batch(1)),
    );
    assert_eq!(bad.responses[0].partition_responses[0].error_code, 21);
}

#[test]
fn flush_messages_one_fsyncs_before_each_acknowledgement() {
    let b = BrokerProcess::start(&["--set", "log.flush.interval.messages=1"]);
    let mut c = b.connect();
    metadata(&mut c, "synced");
    for i in 0..5 {
        let r: ProduceResponse = c.call(
            ApiKey::Produce,
            9,
            &produce_request("synced", 0, 1, batch(2)),
        );
        let p = &r.responses[0].partition_responses[0];
        // A failed fsync would answer KAFKA_STORAGE_ERROR.
        assert_eq!((p.error_code, p.base_offset), (0, i * 2));
    }
}

/// Issue 11, item 6: idle connections were never closed.
#[test]
fn idle_connections_are_closed_after_connections_max_idle_ms() {
    let b = BrokerProcess::start(&["--set", "connections.max.idle.ms=400"]);
    let mut idle = served_connection(&b);
    let mut busy = served_connection(&b);
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(1_000) {
        let _: ApiVersionsResponse =
            busy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(idle.is_closed(), "the idle connection was closed");
    let _: ApiVersionsResponse = busy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
}

/// Issue 11, item 6: a frame whose body stalls held its buffer for as long as the client liked.
#[test]
fn a_request_that_stalls_mid_frame_is_cut_off() {
    let b = BrokerProcess::start(&["--set", "socket.request.read.timeout.ms=300"]);
    let mut stalled = served_connection(&b);
    stalled.send_raw(&1_000i32.to_be_bytes());
    stalled.send_raw(&[0u8; 10]);
    let started = std::time::Instant::now();
    assert!(stalled.is_closed());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let mut bystander = served_connection(&b);
    let _: ApiVersionsResponse =
        bystander.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert!(b.log().contains("did not arrive whole"), "{}", b.log());
}

/// Issue 11, item 6: 20 connections with half-sent large frames took 1.7 GB; request bytes are
/// now bounded across connections by `queued.max.request.bytes`, and small requests from other
/// clients do not wait behind them.
#[test]
fn request_bytes_are_bounded_across_connections() {
    const FRAME_BYTES: usize = 8 << 20;
    let b = BrokerProcess::start(&[
        "--set",
        "socket.request.max.bytes=8388608",
        "--set",
        "queued.max.request.bytes=16777216",
    ]);
    let before = b.peak_rss_bytes();
    let mut stalled: Vec<Conn> = Vec::new();
    for _ in 0..20 {
        let mut c = served_connection(&b);
        c.stream.set_nonblocking(true).unwrap();
        let mut frame = (FRAME_BYTES as i32).to_be_bytes().to_vec();
        frame.extend(vec![1u8; FRAME_BYTES * 3 / 4]);
        // Send what the broker takes; the rest stays in this side's buffers.
        let mut sent = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while sent < frame.len() && std::time::Instant::now() < deadline {
            match std::io::Write::write(&mut c.stream, &frame[sent..]) {
                Ok(n) => sent += n,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        stalled.push(c);
    }
    let mut bystander = served_connection(&b);
    let started = std::time::Instant::now();
    let _: ApiVersionsResponse =
        bystander.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    let grown = b.peak_rss_bytes().saturating_sub(before);
    assert!(grown < 48 << 20, "the broker grew by {grown} bytes");
    drop(stalled);
}

/// Issue 11, item 6: one client could take every connection; `max.connections.per.ip` and its
/// overrides bound what one address holds.
#[test]
fn connections_per_ip_are_limited_with_overrides() {
    let b = BrokerProcess::start(&["--set", "max.connections.per.ip=3"]);
    let held: Vec<Conn> = (0..3).map(|_| served_connection(&b)).collect();
    let mut fourth = b.connect();
    assert!(
        fourth.is_closed(),
        "a fourth connection from one address is refused"
    );
    drop(held);
    let b = BrokerProcess::start(&[
        "--set",
        "max.connections.per.ip=1",
        "--set",
        "max.connections.per.ip.overrides=127.0.0.1:4",
    ]);
    let held: Vec<Conn> = (0..4).map(|_| served_connection(&b)).collect();
    assert!(b.connect().is_closed());
    drop(held);
}
