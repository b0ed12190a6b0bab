//! The broker after a crash and offline damage to its files: it starts, keeps every batch before
//! the damage, never serves a corrupt batch, and logs what it cut.

mod common;

use common::{batch, create_topic, fetch_request, produce_request, BrokerProcess, Conn};
use quipu_protocol::messages::*;
use quipu_protocol::record_batch::BatchIter;

fn produce(conn: &mut Conn, topic: &str, records: Vec<u8>) -> i64 {
    let resp: ProduceResponse =
        conn.call(ApiKey::Produce, 9, &produce_request(topic, 0, 1, records));
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    p.base_offset
}

/// Every batch from offset 0 to the high watermark, each checked; returns (base, last) offsets.
fn read_everything(conn: &mut Conn, topic: &str) -> (Vec<(i64, i64)>, i64) {
    let mut batches = Vec::new();
    let mut offset = 0;
    loop {
        let resp: FetchResponse = conn.call(
            ApiKey::Fetch,
            12,
            &fetch_request(topic, offset, 1 << 20, 1 << 20),
        );
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            return (batches, p.high_watermark);
        }
        for item in BatchIter::new(&records) {
            let (_, b) = item.expect("served batches parse");
            b.validate().expect("no corrupt batch is ever served");
            batches.push((b.base_offset(), b.last_offset()));
            offset = b.last_offset() + 1;
        }
    }
}

#[test]
fn a_flipped_bit_in_a_closed_segment_after_a_crash_cuts_the_log_there() {
    let mut b = BrokerProcess::start(&["--set", "log.segment.bytes=4096"]);
    let mut c = b.connect();
    create_topic(&mut c, "dmg", 1);
    let one = batch(5);
    for i in 0..40 {
        assert_eq!(produce(&mut c, "dmg", one.clone()), i * 5);
    }
    let (before, hw) = read_everything(&mut c, "dmg");
    assert_eq!((before.len(), hw), (40, 200));
    drop(c);
    b.kill();

    // Damage the third segment's second batch.
    let dir = b.data_dir().join("dmg-0");
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    assert!(logs.len() >= 5, "{logs:?}");
    let third = &logs[2];
    let base: i64 = third
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = std::fs::read(third).unwrap();
    bytes[one.len() + 80] ^= 0x01;
    std::fs::write(third, &bytes).unwrap();

    b.start_again();
    let mut c = b.connect();
    let (after, hw) = read_everything(&mut c, "dmg");
    // Everything before the damaged batch is kept, nothing from it on is served.
    assert_eq!(hw, base + 5);
    assert_eq!(after, before[..after.len()].to_vec());
    assert_eq!(after.last().unwrap().1, base + 4);
    assert!(b.log().contains("cutting the log there"), "{}", b.log());
    // And the partition takes writes again right after the cut.
    assert_eq!(produce(&mut c, "dmg", one.clone()), base + 5);
}

#[test]
fn a_clean_restart_keeps_everything_and_a_crash_restart_too() {
    let mut b = BrokerProcess::start(&["--set", "log.segment.bytes=4096"]);
    let mut c = b.connect();
    create_topic(&mut c, "keep", 1);
    for _ in 0..30 {
        produce(&mut c, "keep", batch(5));
    }
    let (before, _) = read_everything(&mut c, "keep");
    drop(c);
    b.restart();
    // The marker is read and removed at start, so a clean restart recovers nothing.
    assert!(!b.log().contains("no clean shutdown marker"), "{}", b.log());
    assert!(!b.data_dir().join(".kafka_cleanshutdown").exists());
    let (after_clean, _) = read_everything(&mut b.connect(), "keep");
    assert_eq!(after_clean, before);
    b.kill();
    b.start_again();
    let (after_crash, _) = read_everything(&mut b.connect(), "keep");
    assert_eq!(after_crash, before);
    assert!(b.log().contains("no clean shutdown marker"));
}
