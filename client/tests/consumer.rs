//! The consumer against a broker: seeks (offset, beginning, end, timestamp), pause and resume,
//! commits (manual and automatic), groups with rebalance callbacks, and zero-copy records.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{recent_ms, unique, TestBroker};
use quipu_client::{
    Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    RebalanceListener, TopicPartition,
};

/// Produces `count` records `topic`-`partition` with values `v0…` and timestamps
/// `recent_ms() + base + i`.
async fn produce(bootstrap: &str, topic: &str, partition: i32, count: usize, base_ts: i64) {
    let producer = Producer::new(ProducerConfig::new(bootstrap)).unwrap();
    let mut ds = Vec::new();
    for i in 0..count {
        let r = ProducerRecord::new(topic, format!("v{i}"))
            .with_key(format!("k{i}"))
            .with_partition(partition)
            .with_timestamp_ms(recent_ms() + base_ts + i as i64);
        ds.push(producer.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    producer.close().await.unwrap();
}

async fn poll_until(consumer: &mut Consumer, n: usize) -> Vec<quipu_client::ConsumerRecord> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "got {} of {n} records",
            out.len()
        );
        out.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeks_to_offset_beginning_end_and_timestamp() {
    let broker = TestBroker::start();
    let topic = broker.topic("seek", 1).await;
    produce(&broker.bootstrap, &topic, 0, 500, 1_000_000).await;
    let tp = TopicPartition::new(topic.clone(), 0);
    let mut c = Consumer::new(ConsumerConfig::new(&broker.bootstrap)).unwrap();
    c.assign(vec![tp.clone()]);

    c.seek_to_beginning(std::slice::from_ref(&tp))
        .await
        .unwrap();
    let r = poll_until(&mut c, 1).await;
    assert_eq!(r[0].offset, 0);
    assert_eq!(r[0].value.as_deref(), Some(&b"v0"[..]));
    assert_eq!(r[0].key.as_deref(), Some(&b"k0"[..]));
    assert_eq!(r[0].timestamp_ms, recent_ms() + 1_000_000);

    c.seek(&tp, 321).unwrap();
    let r = poll_until(&mut c, 1).await;
    assert_eq!(r[0].offset, 321, "records before the position are skipped");
    assert_eq!(r[0].value.as_deref(), Some(&b"v321"[..]));

    c.seek_to_timestamp(std::slice::from_ref(&tp), recent_ms() + 1_000_400)
        .await
        .unwrap();
    assert_eq!(c.position(&tp), Some(400));
    let r = poll_until(&mut c, 1).await;
    assert_eq!(
        (r[0].offset, r[0].timestamp_ms),
        (400, recent_ms() + 1_000_400)
    );
    // After the last timestamp: the end.
    c.seek_to_timestamp(std::slice::from_ref(&tp), recent_ms() + 9_000_000)
        .await
        .unwrap();
    assert_eq!(c.position(&tp), Some(500));
    let offsets = c
        .offsets_for_times(&[(tp.clone(), recent_ms() + 1_000_010)])
        .await
        .unwrap();
    assert_eq!(offsets, vec![(tp.clone(), Some(10))]);
    assert_eq!(
        c.offsets_for_times(&[(tp.clone(), recent_ms() + 9_000_000)])
            .await
            .unwrap(),
        vec![(tp.clone(), None)]
    );

    c.seek_to_end(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(c.position(&tp), Some(500));
    assert!(c.poll(Duration::from_millis(300)).await.unwrap().is_empty());
    produce(&broker.bootstrap, &topic, 0, 3, 2_000_000).await;
    let r = poll_until(&mut c, 3).await;
    assert_eq!(
        r.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![500, 501, 502]
    );
    assert_eq!(
        c.beginning_offsets(std::slice::from_ref(&tp))
            .await
            .unwrap(),
        vec![(tp.clone(), 0)]
    );
    assert_eq!(
        c.end_offsets(std::slice::from_ref(&tp)).await.unwrap(),
        vec![(tp.clone(), 503)]
    );
    assert_eq!(c.high_watermark(&tp), Some(503));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_every_record_once_across_partitions_with_zero_copy_values() {
    let broker = TestBroker::start();
    let topic = broker.topic("replay", 3).await;
    for p in 0..3 {
        produce(&broker.bootstrap, &topic, p, 3_000, 0).await;
    }
    let tps: Vec<_> = (0..3)
        .map(|p| TopicPartition::new(topic.clone(), p))
        .collect();
    let mut config = ConsumerConfig::new(&broker.bootstrap);
    config.max_partition_fetch_bytes = 16 * 1024;
    let mut c = Consumer::new(config).unwrap();
    c.assign(tps.clone());
    c.seek_to_beginning(&tps).await.unwrap();
    let records = poll_until(&mut c, 9_000).await;
    assert_eq!(records.len(), 9_000, "nothing returned twice");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for r in &records {
        let expected = next.entry(r.partition).or_insert(0);
        assert_eq!(r.offset, *expected, "partition {} in order", r.partition);
        *expected += 1;
        assert_eq!(
            r.value.as_deref(),
            Some(format!("v{}", r.offset).as_bytes())
        );
    }
    // Zero copy: the values of one uncompressed fetch are slices of one buffer, in order.
    let window: Vec<_> = records
        .iter()
        .filter(|r| r.partition == records[0].partition)
        .take(10)
        .collect();
    for pair in window.windows(2) {
        let a = pair[0].value.as_ref().unwrap().as_ptr() as usize;
        let b = pair[1].value.as_ref().unwrap().as_ptr() as usize;
        assert!(
            b > a && b - a < 64,
            "values are views into the response, not copies"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_partitions_return_nothing_until_resumed() {
    let broker = TestBroker::start();
    let topic = broker.topic("pause", 2).await;
    produce(&broker.bootstrap, &topic, 0, 50, 0).await;
    produce(&broker.bootstrap, &topic, 1, 50, 0).await;
    let tps: Vec<_> = (0..2)
        .map(|p| TopicPartition::new(topic.clone(), p))
        .collect();
    let mut c = Consumer::new(ConsumerConfig::new(&broker.bootstrap)).unwrap();
    c.assign(tps.clone());
    c.seek_to_beginning(&tps).await.unwrap();
    c.pause(&tps[..1]).unwrap();
    assert_eq!(c.paused(), vec![tps[0].clone()]);
    let r = poll_until(&mut c, 50).await;
    assert!(r.iter().all(|r| r.partition == 1));
    assert!(c.poll(Duration::from_millis(300)).await.unwrap().is_empty());
    assert_eq!(c.position(&tps[0]), Some(0));
    c.resume(&tps[..1]).unwrap();
    let r = poll_until(&mut c, 50).await;
    assert!(r.iter().all(|r| r.partition == 0));
    assert_eq!(r.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_and_automatic_commits_are_where_the_next_consumer_starts() {
    let broker = TestBroker::start();
    let topic = broker.topic("commit", 1).await;
    produce(&broker.bootstrap, &topic, 0, 100, 0).await;
    let tp = TopicPartition::new(topic.clone(), 0);
    let group = unique("commit-group");
    let config = || {
        let mut c = ConsumerConfig::new(&broker.bootstrap).with_group(&group);
        c.auto_offset_reset = OffsetReset::Earliest;
        c.enable_auto_commit = false;
        c
    };
    // Manual: commit offset 40 explicitly.
    let mut c = Consumer::new(config()).unwrap();
    c.assign(vec![tp.clone()]);
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap(),
        vec![(tp.clone(), None)]
    );
    let r = poll_until(&mut c, 1).await;
    assert_eq!(r[0].offset, 0, "no commit yet: auto.offset.reset=earliest");
    c.commit_offsets(&[(tp.clone(), 40)]).await.unwrap();
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap(),
        vec![(tp.clone(), Some(40))]
    );
    c.close().await.unwrap();

    let mut c = Consumer::new(config()).unwrap();
    c.assign(vec![tp.clone()]);
    let r = poll_until(&mut c, 1).await;
    assert_eq!(r[0].offset, 40, "starts at the committed offset");
    // Automatic: every interval, and on close.
    let mut auto = config();
    auto.enable_auto_commit = true;
    auto.auto_commit_interval_ms = 100;
    let mut c = Consumer::new(auto).unwrap();
    c.assign(vec![tp.clone()]);
    poll_until(&mut c, 60).await;
    let position = c.position(&tp).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.poll(Duration::from_millis(10)).await.unwrap();
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap(),
        vec![(tp.clone(), Some(position))]
    );
    c.close().await.unwrap();
}

type Events = Arc<Mutex<Vec<(String, Vec<TopicPartition>)>>>;

#[derive(Default)]
struct Recorder {
    events: Events,
}

impl RebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        self.events
            .lock()
            .unwrap()
            .push(("revoked".into(), partitions.to_vec()));
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        self.events
            .lock()
            .unwrap()
            .push(("assigned".into(), partitions.to_vec()));
    }
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.events
            .lock()
            .unwrap()
            .push(("lost".into(), partitions.to_vec()));
    }
}

/// A member of `group` subscribed to `topic`: it reads from the beginning, heartbeats every
/// 100 ms, commits automatically every 100 ms and records its rebalance callbacks in `events`;
/// `tweak` adjusts its settings.
fn member(
    bootstrap: &str,
    group: &str,
    topic: &str,
    events: Events,
    tweak: impl FnOnce(&mut ConsumerConfig),
) -> Consumer {
    let mut config = ConsumerConfig::new(bootstrap).with_group(group);
    config.auto_offset_reset = OffsetReset::Earliest;
    config.heartbeat_interval_ms = 100;
    config.session_timeout_ms = 10_000;
    config.auto_commit_interval_ms = 100;
    tweak(&mut config);
    let mut c = Consumer::new(config).unwrap();
    c.set_rebalance_listener(Box::new(Recorder { events }));
    c.subscribe(&[topic]).unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_splits_partitions_and_rebalances_when_a_member_leaves() {
    let broker = TestBroker::start();
    let topic = broker.topic("group", 4).await;
    for p in 0..4 {
        produce(&broker.bootstrap, &topic, p, 100, 0).await;
    }
    let group = unique("members");
    let make = |events: Events| member(&broker.bootstrap, &group, &topic, events, |_| {});
    let events_a = Arc::new(Mutex::new(Vec::new()));
    let events_b = Arc::new(Mutex::new(Vec::new()));
    let mut a = make(events_a.clone());
    let mut b = make(events_b.clone());
    // Both poll until both hold two partitions (the second join rebalances the first).
    let mut seen: BTreeSet<(i32, i64)> = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "group never settled"
        );
        let (ra, rb) = tokio::join!(
            a.poll(Duration::from_millis(200)),
            b.poll(Duration::from_millis(200))
        );
        for r in ra.unwrap().into_iter().chain(rb.unwrap()) {
            seen.insert((r.partition, r.offset));
        }
        if a.assignment().len() == 2 && b.assignment().len() == 2 && seen.len() == 400 {
            break;
        }
    }
    let all: BTreeSet<TopicPartition> = a.assignment().into_iter().chain(b.assignment()).collect();
    assert_eq!(all.len(), 4, "each partition to one member");
    let ga = a.group_generation().unwrap();
    let gb = b.group_generation().unwrap();
    assert_eq!(ga.generation_id, gb.generation_id);
    assert_ne!(ga.leader, gb.leader, "one leader");
    assert_eq!(ga.protocol, "range");
    assert!(events_a
        .lock()
        .unwrap()
        .iter()
        .any(|(e, _)| e == "assigned"));

    // b leaves: a gets all four, and its callbacks say so.
    b.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while a.assignment().len() != 4 {
        assert!(tokio::time::Instant::now() < deadline, "a never took over");
        a.poll(Duration::from_millis(200)).await.unwrap();
    }
    let events = events_a.lock().unwrap().clone();
    let last_two: Vec<_> = events
        .iter()
        .rev()
        .take(2)
        .map(|(e, _)| e.as_str())
        .collect();
    assert_eq!(last_two, vec!["assigned", "revoked"]);
    assert_eq!(events.last().unwrap().1.len(), 4);
    // Nothing left to read: b's commits covered what it read.
    produce(&broker.bootstrap, &topic, 0, 1, 0).await;
    let r = poll_until(&mut a, 1).await;
    assert_eq!((r[0].partition, r[0].offset), (0, 100));
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_polling_leaves_and_its_partitions_move() {
    let broker = TestBroker::start();
    let topic = broker.topic("stalled", 2).await;
    for p in 0..2 {
        produce(&broker.bootstrap, &topic, p, 20, 0).await;
    }
    let group = unique("stalled");
    let make = |events: Events| {
        member(&broker.bootstrap, &group, &topic, events, |config| {
            config.max_poll_interval_ms = 1_500;
        })
    };
    let events_b = Arc::new(Mutex::new(Vec::new()));
    let mut a = make(Arc::new(Mutex::new(Vec::new())));
    let mut b = make(events_b.clone());
    let both_hold_one =
        |a: &Consumer, b: &Consumer| a.assignment().len() == 1 && b.assignment().len() == 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !both_hold_one(&a, &b) {
        assert!(tokio::time::Instant::now() < deadline, "group never split");
        let (ra, rb) = tokio::join!(
            a.poll(Duration::from_millis(100)),
            b.poll(Duration::from_millis(100))
        );
        ra.unwrap();
        rb.unwrap();
    }

    // b stops polling (its heartbeats alone would keep it in the group): past
    // max.poll.interval.ms it leaves, and a takes both partitions over.
    let stalled_at = tokio::time::Instant::now();
    let events_before_stall = events_b.lock().unwrap().len();
    while a.assignment().len() != 2 {
        assert!(
            stalled_at.elapsed() < Duration::from_secs(30),
            "a stalled member kept its partition"
        );
        a.poll(Duration::from_millis(100)).await.unwrap();
    }
    assert!(
        stalled_at.elapsed() >= Duration::from_millis(800),
        "b left before its poll interval ran out"
    );
    let admin = broker.admin();
    let members = admin.describe_group(&group).await.unwrap().members;
    assert_eq!(members.len(), 1, "the stalled member left the group");

    // b polls again: its partition was lost (not revoked, nothing committed), and it rejoins.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !both_hold_one(&a, &b) {
        assert!(tokio::time::Instant::now() < deadline, "b never rejoined");
        let (ra, rb) = tokio::join!(
            a.poll(Duration::from_millis(100)),
            b.poll(Duration::from_millis(100))
        );
        ra.unwrap();
        rb.unwrap();
    }
    let events: Vec<String> = events_b.lock().unwrap()[events_before_stall..]
        .iter()
        .map(|(e, _)| e.clone())
        .collect();
    assert_eq!(
        events.first().map(String::as_str),
        Some("lost"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("assigned"),
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "lost").count(),
        1,
        "{events:?}"
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_takes_in_new_partitions_and_topics_created_after_it_subscribed() {
    let broker = TestBroker::start();
    let admin = broker.admin();
    let grows = broker.topic("grows", 1).await;
    let later = unique("later");
    let mut config = ConsumerConfig::new(&broker.bootstrap).with_group(&unique("growth"));
    config.auto_offset_reset = OffsetReset::Earliest;
    config.heartbeat_interval_ms = 100;
    config.client.metadata_max_age_ms = 300;
    config.client.allow_auto_topic_creation = false;
    let mut consumer = Consumer::new(config).unwrap();
    consumer.subscribe(&[&grows, &later]).unwrap();
    produce(&broker.bootstrap, &grows, 0, 1, 0).await;
    assert_eq!(poll_until(&mut consumer, 1).await.len(), 1);
    assert_eq!(consumer.assignment(), [TopicPartition::new(&grows, 0)]);

    admin.create_partitions(&grows, 3).await.unwrap();
    admin
        .create_topic(quipu_client::admin::NewTopic::new(later.clone(), 2))
        .await
        .unwrap();
    admin
        .wait_for_topic(&later, Duration::from_secs(30))
        .await
        .unwrap();
    produce(&broker.bootstrap, &grows, 2, 1, 0).await;
    produce(&broker.bootstrap, &later, 1, 1, 0).await;
    let got: BTreeSet<(String, i32)> = poll_until(&mut consumer, 2)
        .await
        .into_iter()
        .map(|r| (r.topic.to_string(), r.partition))
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([(grows.clone(), 2), (later.clone(), 1)])
    );
    assert_eq!(consumer.assignment().len(), 5);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_group_moves_only_the_partitions_that_change_hands() {
    let broker = TestBroker::start();
    let topic = broker.topic("coop", 4).await;
    for p in 0..4 {
        produce(&broker.bootstrap, &topic, p, 50, 0).await;
    }
    let group = unique("coop");
    let make = |events: Events| {
        member(&broker.bootstrap, &group, &topic, events, |config| {
            config.assignment_strategies = vec!["cooperative-sticky".into()];
        })
    };
    let (events_a, events_b) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let mut a = make(events_a.clone());
    let mut seen: BTreeSet<(i32, i64)> = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while a.assignment().len() != 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a never got the topic"
        );
        for r in a.poll(Duration::from_millis(100)).await.unwrap() {
            seen.insert((r.partition, r.offset));
        }
    }
    let first: BTreeSet<TopicPartition> = a.assignment().into_iter().collect();

    let mut b = make(events_b.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let settled = |a: &Consumer, b: &Consumer| {
        let generations = (a.group_generation(), b.group_generation());
        a.assignment().len() == 2
            && b.assignment().len() == 2
            && matches!(generations, (Some(x), Some(y)) if x.generation_id == y.generation_id)
    };
    while !settled(&a, &b) || seen.len() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never split"
        );
        let (ra, rb) = tokio::join!(
            a.poll(Duration::from_millis(100)),
            b.poll(Duration::from_millis(100))
        );
        for r in ra.unwrap().into_iter().chain(rb.unwrap()) {
            seen.insert((r.partition, r.offset));
        }
    }
    // a gave up exactly what b took, never everything, and kept the rest throughout.
    let revoked: Vec<Vec<TopicPartition>> = events_a
        .lock()
        .unwrap()
        .iter()
        .filter(|(e, _)| e == "revoked")
        .map(|(_, ps)| ps.clone())
        .collect();
    let given_up: BTreeSet<TopicPartition> = revoked.iter().flatten().cloned().collect();
    let taken: BTreeSet<TopicPartition> = b.assignment().into_iter().collect();
    assert_eq!(given_up, taken, "a's revocations: {revoked:?}");
    assert!(revoked.iter().all(|ps| ps.len() < 4), "{revoked:?}");
    let kept: BTreeSet<TopicPartition> = a.assignment().into_iter().collect();
    assert_eq!(kept.union(&taken).cloned().collect::<BTreeSet<_>>(), first);
    let b_assigned: BTreeSet<TopicPartition> = events_b
        .lock()
        .unwrap()
        .iter()
        .filter(|(e, _)| e == "assigned")
        .flat_map(|(_, ps)| ps.clone())
        .collect();
    assert_eq!(b_assigned, taken);
    assert_eq!(a.group_generation().unwrap().protocol, "cooperative-sticky");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Polls until a poll returns records; every poll returns at most `max`.
async fn next_poll(consumer: &mut Consumer, max: usize) -> Vec<quipu_client::ConsumerRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "nothing to poll");
        let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
        assert!(
            records.len() <= max,
            "a poll returned {} records",
            records.len()
        );
        if !records.is_empty() {
            return records;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_returns_at_most_max_poll_records_and_positions_follow_what_it_returned() {
    let broker = TestBroker::start();
    let topic = broker.topic("max-poll", 2).await;
    for p in 0..2 {
        produce(&broker.bootstrap, &topic, p, 500, 0).await;
    }
    let mut config = ConsumerConfig::new(&broker.bootstrap).with_group(&unique("max-poll"));
    config.max_poll_records = 64;
    config.enable_auto_commit = false;
    config.auto_offset_reset = OffsetReset::Earliest;
    let mut consumer = Consumer::new(config).unwrap();
    let (p0, p1) = (
        TopicPartition::new(&topic, 0),
        TopicPartition::new(&topic, 1),
    );
    consumer.assign(vec![p0.clone(), p1.clone()]);

    // The first poll hands out part of what one fetch brought: positions stop just past the
    // records returned, and a commit covers only those.
    let first = next_poll(&mut consumer, 64).await;
    let mut positions = Vec::new();
    for tp in [&p0, &p1] {
        let returned = first.iter().filter(|r| r.partition == tp.partition);
        let expected = returned.map(|r| r.offset + 1).max().unwrap_or(0);
        assert_eq!(consumer.position(tp), Some(expected), "{tp}");
        positions.push((tp.clone(), Some(expected)));
    }
    consumer.commit().await.unwrap();
    let committed: Vec<_> = consumer
        .committed(&[p0.clone(), p1.clone()])
        .await
        .unwrap()
        .into_iter()
        .map(|(tp, o)| (tp, o.or(Some(0))))
        .collect();
    assert_eq!(committed, positions);

    // A seek drops what was buffered for its partition; a paused partition returns nothing,
    // buffered or not, until it is resumed, and then goes on from its position.
    let p1_position = consumer.position(&p1).unwrap();
    consumer.seek(&p0, 10).unwrap();
    consumer.pause(std::slice::from_ref(&p1)).unwrap();
    let mut p0_offsets = Vec::new();
    while p0_offsets.len() < 490 {
        for r in next_poll(&mut consumer, 64).await {
            assert_eq!(r.partition, 0, "a paused partition's record came back");
            p0_offsets.push(r.offset);
        }
    }
    assert_eq!(p0_offsets, (10..500).collect::<Vec<i64>>());
    consumer.resume(std::slice::from_ref(&p1)).unwrap();
    let mut p1_offsets = Vec::new();
    while p1_offsets.len() < (500 - p1_position) as usize {
        p1_offsets.extend(next_poll(&mut consumer, 64).await.iter().map(|r| r.offset));
    }
    assert_eq!(p1_offsets, (p1_position..500).collect::<Vec<i64>>());
    assert_eq!(consumer.position(&p1), Some(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_positions_reset_by_policy() {
    let broker = TestBroker::start();
    let topic = broker.topic("range", 1).await;
    produce(&broker.bootstrap, &topic, 0, 10, 0).await;
    let tp = TopicPartition::new(topic.clone(), 0);
    let mut config = ConsumerConfig::new(&broker.bootstrap);
    config.auto_offset_reset = OffsetReset::Earliest;
    let mut c = Consumer::new(config).unwrap();
    c.assign(vec![tp.clone()]);
    c.seek(&tp, 1_000).unwrap();
    let r = poll_until(&mut c, 10).await;
    assert_eq!(r[0].offset, 0, "OFFSET_OUT_OF_RANGE: back to the earliest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misuse_is_an_error_not_a_panic() {
    let broker = TestBroker::start();
    let mut c = Consumer::new(ConsumerConfig::new(&broker.bootstrap)).unwrap();
    assert!(c.subscribe(&["t"]).is_err(), "subscribe needs a group");
    let tp = TopicPartition::new("t", 0);
    assert!(c.seek(&tp, 0).is_err(), "not assigned");
    assert!(c.pause(std::slice::from_ref(&tp)).is_err());
    assert!(c.commit().await.is_err(), "commits need a group");
    let mut config = ConsumerConfig::new(&broker.bootstrap);
    config.assignment_strategies = vec!["sticky-ish".into()];
    assert!(Consumer::new(config).is_err());
}
