//! What concurrent producers, hostile clients and unlucky operators broke (issue 11): each test
//! pins one finding and failed on the code before its fix.

mod common;

use std::collections::BTreeSet;

use common::{batch, create_topic, fetch_request, produce_request, BrokerProcess, Conn};
use quipu_protocol::messages::*;

fn produce(conn: &mut Conn, topic: &str, partition: i32, records: Vec<u8>) -> (i16, i64) {
    let r: ProduceResponse = conn.call(
        ApiKey::Produce,
        9,
        &produce_request(topic, partition, -1, records),
    );
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Item 1: appends from several connections to one partition used to publish their end offsets
/// out of order, and the high watermark's "never moves back" assertion killed a connection.
#[test]
fn concurrent_producers_on_one_partition_are_all_acknowledged_in_order() {
    const PRODUCERS: usize = 6;
    const BATCHES: usize = 400;
    let b = BrokerProcess::start(&[]);
    assert_eq!(
        create_topic(&mut b.connect(), "shared", 1).topics[0].error_code,
        0
    );
    let offsets: Vec<Vec<i64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|_| {
                let mut conn = b.connect();
                s.spawn(move || {
                    (0..BATCHES)
                        .map(|_| {
                            let (code, base) = produce(&mut conn, "shared", 0, batch(1));
                            assert_eq!(code, 0, "produce failed");
                            base
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: BTreeSet<i64> = offsets.iter().flatten().copied().collect();
    assert_eq!(all.len(), PRODUCERS * BATCHES, "an offset was given twice");
    assert_eq!(
        *all.iter().next_back().unwrap(),
        (PRODUCERS * BATCHES) as i64 - 1
    );
    for per_connection in &offsets {
        assert!(per_connection.windows(2).all(|w| w[0] < w[1]));
    }
    let r: FetchResponse = b.connect().call(
        ApiKey::Fetch,
        12,
        &fetch_request("shared", 0, 1 << 20, 1 << 20),
    );
    assert_eq!(
        r.responses[0].partitions[0].high_watermark,
        (PRODUCERS * BATCHES) as i64
    );
}

/// Item 2: once the first partition's batch exceeded `max_bytes` (KIP-74), the budget left for
/// the next partitions underflowed (a panic in a debug build, no limit in a release build).
#[test]
fn a_fetch_whose_first_batch_exceeds_max_bytes_returns_nothing_more() {
    let b = BrokerProcess::start(&[]);
    let mut conn = b.connect();
    assert_eq!(create_topic(&mut conn, "wide", 2).topics[0].error_code, 0);
    let big = batch(50);
    assert!(big.len() > 1_000);
    assert_eq!(produce(&mut conn, "wide", 0, big.clone()).0, 0);
    assert_eq!(produce(&mut conn, "wide", 1, big).0, 0);
    let mut request = fetch_request("wide", 0, 1 << 20, 1_000);
    let mut second = request.topics[0].partitions[0].clone();
    second.partition = 1;
    request.topics[0].partitions.push(second);
    let r: FetchResponse = conn.call(ApiKey::Fetch, 12, &request);
    let parts = &r.responses[0].partitions;
    let records = |i: usize| parts[i].records.as_ref().map_or(0, |r| r.len());
    assert!(records(0) > 1_000, "the first batch comes whole");
    assert_eq!(records(1), 0, "nothing is left of max_bytes for the second");
}
