//! A cluster of combined nodes on loopback, each its own `quipu` process with its own ports and
//! data directory: the metadata quorum survives its leader's `kill -9`, admin changes work
//! through every node, and every node ends with the same image (compared by digest).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{free_port, name, BrokerProcess, Conn};
use quipu_protocol::messages::create_topics_request::CreatableTopic;
use quipu_protocol::messages::delete_topics_request::DeleteTopicState;
use quipu_protocol::messages::describe_configs_request::DescribeConfigsResource;
use quipu_protocol::messages::{broker_registration_request, describe_quorum_request};
use quipu_protocol::messages::{
    ApiKey, BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId, BrokerRegistrationRequest,
    BrokerRegistrationResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, DescribeQuorumRequest,
    DescribeQuorumResponse, MetadataRequest, MetadataResponse,
};
use quipu_protocol::StrBytes;

/// Kafka's error codes the test tells apart.
const NONE: i16 = 0;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_CONTROLLER: i16 = 41;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const STALE_BROKER_EPOCH: i16 = 77;
const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
const INCONSISTENT_CLUSTER_ID: i16 = 104;

fn create(conn: &mut Conn, topic: &str, replication_factor: i16) -> i16 {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = 2;
    t.replication_factor = replication_factor;
    let mut r = CreateTopicsRequest::default();
    r.topics = vec![t];
    r.timeout_ms = 20_000;
    let resp: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &r);
    let created = &resp.topics[0];
    if created.error_code == NONE {
        // The response names the topic's factor and count, as Kafka's does.
        assert_eq!(
            (created.replication_factor, created.num_partitions),
            (replication_factor, 2)
        );
    }
    created.error_code
}

fn delete(conn: &mut Conn, topic: &str) -> i16 {
    let mut t = DeleteTopicState::default();
    t.name = Some(name(topic));
    let mut r = DeleteTopicsRequest::default();
    r.topics = vec![t];
    r.timeout_ms = 20_000;
    let resp: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 6, &r);
    resp.responses[0].error_code
}

/// Sets `retention.ms` of `topic` (IncrementalAlterConfigs SET).
fn set_retention(conn: &mut Conn, topic: &str, retention_ms: i64) -> i16 {
    common::set_config(conn, topic, "retention.ms", &retention_ms.to_string())
}

/// `retention.ms` of `topic` as node `node` describes it.
fn retention(node: &BrokerProcess, topic: &str) -> String {
    let mut res = DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_string(topic.to_string());
    res.configuration_keys = Some(vec![StrBytes::from_static_str("retention.ms")]);
    let mut r = DescribeConfigsRequest::default();
    r.resources = vec![res];
    let resp: DescribeConfigsResponse = node.connect().call(ApiKey::DescribeConfigs, 4, &r);
    resp.results[0].configs[0]
        .value
        .as_deref()
        .unwrap_or("")
        .to_string()
}

/// The topics node `node` serves, as Metadata lists them.
fn topics(node: &BrokerProcess) -> BTreeSet<String> {
    let mut r = MetadataRequest::default();
    r.topics = None;
    let resp: MetadataResponse = node.connect().call(ApiKey::Metadata, 12, &r);
    resp.topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect()
}

