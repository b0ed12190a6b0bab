//! Replicated partitions on a cluster of three combined nodes (replication factor 3,
//! `min.insync.replicas=2`), each its own `quipu` process: acks=all writes reach every replica,
//! survive the leader's `kill -9`, and the replicas' logs are the same bytes; a follower
//! stopped past `replica.lag.time.max.ms` leaves the in-sync set and comes back; a
//! reassignment moves a partition with its data to a fourth broker.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{batch, fetch_request, name, produce_request, set_config, Conn};
use quipu_protocol::messages::create_topics_request::CreatableTopic;
use quipu_protocol::messages::metadata_request::MetadataRequestTopic;
use quipu_protocol::messages::{alter_partition_reassignments_request, elect_leaders_request};
use quipu_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId,
    CreateTopicsRequest, CreateTopicsResponse, ElectLeadersRequest, ElectLeadersResponse,
    FetchResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    MetadataRequest, MetadataResponse, ProduceResponse,
};
use quipu_protocol::record_batch::BatchIter;
use quipu_protocol::StrBytes;

const NONE: i16 = 0;

/// A partition as Metadata shows it: leader, leader epoch, in-sync replicas.
type State = (i32, i32, Vec<i32>);
const NOT_ENOUGH_REPLICAS: i16 = 19;

/// Short sessions and lag times, so failures are seen within seconds.
const SETTINGS: &[&str] = &[
    "min.insync.replicas=2",
    "default.replication.factor=3",
    "broker.session.timeout.ms=1500",
    "broker.heartbeat.interval.ms=300",
    "replica.lag.time.max.ms=2000",
    "replica.fetch.wait.max.ms=100",
    "replica.fetch.backoff.ms=100",
];

fn create(conn: &mut Conn, topic: &str) {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = 1;
    t.replication_factor = 3;
    let mut r = CreateTopicsRequest::default();
    r.topics = vec![t];
    r.timeout_ms = 20_000;
    let resp: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &r);
    assert_eq!(resp.topics[0].error_code, NONE);
}

/// Partition 0 of `topic` as node `i` sees it: leader, leader epoch, in-sync replicas.
fn partition_state(cluster: &Cluster, i: usize, topic: &str) -> Option<State> {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name(topic));
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![t]);
    let resp: MetadataResponse = cluster.nodes[i].connect().call(ApiKey::Metadata, 12, &r);
    let p = resp.topics.first()?.partitions.first()?;
    let isr = p.isr_nodes.iter().map(|b| b.0).collect();
    Some((p.leader_id.0, p.leader_epoch, isr))
}

/// Waits until a live node names a live leader of `topic` that `accept` takes; returns the
/// leader's index and the state.
fn wait_for(
    cluster: &mut Cluster,
    topic: &str,
    what: &str,
    accept: impl Fn(&State) -> bool,
) -> (usize, State) {
    wait_for_skipping(cluster, &[], topic, what, accept)
}

