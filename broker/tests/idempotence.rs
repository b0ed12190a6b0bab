//! The idempotent producer through the binary: a retried batch is answered with its original
//! offsets and not written twice, sequence gaps and fenced epochs are refused with Kafka's codes,
//! and all of it holds across a clean restart and a kill -9; producer ids are never reused.

mod common;

use common::{create_topic, produce_request, BrokerProcess, Conn};
use quipu_protocol::messages::*;
use quipu_protocol::testing::idempotent_batch;

fn init_producer_id(conn: &mut Conn) -> i64 {
    let mut r = InitProducerIdRequest::default();
    r.transaction_timeout_ms = 60_000;
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    let resp: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, 4, &r);
    assert_eq!(resp.error_code, 0);
    resp.producer_id.0
}

/// Produces `count` records from `first_sequence`; returns (error code, base offset).
fn produce(conn: &mut Conn, pid: i64, epoch: i16, first_sequence: i32, count: usize) -> (i16, i64) {
    let req = produce_request(
        "idem",
        0,
        -1,
        idempotent_batch(count, pid, epoch, first_sequence),
    );
    let resp: ProduceResponse = conn.call(ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn log_end(conn: &mut Conn) -> i64 {
    let mut p = list_offsets_request::ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = -1;
    p.current_leader_epoch = -1;
    let mut t = list_offsets_request::ListOffsetsTopic::default();
    t.name = common::name("idem");
    t.partitions = vec![p];
    let mut r = ListOffsetsRequest::default();
    r.replica_id = BrokerId(-1);
    r.topics = vec![t];
    let resp: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 5, &r);
    resp.topics[0].partitions[0].offset
}

#[test]
fn retries_sequences_and_epochs_across_restarts_and_crashes() {
    let mut broker = BrokerProcess::start(&["--set", "log.segment.bytes=1024"]);
    let mut conn = broker.connect();
    create_topic(&mut conn, "idem", 1);
    let pid = init_producer_id(&mut conn);
    // Enough batches to roll segments, so snapshots are taken.
    let mut sequence = 0;
    let mut offsets = Vec::new();
    for _ in 0..40 {
        let (code, offset) = produce(&mut conn, pid, 0, sequence, 5);
        assert_eq!(code, 0);
        offsets.push((sequence, offset));
        sequence += 5;
    }
    let end = log_end(&mut conn);
    assert_eq!(end, 200);
    // The last five batches are retries the broker recognises.
    for &(seq, offset) in &offsets[35..] {
        assert_eq!(produce(&mut conn, pid, 0, seq, 5), (0, offset));
    }
    assert_eq!(log_end(&mut conn), end, "retries are not written again");
    assert_eq!(
        produce(&mut conn, pid, 0, sequence + 5, 5).0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    assert_eq!(
        produce(&mut conn, pid, 0, 3, 5).0,
        45,
        "an old sequence that is not a retry"
    );

    for restart in ["clean", "kill -9"] {
        if restart == "clean" {
            broker.restart();
        } else {
            broker.kill();
            broker.start_again();
        }
        let mut conn = broker.connect();
        let (last_seq, last_offset) = offsets[39];
        assert_eq!(
            produce(&mut conn, pid, 0, last_seq, 5),
            (0, last_offset),
            "after a {restart} restart"
        );
        assert_eq!(log_end(&mut conn), end);
        assert_eq!(
            produce(&mut conn, pid, 0, sequence + 1, 5).0,
            45,
            "after a {restart} restart"
        );
        assert!(
            init_producer_id(&mut conn) > pid,
            "producer ids are not reused after a {restart} restart"
        );
    }
    let mut conn = broker.connect();
    // A new epoch starts at sequence 0 and fences the old one.
    assert_eq!(
        produce(&mut conn, pid, 1, 5, 1).0,
        45,
        "a new epoch starts at 0"
    );
    let (code, offset) = produce(&mut conn, pid, 1, 0, 1);
    assert_eq!((code, offset), (0, end));
    assert_eq!(
        produce(&mut conn, pid, 0, sequence, 5).0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    // An unknown producer may start at any sequence (KIP-360).
    assert_eq!(produce(&mut conn, 123_456, 0, 77, 1).0, 0);
    // Kafka's own tool reads the snapshots: tested with DumpLogSegments in the interop suite.
    let dir = broker.data_dir().join("idem-0");
    assert!(std::fs::read_dir(&dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".snapshot")));
}