/// Runs `change` until it gives an answer other than NOT_CONTROLLER or a timeout, as an admin
/// client retries; returns the last code and whether an earlier try may have taken effect.
fn with_retries(mut change: impl FnMut() -> i16) -> (i16, bool) {
    let mut maybe = false;
    for _ in 0..20 {
        let code = change();
        // NOT_CONTROLLER (41) or REQUEST_TIMED_OUT (7): the change may have been committed.
        if code != 41 && code != 7 {
            return (code, maybe);
        }
        maybe = true;
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the change never went through");
}

/// Kills the leader of a cluster of `count` nodes with -9 `kills` times, while topics are
/// created, re-configured and deleted through every live node; then checks that every
/// acknowledged change is on every node, none is there twice, and the images are identical.
fn leader_kills_lose_nothing(count: usize, kills: usize) {
    let mut cluster = Cluster::start(count, 50, &[]);
    cluster.registered();
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    let mut retention_of: BTreeMap<String, i64> = BTreeMap::new();
    for round in 0..kills {
        for i in cluster.alive() {
            let topic = format!("r{round}-n{i}");
            let (code, maybe) = with_retries(|| create(&mut cluster.nodes[i].connect(), &topic, 3));
            assert!(
                code == NONE || (maybe && code == TOPIC_ALREADY_EXISTS),
                "{topic}: {code}"
            );
            live.insert(topic);
        }
        let alive = cluster.alive();
        if round > 0 {
            let victim = format!("r{}-n0", round - 1);
            let via = alive[round % alive.len()];
            let (code, maybe) = with_retries(|| delete(&mut cluster.nodes[via].connect(), &victim));
            assert!(
                code == NONE || (maybe && code == UNKNOWN_TOPIC_OR_PARTITION),
                "{victim}: {code}"
            );
            live.remove(&victim);
            retention_of.remove(&victim);
            gone.insert(victim);
            let changed = format!("r{}-n1", round - 1);
            let via = alive[(round + 1) % alive.len()];
            let ms = 3_600_000 + round as i64;
            let (code, _) =
                with_retries(|| set_retention(&mut cluster.nodes[via].connect(), &changed, ms));
            assert_eq!(code, NONE, "{changed}");
            retention_of.insert(changed, ms);
        }
        let leader = cluster.leader();
        cluster.nodes[leader].kill();
        // The nodes left elect a leader and take changes while the old one is down.
        let survivor = cluster.alive()[0];
        let topic = format!("r{round}-while-down");
        let (code, maybe) =
            with_retries(|| create(&mut cluster.nodes[survivor].connect(), &topic, 2));
        assert!(
            code == NONE || (maybe && code == TOPIC_ALREADY_EXISTS),
            "{topic}: {code}"
        );
        live.insert(topic);
        cluster.nodes[leader].start_again();
    }
    let statuses = cluster.converged();
    let digests: BTreeSet<u32> = statuses.iter().map(|s| s.image_digest).collect();
    assert_eq!(digests.len(), 1, "the images differ: {statuses:?}");
    for node in &cluster.nodes {
        let served = topics(node);
        let missing: Vec<_> = live.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "acknowledged topics missing: {missing:?}"
        );
        let back: Vec<_> = gone.intersection(&served).collect();
        assert!(back.is_empty(), "deleted topics are back: {back:?}");
        for (topic, ms) in &retention_of {
            assert_eq!(retention(node, topic), ms.to_string(), "{topic}");
        }
    }
    assert_eq!(
        statuses[0].topics,
        live.len(),
        "no topic is applied twice or lost"
    );
}

#[test]
fn three_nodes_keep_every_acknowledged_change_through_ten_leader_kills() {
    leader_kills_lose_nothing(3, 10);
}

#[test]
fn five_nodes_keep_every_acknowledged_change_through_ten_leader_kills() {
    leader_kills_lose_nothing(5, 10);
}

#[test]
fn a_node_whose_data_directory_is_gone_rejoins_from_a_snapshot() {
    let mut cluster = Cluster::start(3, 10, &[]);
    cluster.registered();
    for n in 0..30 {
        let (code, _) =
            with_retries(|| create(&mut cluster.nodes[n % 3].connect(), &format!("t{n}"), 1));
        assert_eq!(code, NONE);
    }
    let victim = (cluster.leader() + 1) % 3;
    cluster.nodes[victim].kill();
    std::fs::remove_dir_all(cluster.nodes[victim].data_dir()).unwrap();
    std::fs::create_dir_all(cluster.nodes[victim].data_dir()).unwrap();
    cluster.nodes[victim].start_again();
    let statuses = cluster.converged();
    let digests: BTreeSet<u32> = statuses.iter().map(|s| s.image_digest).collect();
    assert_eq!(digests.len(), 1, "the images differ: {statuses:?}");
    assert_eq!(topics(&cluster.nodes[victim]).len(), 30);
    let log = cluster.nodes[victim].log();
    assert!(log.contains("installed a metadata snapshot"), "{log}");
}

