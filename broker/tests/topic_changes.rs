//! Topic changes are all or nothing and resumable (issue 11, item 10): a creation that fails
//! leaves no topic and no directory, a deletion a crash interrupted is finished at the next
//! start, and start-up never deletes a live topic's data.

mod common;

use std::path::Path;

use common::{batch, create_topic, produce_request, BrokerProcess, Conn};
use quipu_protocol::messages::*;

fn partition_dirs(data: &Path, topic: &str) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| {
            n.strip_prefix(topic)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    dirs.sort();
    dirs
}

fn topic_error(conn: &mut Conn, topic: &str) -> i16 {
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(common::name(topic));
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![t]);
    r.allow_auto_topic_creation = false;
    let resp: MetadataResponse = conn.call(ApiKey::Metadata, 12, &r);
    resp.topics[0].error_code
}

fn produce(conn: &mut Conn, topic: &str, partition: i32) -> i64 {
    let r: ProduceResponse = conn.call(
        ApiKey::Produce,
        9,
        &produce_request(topic, partition, 1, batch(3)),
    );
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    p.base_offset
}

#[test]
fn a_creation_that_runs_out_of_file_descriptors_leaves_nothing_and_the_broker_starts_again() {
    let mut b = BrokerProcess::start_with_fd_limit(&[], 128);
    let mut conn = b.connect();
    // Each partition holds a log and two index files open: 100 cannot fit in 128 descriptors.
    let failed = create_topic(&mut conn, "too-big", 100);
    assert_ne!(failed.topics[0].error_code, 0, "the creation must fail");
    assert_eq!(
        topic_error(&mut conn, "too-big"),
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert!(partition_dirs(&b.data_dir(), "too-big").is_empty());
    // The broker goes on: a topic that fits is created and used.
    assert_eq!(create_topic(&mut conn, "fits", 3).topics[0].error_code, 0);
    produce(&mut conn, "fits", 2);
    // And it starts again under the same limit, with the topic that exists and no other.
    b.kill();
    b.start_again();
    let mut conn = b.connect();
    assert_eq!(topic_error(&mut conn, "too-big"), 3);
    assert_eq!(produce(&mut conn, "fits", 2), 3);
    assert!(partition_dirs(&b.data_dir(), "too-big").is_empty());
}

#[test]
fn a_deletion_a_crash_interrupted_is_finished_at_the_next_start() {
    let mut b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    assert_eq!(
        create_topic(&mut conn, "doomed", 20).topics[0].error_code,
        0
    );
    for p in 0..20 {
        produce(&mut conn, "doomed", p);
    }
    // The state a kill -9 leaves just after the deletion was recorded and before any of its
    // directories went: the directories are moved aside during a real deletion (whose renames
    // then fail, as a crash would leave them undone), then the broker dies and they come back.
    let data = b.data_dir();
    let saved = b.dir.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    for d in partition_dirs(&data, "doomed") {
        std::fs::rename(data.join(&d), saved.join(&d)).unwrap();
    }
    let mut r = DeleteTopicsRequest::default();
    r.topic_names = vec![common::name("doomed")];
    r.timeout_ms = 5_000;
    let resp: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 5, &r);
    assert_eq!(resp.responses[0].error_code, 0);
    b.kill();
    for e in std::fs::read_dir(&saved).unwrap().flatten() {
        std::fs::rename(e.path(), data.join(e.file_name())).unwrap();
    }
    assert_eq!(partition_dirs(&data, "doomed").len(), 20);
    b.start_again();
    assert!(
        partition_dirs(&data, "doomed").is_empty(),
        "the start finishes the deletion: {:?}\n{}",
        partition_dirs(&data, "doomed"),
        b.log()
    );
    // A topic of the same name starts empty, with only its own partitions.
    let mut conn = b.connect();
    assert_eq!(create_topic(&mut conn, "doomed", 5).topics[0].error_code, 0);
    assert_eq!(produce(&mut conn, "doomed", 0), 0);
    assert_eq!(partition_dirs(&data, "doomed").len(), 5);
}

#[test]
fn a_damaged_partition_marker_stops_the_start_and_deletes_nothing() {
    let mut b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    assert_eq!(create_topic(&mut conn, "kept", 2).topics[0].error_code, 0);
    produce(&mut conn, "kept", 0);
    b.terminate();
    let dir = b.data_dir().join("kept-0");
    std::fs::write(dir.join("partition.metadata"), b"").unwrap();
    let before = std::fs::read_dir(&dir).unwrap().flatten().count();
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.start_again()));
    assert!(started.is_err(), "the broker must refuse to start");
    assert!(b.log().contains("partition.metadata"), "{}", b.log());
    let after = std::fs::read_dir(&dir).unwrap().flatten().count();
    assert_eq!(before, after, "the partition's files are all there");
    assert!(dir.join("00000000000000000000.log").exists());
}
