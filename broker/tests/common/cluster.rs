//! A cluster of `quipu` processes on loopback for the tests: combined nodes, or voters of some
//! roles plus broker-only nodes, each with its own ports and data directory.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use quipu_broker::quorum::rpc::{self, NodeStatus};
use quipu_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};

use super::{free_port, BrokerProcess};

pub struct Cluster {
    pub nodes: Vec<BrokerProcess>,
    pub controller_ports: Vec<u16>,
    pub cluster_id: String,
    pub runtime: tokio::runtime::Runtime,
}

impl Cluster {
    /// `count` combined nodes, ids 1..=count, snapshots every `snapshot_records` records.
    pub fn start(count: usize, snapshot_records: u64, extra: &[&str]) -> Self {
        Self::with_observers(count, 0, snapshot_records, extra)
    }

    /// `voters` combined nodes (ids 1..=voters), then `observers` broker-only nodes.
    pub fn with_observers(
        voters: usize,
        observers: usize,
        snapshot_records: u64,
        extra: &[&str],
    ) -> Self {
        Self::with_roles(
            "broker,controller",
            (voters, observers),
            snapshot_records,
            extra,
        )
    }

    /// `voters` nodes of `voter_roles` (ids 1..=voters), then `observers` broker-only nodes;
    /// `{id}` in an `extra` setting is replaced by each node's id.
    pub fn with_roles(
        voter_roles: &str,
        (voters, observers): (usize, usize),
        snapshot_records: u64,
        extra: &[&str],
    ) -> Self {
        let controller_ports: Vec<u16> = (0..voters + observers).map(|_| free_port()).collect();
        let voter_list: Vec<String> = controller_ports[..voters]
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect();
        let voter_list = voter_list.join(",");
        let nodes = controller_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let roles = if i < voters { voter_roles } else { "broker" };
                let settings = [
                    format!("node.id={}", i + 1),
                    format!("process.roles={roles}"),
                    format!("controller.quorum.voters={voter_list}"),
                    format!("controller.listener=127.0.0.1:{port}"),
                    format!("metadata.log.max.records.between.snapshots={snapshot_records}"),
                    "controller.quorum.election.timeout.ms=500".to_string(),
                ];
                let args: Vec<String> = settings
                    .iter()
                    .cloned()
                    // `{id}` in a setting is this node's id (a rack of its own, say).
                    .chain(
                        extra
                            .iter()
                            .map(|e| e.replace("{id}", &(i + 1).to_string())),
                    )
                    .flat_map(|s| ["--set".to_string(), s])
                    .collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                match roles {
                    "controller" => BrokerProcess::start_controller(&args, *port),
                    _ => BrokerProcess::start(&args),
                }
            })
            .collect::<Vec<BrokerProcess>>();
        let text = std::fs::read_to_string(nodes[0].data_dir().join("meta.properties")).unwrap();
        let cluster_id = text
            .lines()
            .find_map(|l| l.strip_prefix("cluster.id="))
            .unwrap()
            .to_string();
        Self {
            nodes,
            controller_ports,
            cluster_id,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Node `i`'s status, if it answers.
    pub fn status(&self, i: usize) -> Option<NodeStatus> {
        let address = format!("127.0.0.1:{}", self.controller_ports[i]);
        self.runtime
            .block_on(rpc::status(
                &address,
                &self.cluster_id,
                Duration::from_secs(2),
            ))
            .ok()
    }

    /// Waits until every node is a registered broker, as every node's Metadata lists them
    /// (each node places replicas over the brokers its own image has).
    pub fn registered(&self) {
        for i in 0..self.nodes.len() {
            self.brokers_listed_by(i, self.nodes.len());
        }
    }

    /// Waits until node `i`'s Metadata lists `count` brokers (the unfenced ones).
    pub fn brokers_listed_by(&self, i: usize, count: usize) -> Duration {
        let start = Instant::now();
        loop {
            let mut r = MetadataRequest::default();
            r.topics = Some(Vec::new());
            let resp: MetadataResponse = self.nodes[i].connect().call(ApiKey::Metadata, 12, &r);
            if resp.brokers.len() == count {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node {i} lists {:?}",
                resp.brokers
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn alive(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive())
            .collect()
    }

    /// The index of the node every live node names as leader, once they agree.
    pub fn leader(&mut self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alive = self.alive();
            let leaders: BTreeSet<Option<u64>> = alive
                .iter()
                .map(|i| self.status(*i).and_then(|s| s.leader))
                .collect();
            if let [Some(id)] = leaders.iter().collect::<Vec<_>>()[..] {
                let index = *id as usize - 1;
                if alive.contains(&index) {
                    return index;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every node has applied the same entries, and returns their statuses.
    pub fn converged(&self) -> Vec<NodeStatus> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let statuses: Vec<Option<NodeStatus>> =
                (0..self.nodes.len()).map(|i| self.status(i)).collect();
            let applied: BTreeSet<_> = statuses
                .iter()
                .map(|s| s.as_ref().map(|s| s.last_applied))
                .collect();
            if applied.len() == 1 && statuses.iter().all(Option::is_some) {
                return statuses.into_iter().flatten().collect();
            }
            assert!(Instant::now() < deadline, "never converged: {statuses:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