#[test]
fn a_broker_stopped_past_its_session_is_fenced_and_unfenced_when_it_resumes() {
    let session = [
        "broker.heartbeat.interval.ms=200",
        "broker.session.timeout.ms=1500",
    ];
    let mut cluster = Cluster::start(3, 1000, &session);
    cluster.registered();
    let leader = cluster.leader();
    let victim = (leader + 1) % 3;
    let pid = cluster.nodes[victim].pid() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let fenced_after = cluster.brokers_listed_by(leader, 2);
    assert!(
        fenced_after >= Duration::from_millis(1000),
        "fenced too soon: {fenced_after:?}"
    );
    let other = 3 - leader - victim;
    cluster.brokers_listed_by(other, 2);
    // A fenced broker gets no new replicas.
    let (code, _) = with_retries(|| create(&mut cluster.nodes[leader].connect(), "three", 3));
    assert_eq!(code, 38, "INVALID_REPLICATION_FACTOR with a broker fenced");
    unsafe { libc::kill(pid, libc::SIGCONT) };
    cluster.brokers_listed_by(leader, 3);
    cluster.brokers_listed_by(victim, 3);
    let (code, _) = with_retries(|| create(&mut cluster.nodes[victim].connect(), "three", 3));
    assert_eq!(code, NONE);
}

#[test]
fn a_broker_shut_down_cleanly_is_fenced_at_once_and_comes_back_registered() {
    let mut cluster = Cluster::start(3, 1000, &[]);
    cluster.registered();
    for victim in [(cluster.leader() + 1) % 3, cluster.leader()] {
        cluster.nodes[victim].terminate();
        let other = (victim + 1) % 3;
        let fenced_after = cluster.brokers_listed_by(other, 2);
        assert!(
            fenced_after < Duration::from_secs(5),
            "fenced by the controlled shutdown, not the 9 s session: {fenced_after:?}"
        );
        cluster.nodes[victim].start_again();
        cluster.brokers_listed_by(other, 3);
    }
}

#[test]
fn broker_only_nodes_follow_the_log_host_replicas_and_forward_changes() {
    let mut cluster = Cluster::with_observers(3, 2, 20, &[]);
    cluster.leader();
    // Every node, observers too, lists all five brokers once they registered.
    cluster.registered();
    cluster.brokers_listed_by(4, 5);
    for n in 0..30 {
        let via = 3 + n % 2; // through the observers: forwarded to the active controller
        let (code, maybe) =
            with_retries(|| create(&mut cluster.nodes[via].connect(), &format!("t{n}"), 5));
        assert!(
            code == NONE || (maybe && code == TOPIC_ALREADY_EXISTS),
            "{code}"
        );
    }
    let leader = cluster.leader();
    cluster.nodes[leader].kill();
    cluster.nodes[leader].start_again();
    let (code, maybe) = with_retries(|| create(&mut cluster.nodes[3].connect(), "after", 3));
    assert!(
        code == NONE || (maybe && code == TOPIC_ALREADY_EXISTS),
        "{code}"
    );
    // An observer whose directory is gone catches up again, from a snapshot.
    cluster.nodes[4].kill();
    std::fs::remove_dir_all(cluster.nodes[4].data_dir()).unwrap();
    std::fs::create_dir_all(cluster.nodes[4].data_dir()).unwrap();
    cluster.nodes[4].start_again();
    let statuses = cluster.converged();
    let digests: BTreeSet<u32> = statuses.iter().map(|s| s.image_digest).collect();
    assert_eq!(digests.len(), 1, "the images differ: {statuses:?}");
    assert_eq!(topics(&cluster.nodes[4]).len(), 31);
    // Replicas are placed on observers as on voters (replication factor 5 of 5 brokers).
    let mut r = MetadataRequest::default();
    r.topics = None;
    let meta: MetadataResponse = cluster.nodes[3].connect().call(ApiKey::Metadata, 12, &r);
    let leaders: BTreeSet<i32> = meta
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.leader_id.0))
        .collect();
    assert!(leaders.contains(&4) || leaders.contains(&5), "{leaders:?}");
    // DescribeQuorum lists the observers (kafka-metadata-quorum's CurrentObservers).
    let mut partition = describe_quorum_request::PartitionData::default();
    partition.partition_index = 0;
    let mut topic = describe_quorum_request::TopicData::default();
    topic.topic_name = name("__cluster_metadata");
    topic.partitions = vec![partition];
    let mut r = DescribeQuorumRequest::default();
    r.topics = vec![topic];
    let resp: DescribeQuorumResponse =
        cluster.nodes[3]
            .connect()
            .call(ApiKey::DescribeQuorum, 2, &r);
    let p = &resp.topics[0].partitions[0];
    let observers: BTreeSet<i32> = p.observers.iter().map(|o| o.replica_id.0).collect();
    assert_eq!(observers, [4, 5].into(), "{resp:?}");
    let voters: BTreeSet<i32> = p.current_voters.iter().map(|o| o.replica_id.0).collect();
    assert_eq!(voters, [1, 2, 3].into(), "{resp:?}");
}