/// As [`wait_for`], not asking the nodes in `paused` (stopped with SIGSTOP: they would not
/// answer).
fn wait_for_skipping(
    cluster: &mut Cluster,
    paused: &[usize],
    topic: &str,
    what: &str,
    accept: impl Fn(&State) -> bool,
) -> (usize, State) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A node restarted a moment ago may still hold stale metadata: the newest leader
        // epoch any node knows wins, as the leader itself states it.
        let mut alive = cluster.alive();
        alive.retain(|i| !paused.contains(i));
        let states: Vec<(usize, State)> = alive
            .iter()
            .filter_map(|i| Some((*i, partition_state(cluster, *i, topic)?)))
            .collect();
        let newest = states.iter().map(|(_, s)| s.1).max();
        let seen = states
            .iter()
            .filter(|(_, s)| Some(s.1) == newest)
            .find(|(i, s)| s.0 == *i as i32 + 1)
            .or_else(|| states.iter().find(|(_, s)| Some(s.1) == newest))
            .map(|(_, s)| s.clone());
        if let Some(state) = &seen {
            let leader = state.0 as usize;
            if state.0 > 0 && alive.contains(&(leader - 1)) && accept(state) {
                return (leader - 1, state.clone());
            }
        }
        assert!(Instant::now() < deadline, "never {what}: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Produces `count` records with acks=all to the current leader, retrying a refused batch until
/// it is acknowledged; returns the acknowledged base offsets.
fn produce_acked(cluster: &mut Cluster, topic: &str, batches: usize) -> Vec<i64> {
    produce_acked_skipping(cluster, &[], topic, batches)
}

/// As [`produce_acked`], not asking the nodes in `skip` (stopped, or serving no clients).
fn produce_acked_skipping(
    cluster: &mut Cluster,
    skip: &[usize],
    topic: &str,
    batches: usize,
) -> Vec<i64> {
    let mut offsets = Vec::new();
    while offsets.len() < batches {
        let (leader, _) = wait_for_skipping(cluster, skip, topic, "led", |_| true);
        let mut conn = cluster.nodes[leader].connect();
        let resp: ProduceResponse = conn.call(
            ApiKey::Produce,
            9,
            &produce_request(topic, 0, -1, batch(10)),
        );
        let p = &resp.responses[0].partition_responses[0];
        match p.error_code {
            NONE => offsets.push(p.base_offset),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    offsets
}

/// Every record of partition 0 below the high watermark, read from node `i` as a consumer:
/// the batches' bytes and base offsets.
fn read_all(cluster: &Cluster, i: usize, topic: &str) -> (Vec<u8>, Vec<i64>) {
    let mut conn = cluster.nodes[i].connect();
    let (mut bytes, mut bases, mut offset) = (Vec::new(), Vec::new(), 0);
    loop {
        let resp: FetchResponse = conn.call(
            ApiKey::Fetch,
            12,
            &fetch_request(topic, offset, 1 << 20, 1 << 20),
        );
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, NONE);
        let records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            return (bytes, bases);
        }
        for item in BatchIter::new(&records) {
            let (_, b) = item.unwrap();
            bases.push(b.base_offset());
            bytes.extend_from_slice(b.as_bytes());
            offset = b.last_offset() + 1;
        }
    }
}

/// The first `len` bytes of node `i`'s first segment of partition 0.
fn segment_prefix(cluster: &Cluster, i: usize, topic: &str, len: usize) -> Vec<u8> {
    let path = cluster.nodes[i]
        .data_dir()
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");
    let bytes = std::fs::read(path).unwrap();
    bytes[..len.min(bytes.len())].to_vec()
}

#[test]
fn acknowledged_writes_survive_leader_kills_and_every_replica_holds_the_same_bytes() {
    let mut cluster = Cluster::start(3, 1000, SETTINGS);
    cluster.registered();
    create(&mut cluster.nodes[0].connect(), "r");
    let mut acked = produce_acked(&mut cluster, "r", 20);
    for _round in 0..3 {
        let (old, (_, epoch, _)) = wait_for(&mut cluster, "r", "fully in sync", |s| s.2.len() == 3);
        cluster.nodes[old].kill();
        let (_, (_, new_epoch, isr)) = wait_for(&mut cluster, "r", "led anew", |s| s.1 > epoch);
        assert!(!isr.contains(&(old as i32 + 1)), "{isr:?}");
        assert!(new_epoch > epoch);
        acked.extend(produce_acked(&mut cluster, "r", 20));
        cluster.nodes[old].start_again();
    }
    let (leader, _) = wait_for(&mut cluster, "r", "fully in sync", |s| s.2.len() == 3);
    let (bytes, bases) = read_all(&cluster, leader, "r");
    for offset in &acked {
        assert!(
            bases.contains(offset),
            "acknowledged batch at {offset} lost: read {bases:?}, acknowledged {acked:?}"
        );
    }
    // Every replica's log is the leader's, byte for byte, once it has caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..3 {
        while segment_prefix(&cluster, i, "r", bytes.len()) != bytes {
            assert!(
                Instant::now() < deadline,
                "node {i}'s log differs from the leader's"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_stopped_follower_leaves_the_in_sync_set_and_comes_back_and_acks_all_needs_enough() {
    let mut cluster = Cluster::start(3, 1000, SETTINGS);
    cluster.registered();
    create(&mut cluster.nodes[0].connect(), "s");
    produce_acked(&mut cluster, "s", 5);
    let (leader, _) = wait_for(&mut cluster, "s", "fully in sync", |s| s.2.len() == 3);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // SIGSTOP one follower: it leaves the in-sync set after the lag time; writes go on.
    let stopped = followers[0];
    let pid = cluster.nodes[stopped].pid() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let paused = [stopped];
    let (leader, _) = wait_for_skipping(&mut cluster, &paused, "s", "shrunk", |s| s.2.len() == 2);
    let mut conn = cluster.nodes[leader].connect();
    for _ in 0..5 {
        let acked: ProduceResponse =
            conn.call(ApiKey::Produce, 9, &produce_request("s", 0, -1, batch(1)));
        assert_eq!(acked.responses[0].partition_responses[0].error_code, NONE);
    }
    // More in-sync replicas asked than there are: acks=all is refused, acks=1 still answers.
    // (Stopping a second node would stop the metadata quorum of these combined nodes too.)
    assert_eq!(set_config(&mut conn, "s", "min.insync.replicas", "3"), NONE);
    let all: ProduceResponse =
        conn.call(ApiKey::Produce, 9, &produce_request("s", 0, -1, batch(1)));
    assert_eq!(
        all.responses[0].partition_responses[0].error_code,
        NOT_ENOUGH_REPLICAS
    );
    let one: ProduceResponse = conn.call(ApiKey::Produce, 9, &produce_request("s", 0, 1, batch(1)));
    assert_eq!(one.responses[0].partition_responses[0].error_code, NONE);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_for(&mut cluster, "s", "back in sync", |s| s.2.len() == 3);
    produce_acked(&mut cluster, "s", 5);
}

/// Partition 0's replicas as node `i` sees them.
fn replicas_of(cluster: &Cluster, i: usize, topic: &str) -> Vec<i32> {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name(topic));
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![t]);
    let resp: MetadataResponse = cluster.nodes[i].connect().call(ApiKey::Metadata, 12, &r);
    resp.topics[0].partitions[0]
        .replica_nodes
        .iter()
        .map(|b| b.0)
        .collect()
}

fn reassign(conn: &mut Conn, topic: &str, target: &[i32]) -> i16 {
    let mut p = alter_partition_reassignments_request::ReassignablePartition::default();
    p.partition_index = 0;
    p.replicas = Some(target.iter().copied().map(BrokerId).collect());
    let mut t = alter_partition_reassignments_request::ReassignableTopic::default();
    t.name = name(topic);
    t.partitions = vec![p];
    let mut r = AlterPartitionReassignmentsRequest::default();
    r.topics = vec![t];
    r.timeout_ms = 10_000;
    let resp: AlterPartitionReassignmentsResponse =
        conn.call(ApiKey::AlterPartitionReassignments, 0, &r);
    assert_eq!(resp.error_code, NONE);
    resp.responses[0].partitions[0].error_code
}

fn reassignments_in_progress(conn: &mut Conn) -> usize {
    let r = ListPartitionReassignmentsRequest::default();
    let resp: ListPartitionReassignmentsResponse =
        conn.call(ApiKey::ListPartitionReassignments, 0, &r);
    resp.topics.iter().map(|t| t.partitions.len()).sum()
}

#[test]
fn a_reassignment_moves_a_partition_with_its_data_to_a_fourth_broker() {
    let mut cluster = Cluster::with_observers(3, 1, 1000, SETTINGS);
    cluster.registered();
    create(&mut cluster.nodes[0].connect(), "m");
    let acked = produce_acked(&mut cluster, "m", 30);
    let current = replicas_of(&cluster, 0, "m");
    let newcomer = (1..=4).find(|b| !current.contains(b)).unwrap();
    let leaving = current[0];
    let target: Vec<i32> = current[1..].iter().copied().chain([newcomer]).collect();
    let mut conn = cluster.nodes[0].connect();
    assert_eq!(reassign(&mut conn, "m", &target), NONE);
    let deadline = Instant::now() + Duration::from_secs(30);
    while reassignments_in_progress(&mut conn) > 0 || replicas_of(&cluster, 0, "m") != target {
        assert!(Instant::now() < deadline, "the move never completed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (leader, (_, _, isr)) = wait_for(&mut cluster, "m", "moved", |s| s.2.len() == 3);
    assert!(!isr.contains(&leaving), "{isr:?}");
    let (_, bases) = read_all(&cluster, leader, "m");
    for offset in &acked {
        assert!(bases.contains(offset), "batch at {offset} lost in the move");
    }
    // The broker the replica left holds its log no more.
    let dir = cluster.nodes[leaving as usize - 1].data_dir().join("m-0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    produce_acked(&mut cluster, "m", 5);
}

/// A consumer Fetch v12 of partition 0 of `topic` from `offset`, sent from rack `rack`.
fn fetch_from_rack(conn: &mut Conn, topic: &str, rack: &str, version: i16) -> (i16, i32, usize) {
    let mut r = fetch_request(topic, 0, 1 << 20, 1 << 20);
    r.rack_id = StrBytes::from_string(rack.to_string());
    let resp: FetchResponse = conn.call(ApiKey::Fetch, version, &r);
    let p = &resp.responses[0].partitions[0];
    let records = p.records.as_ref().map_or(0, |r| r.len());
    (p.error_code, p.preferred_read_replica.0, records)
}

#[test]
fn a_consumer_is_sent_to_the_in_sync_replica_of_its_rack_and_reads_there() {
    let mut settings = SETTINGS.to_vec();
    settings.extend([
        "broker.rack=rack-{id}",
        "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector",
    ]);
    let mut cluster = Cluster::start(3, 1000, &settings);
    cluster.registered();
    create(&mut cluster.nodes[0].connect(), "f");
    produce_acked(&mut cluster, "f", 5);
    let (leader, (_, _, _)) = wait_for(&mut cluster, "f", "fully in sync", |s| s.2.len() == 3);
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let rack = format!("rack-{}", follower + 1);
    // The leader names the replica of the consumer's rack and sends no records.
    let mut conn = cluster.nodes[leader].connect();
    let (code, preferred, records) = fetch_from_rack(&mut conn, "f", &rack, 12);
    assert_eq!((code, preferred, records), (NONE, follower as i32 + 1, 0));
    // The leader's own rack reads from the leader.
    let own = format!("rack-{}", leader + 1);
    let (_, preferred, records) = fetch_from_rack(&mut conn, "f", &own, 12);
    assert_eq!(preferred, -1);
    assert!(records > 0);
    // The follower serves the consumer, up to its high watermark.
    let mut at_follower = cluster.nodes[follower].connect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, records) = fetch_from_rack(&mut at_follower, "f", &rack, 12);
        assert_eq!(code, NONE);
        if records > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the follower served nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A consumer too old for KIP-392 (v10) is sent to the leader.
    let (code, _, _) = fetch_from_rack(&mut at_follower, "f", "", 10);
    assert_eq!(code, 6, "NOT_LEADER_OR_FOLLOWER");
}

/// Waits until every node's log of partition 0 is the leader's, byte for byte: everything
/// below the high watermark, read back from the leader.
fn replicas_agree(cluster: &mut Cluster, topic: &str) -> Vec<i64> {
    let (leader, _) = wait_for(cluster, topic, "fully in sync", |s| s.2.len() == 3);
    let (bytes, bases) = read_all(cluster, leader, topic);
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..cluster.nodes.len() {
        while segment_prefix(cluster, i, topic, bytes.len() + 1) != [&bytes[..], &[0]].concat() {
            assert!(
                Instant::now() < deadline,
                "node {i}'s log differs from the leader's"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    bases
}

#[test]
fn a_leader_back_with_records_nobody_else_has_truncates_them_at_the_epoch_boundary() {
    let mut cluster = Cluster::start(3, 1000, SETTINGS);
    cluster.registered();
    create(&mut cluster.nodes[0].connect(), "d");
    let committed = produce_acked(&mut cluster, "d", 10);
    let (old, (_, epoch, _)) = wait_for(&mut cluster, "d", "fully in sync", |s| s.2.len() == 3);
    // The followers stop: the leader alone takes acks=1 writes nobody else will ever hold.
    let followers: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let pids: Vec<i32> = followers
        .iter()
        .map(|i| cluster.nodes[*i].pid() as i32)
        .collect();
    for pid in &pids {
        unsafe { libc::kill(*pid, libc::SIGSTOP) };
    }
    let mut conn = cluster.nodes[old].connect();
    for _ in 0..5 {
        let one: ProduceResponse =
            conn.call(ApiKey::Produce, 9, &produce_request("d", 0, 1, batch(3)));
        assert_eq!(one.responses[0].partition_responses[0].error_code, NONE);
    }
    // It dies; the followers come back and one of them leads, at a new epoch, and writes.
    cluster.nodes[old].kill();
    for pid in &pids {
        unsafe { libc::kill(*pid, libc::SIGCONT) };
    }
    wait_for(&mut cluster, "d", "led anew", |s| s.1 > epoch);
    let later = produce_acked(&mut cluster, "d", 10);
    // The old leader comes back: its extra records go, and it copies the new leader's log.
    cluster.nodes[old].start_again();
    let bases = replicas_agree(&mut cluster, "d");
    for offset in committed.iter().chain(&later) {
        assert!(
            bases.contains(offset),
            "acknowledged batch at {offset} lost"
        );
    }
    // An acks=1 batch a follower fetched before it stopped may live on; no more than those.
    let extra = bases.len() - committed.len() - later.len();
    assert!(extra <= 5, "{bases:?}");
}

/// The `quipu` CLI's `topic describe` of `topic`, against the cluster's brokers.
fn cli_describe(cluster: &Cluster, topic: &str) -> String {
    let bootstrap: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quipu"))
        .args(["topic", "describe", topic])
        .env("QUIPU_BOOTSTRAP", bootstrap.join(","))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn our_idempotent_producer_and_consumer_group_ride_through_leader_kills() {
    use quipu_client::config::Acks;
    use quipu_client::{
        Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    };
    const RECORDS: usize = 3_000;
    let mut cluster = Cluster::start(3, 1000, SETTINGS);
    cluster.registered();
    create(&mut cluster.nodes[0].connect(), "c");
    let bootstrap: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let bootstrap = bootstrap.join(",");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = ProducerConfig::new(&bootstrap);
    config.acks = Acks::All;
    config.enable_idempotence = Some(true);
    config.delivery_timeout_ms = 60_000;
    let producer = runtime.block_on(async { Producer::new(config) }).unwrap();
    let sending = runtime.spawn(async move {
        let mut deliveries = Vec::new();
        for i in 0..RECORDS {
            let record = ProducerRecord::new("c", format!("v-{i}")).with_key(format!("k-{i}"));
            deliveries.push(producer.send(record).await.unwrap());
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut offsets = Vec::new();
        for d in deliveries {
            offsets.push(d.await.unwrap().offset);
        }
        producer.close().await.unwrap();
        offsets
    });
    for _ in 0..2 {
        let (old, (_, epoch, _)) = wait_for(&mut cluster, "c", "fully in sync", |s| s.2.len() == 3);
        cluster.nodes[old].kill();
        wait_for(&mut cluster, "c", "led anew", |s| s.1 > epoch);
        cluster.nodes[old].start_again();
    }
    let offsets = runtime.block_on(sending).unwrap();
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        RECORDS,
        "each record acknowledged at an offset of its own"
    );
    // A consumer group reads every record exactly once, in order.
    let mut config = ConsumerConfig::new(&bootstrap).with_group("riders");
    config.auto_offset_reset = OffsetReset::Earliest;
    let values = runtime.block_on(async move {
        let mut consumer = Consumer::new(config).unwrap();
        consumer.subscribe(&["c"]).unwrap();
        let mut values = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while values.len() < RECORDS && Instant::now() < deadline {
            for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
                let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                values.push((r.offset, value));
            }
            consumer.commit().await.unwrap();
        }
        consumer.close().await.unwrap();
        values
    });
    let read: Vec<String> = values.iter().map(|(_, v)| v.clone()).collect();
    let expected: Vec<String> = (0..RECORDS).map(|i| format!("v-{i}")).collect();
    assert_eq!(read, expected, "every record once, in order");
    let read_offsets: Vec<i64> = values.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        read_offsets, offsets,
        "read where the producer was told it went"
    );
    // The CLI shows the partition's leader, replicas and in-sync replicas.
    wait_for(&mut cluster, "c", "fully in sync", |s| s.2.len() == 3);
    let described = cli_describe(&cluster, "c");
    let isr = described
        .split("Isr: ")
        .nth(1)
        .map(|s| s.trim().split(',').count());
    assert_eq!(isr, Some(3), "{described}");
}

#[test]
fn replica_fetches_and_epochs_are_checked_and_the_purgatory_is_bounded() {
    let mut settings = SETTINGS.to_vec();
    // A stopped follower stays in the in-sync set for the whole test: acks=all waits on it.
    settings
        .retain(|s| !s.starts_with("replica.lag.time.max.ms") && !s.starts_with("broker.session"));
    settings.extend([
        "replica.lag.time.max.ms=60000",
        "broker.session.timeout.ms=60000",
        "produce.purgatory.max.requests=1",
    ]);
    let mut cluster = Cluster::start(3, 1000, &settings);
    cluster.registered();
    create(&mut cluster.nodes[0].connect(), "b");
    produce_acked(&mut cluster, "b", 2);
    let (first, _) = wait_for(&mut cluster, "b", "fully in sync", |s| s.2.len() == 3);
    // Another replica first in the list, then a preferred election: a new leader, epoch 1.
    let mut replicas = replicas_of(&cluster, 0, "b");
    replicas.rotate_left(1);
    let mut admin = cluster.nodes[0].connect();
    assert_eq!(reassign(&mut admin, "b", &replicas), NONE);
    let mut t = elect_leaders_request::TopicPartitions::default();
    t.topic = name("b");
    t.partitions = vec![0];
    let mut r = ElectLeadersRequest::default();
    r.topic_partitions = Some(vec![t]);
    let resp: ElectLeadersResponse = admin.call(ApiKey::ElectLeaders, 2, &r);
    assert_eq!(
        resp.replica_election_results[0].partition_result[0].error_code,
        NONE
    );
    let (leader, (_, epoch, _)) =
        wait_for(&mut cluster, "b", "led by the preferred replica", |s| {
            s.1 == 1 && s.2.len() == 3
        });
    assert_ne!(leader, first);
    assert_eq!(leader as i32 + 1, replicas[0]);
    let mut conn = cluster.nodes[leader].connect();
    // A replica fetch from a broker that is no replica; stale and future epochs.
    let mut r = fetch_request("b", 0, 1 << 20, 1 << 20);
    r.replica_id = BrokerId(99);
    let resp: FetchResponse = conn.call(ApiKey::Fetch, 12, &r);
    assert_eq!(
        resp.responses[0].partitions[0].error_code, 6,
        "NOT_LEADER_OR_FOLLOWER"
    );
    for (asked, code) in [(epoch - 1, 74), (epoch + 1, 75)] {
        let mut r = fetch_request("b", 0, 1 << 20, 1 << 20);
        r.topics[0].partitions[0].current_leader_epoch = asked;
        let resp: FetchResponse = conn.call(ApiKey::Fetch, 12, &r);
        assert_eq!(
            resp.responses[0].partitions[0].error_code, code,
            "epoch {asked}"
        );
    }
    // One follower stopped: an acks=all produce waits in the purgatory's one place, and the
    // next one is answered at once, long before its timeout.
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let pid = cluster.nodes[follower].pid() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut waiting = cluster.nodes[leader].connect();
    let mut held = produce_request("b", 0, -1, batch(1));
    held.timeout_ms = 10_000;
    let id = waiting.send(ApiKey::Produce, 9, &held);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut refused = produce_request("b", 0, -1, batch(1));
    refused.timeout_ms = 10_000;
    let resp: ProduceResponse = conn.call(ApiKey::Produce, 9, &refused);
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 7,
        "REQUEST_TIMED_OUT"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The follower resumes: the waiting produce is acknowledged.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let resp: ProduceResponse = waiting.receive(ApiKey::Produce, 9, id);
    assert_eq!(resp.responses[0].partition_responses[0].error_code, NONE);
}

#[test]
fn with_two_followers_stopped_acks_all_is_refused_and_acks_one_answers() {
    // Separate controllers (nodes 1-3) keep the metadata quorum while two brokers are stopped.
    let mut cluster = Cluster::with_roles("controller", (3, 3), 1000, SETTINGS);
    let controllers = [0, 1, 2];
    for i in 3..6 {
        cluster.brokers_listed_by(i, 3);
    }
    create(&mut cluster.nodes[3].connect(), "two");
    produce_acked_skipping(&mut cluster, &controllers, "two", 3);
    let (leader, _) = wait_for_skipping(&mut cluster, &controllers, "two", "fully in sync", |s| {
        s.2.len() == 3
    });
    let followers: Vec<usize> = (3..6).filter(|i| *i != leader).collect();
    let pids: Vec<i32> = followers
        .iter()
        .map(|i| cluster.nodes[*i].pid() as i32)
        .collect();
    for pid in &pids {
        unsafe { libc::kill(*pid, libc::SIGSTOP) };
    }
    let mut skip = controllers.to_vec();
    skip.extend(&followers);
    wait_for_skipping(&mut cluster, &skip, "two", "shrunk to the leader", |s| {
        s.2.len() == 1
    });
    let mut conn = cluster.nodes[leader].connect();
    let all: ProduceResponse =
        conn.call(ApiKey::Produce, 9, &produce_request("two", 0, -1, batch(1)));
    assert_eq!(
        all.responses[0].partition_responses[0].error_code,
        NOT_ENOUGH_REPLICAS
    );
    let one: ProduceResponse =
        conn.call(ApiKey::Produce, 9, &produce_request("two", 0, 1, batch(1)));
    assert_eq!(one.responses[0].partition_responses[0].error_code, NONE);
    for pid in &pids {
        unsafe { libc::kill(*pid, libc::SIGCONT) };
    }
    wait_for_skipping(&mut cluster, &controllers, "two", "back in sync", |s| {
        s.2.len() == 3
    });
    produce_acked_skipping(&mut cluster, &controllers, "two", 3);
}