/// BrokerRegistration and BrokerHeartbeat in Kafka's encoding on the controller listener: the
/// leader answers them, the others say NOT_CONTROLLER, and bad ones get Kafka's errors.
#[test]
fn the_controller_listener_answers_kafkas_broker_lifecycle_apis() {
    let mut cluster = Cluster::start(3, 1000, &[]);
    cluster.registered();
    let leader = cluster.leader();
    let at = |i: usize| {
        let address = format!("127.0.0.1:{}", cluster.controller_ports[i]);
        Conn::new(std::net::TcpStream::connect(address).unwrap())
    };
    let mut listener = broker_registration_request::Listener::default();
    listener.name = StrBytes::from_static_str("PLAINTEXT");
    listener.host = StrBytes::from_static_str("127.0.0.1");
    listener.port = 1;
    let mut r = BrokerRegistrationRequest::default();
    r.broker_id = BrokerId(9);
    r.cluster_id = StrBytes::from_static_str("another-cluster");
    r.incarnation_id = uuid::Uuid::new_v4();
    r.listeners = vec![listener];
    let resp: BrokerRegistrationResponse = at(leader).call(ApiKey::BrokerRegistration, 4, &r);
    assert_eq!(resp.error_code, INCONSISTENT_CLUSTER_ID);
    r.cluster_id = StrBytes::from_string(cluster.cluster_id.clone());
    let follower = (leader + 1) % 3;
    let resp: BrokerRegistrationResponse = at(follower).call(ApiKey::BrokerRegistration, 0, &r);
    assert_eq!(resp.error_code, NOT_CONTROLLER);
    let resp: BrokerRegistrationResponse = at(leader).call(ApiKey::BrokerRegistration, 0, &r);
    assert_eq!(resp.error_code, NONE);
    let epoch = resp.broker_epoch;
    assert!(epoch >= 1);
    cluster.brokers_listed_by(0, 4);
    // Another run of broker 9, while the first is live, is a duplicate.
    let mut other = r.clone();
    other.incarnation_id = uuid::Uuid::new_v4();
    let resp: BrokerRegistrationResponse = at(leader).call(ApiKey::BrokerRegistration, 4, &other);
    assert_eq!(resp.error_code, DUPLICATE_BROKER_REGISTRATION);
    let mut beat = BrokerHeartbeatRequest::default();
    beat.broker_id = BrokerId(9);
    beat.broker_epoch = epoch + 5;
    let resp: BrokerHeartbeatResponse = at(leader).call(ApiKey::BrokerHeartbeat, 1, &beat);
    assert_eq!(resp.error_code, STALE_BROKER_EPOCH);
    // Controlled shutdown: fenced, and told it may go.
    beat.broker_epoch = epoch;
    beat.want_shut_down = true;
    let resp: BrokerHeartbeatResponse = at(leader).call(ApiKey::BrokerHeartbeat, 0, &beat);
    assert_eq!(
        (resp.error_code, resp.should_shut_down, resp.is_fenced),
        (NONE, true, true)
    );
    cluster.brokers_listed_by(0, 3);
    // A registration whose listener count runs past its bytes closes the connection before
    // anything is allocated for it; the listener goes on answering.
    let mut hostile = vec![0, 62, 0, 0, 0, 0, 0, 1, 0, 0, 0]; // v0, header v2, no client id
    hostile.extend_from_slice(&9i32.to_be_bytes());
    hostile.push(1); // an empty compact cluster id
    hostile.extend_from_slice(&[0; 16]); // incarnation id
    hostile.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]); // 2^31 listeners
    let mut frame = (hostile.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&hostile);
    let mut conn = at(leader);
    conn.send_raw(&frame);
    assert!(conn.is_closed());
    let resp: BrokerHeartbeatResponse = at(leader).call(ApiKey::BrokerHeartbeat, 1, &beat);
    assert_eq!(resp.error_code, NONE);
    // A frame that is neither JSON nor a Kafka API the listener answers closes the connection.
    let mut conn = at(leader);
    conn.send(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert!(conn.is_closed());
}

/// Two brokers started with the same node.id: the second is refused while the first is live,
/// and stops with a message naming the id.
#[test]
fn a_second_broker_with_a_live_brokers_id_stops_naming_it() {
    let session = [
        "broker.session.timeout.ms=1500",
        "broker.heartbeat.interval.ms=300",
    ];
    let cluster = Cluster::with_observers(3, 1, 1000, &session);
    cluster.registered();
    let voters: Vec<String> = cluster.controller_ports[..3]
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect();
    let settings = [
        "node.id=4".to_string(),
        "process.roles=broker".to_string(),
        format!("controller.quorum.voters={}", voters.join(",")),
        format!("controller.listener=127.0.0.1:{}", free_port()),
        session[0].to_string(),
        session[1].to_string(),
    ];
    let args: Vec<String> = settings
        .iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut twin = BrokerProcess::start(&args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while twin.alive() {
        assert!(
            Instant::now() < deadline,
            "the twin kept running: {}",
            twin.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = twin.log();
    assert!(
        log.contains("node.id 4 is registered by another live broker"),
        "{log}"
    );
    cluster.brokers_listed_by(0, 4);
}

/// Separate controllers: three controller-only voters serve no clients and host nothing; two
/// broker-only nodes register with them, take every replica, and keep working through a kill
/// of the active controller.
#[test]
fn controller_only_voters_and_broker_only_nodes_make_a_cluster() {
    let mut cluster = Cluster::with_roles("controller", (3, 2), 1000, &[]);
    cluster.leader();
    cluster.brokers_listed_by(3, 2);
    cluster.brokers_listed_by(4, 2);
    for i in 0..3 {
        let port = cluster.nodes[i].port;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "controller {i} serves no clients"
        );
    }
    let (code, _) = with_retries(|| create(&mut cluster.nodes[3].connect(), "a", 2));
    assert_eq!(code, NONE);
    let (code, _) = with_retries(|| create(&mut cluster.nodes[4].connect(), "too-many", 3));
    assert_eq!(
        code, INVALID_REPLICATION_FACTOR,
        "only the two brokers take replicas"
    );
    let leader = cluster.leader();
    cluster.nodes[leader].kill();
    let (code, maybe) = with_retries(|| create(&mut cluster.nodes[4].connect(), "b", 2));
    assert!(
        code == NONE || (maybe && code == TOPIC_ALREADY_EXISTS),
        "{code}"
    );
    cluster.nodes[leader].start_again();
    let statuses = cluster.converged();
    let digests: BTreeSet<u32> = statuses.iter().map(|s| s.image_digest).collect();
    assert_eq!(digests.len(), 1, "the images differ: {statuses:?}");
    assert_eq!(
        topics(&cluster.nodes[3]),
        ["a", "b"].map(String::from).into()
    );
    // Only a partition's replicas hold its log: both brokers, no controller.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let has_log = node.data_dir().join("a-0").exists();
        assert_eq!(has_log, i >= 3, "node {i}");
    }
}
