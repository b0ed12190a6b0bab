//! A deterministic simulation of replication (issue 15): brokers and the active controller in
//! one process, on a simulated network and clock, driven by a seed. It runs the real sans-IO
//! pieces: [`crate::replica_set::ReplicaSet`] (the leader's view of its followers, the high
//! watermark, in-sync proposals), [`crate::election`] (elections when brokers are fenced or
//! come back), [`crate::quorum::liveness::Liveness`] (fencing), the controller's AlterPartition
//! check ([`crate::quorum::alter_partition::decide`]), the follower's truncation decisions
//! ([`crate::replica_fetcher::truncation_point`]), the real [`crate::image::MetadataImage`] and
//! records, and the real leader epoch cache. What the broker's I/O parts do around them
//! (`Partition`, the fetcher, the produce purgatory, the in-sync set manager) is re-enacted
//! step by step in the files below, each saying which real code it mirrors.
//!
//! The Raft metadata quorum is out of scope (openraft is tested on its own): the metadata log is
//! one linearizable sequence of batches that each broker learns with its own delay.
//!
//! - `rng`: the seeded generator (SplitMix64); `scheduler`: the clock and the event queue;
//!   `network`: latency, loss, reordering and cuts; `messages`: what nodes exchange;
//!   `faults`: cuts, crashes, pauses, controller failovers.
//! - `log`: a replica's log and its epoch cache; `partition`: a broker's partition (as
//!   `Partition`); `follower`: the follower's truncation and fetches; `node`: a broker;
//!   `leader`: its leader side; `controller`: the active controller.
//! - `invariants`: the checks made after every event; `world`: one run.
//!
//! A run: `active_ms` of client produces (acks=all) and faults on a lossy network, then every
//! fault ends and the run goes on until every replica is in sync; after every event the
//! invariants are checked, and at the end every replica must hold exactly the committed records.
//! A failing seed replays exactly: `SIM_SEED=<seed> cargo test -p quipu-broker --lib
//! simulation -- --nocapture` prints its trace step by step.

mod controller;
mod faults;
mod follower;
mod invariants;
mod leader;
mod log;
mod messages;
mod network;
mod node;
mod partition;
mod rng;
mod scheduler;
mod world;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::metadata_log::record::{MetadataRecord, PartitionRecord};
use messages::Batch;

/// The one topic of a run.
pub const TOPIC: &str = "sim";

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub brokers: i32,
    pub partitions: usize,
    pub replication_factor: usize,
    pub min_insync_replicas: usize,
    pub replica_lag_time_max_ms: i64,
    pub broker_session_timeout_ms: i64,
    pub broker_heartbeat_interval_ms: i64,
    pub replica_fetch_wait_max_ms: i64,
    pub replica_fetch_backoff_ms: i64,
    /// How long a request waits for its answer (a lost message is noticed after it).
    pub request_timeout_ms: i64,
    pub alter_partition_timeout_ms: i64,
    pub produce_timeout_ms: i64,
    pub hw_checkpoint_interval_ms: i64,
    pub metadata_poll_ms: i64,
    pub fetch_max_records: usize,
    pub unclean_leader_election: bool,
    pub first_fault_ms: i64,
    /// Faults and produces run this long; then the run settles.
    pub active_ms: i64,
    /// How long settling may take before the run counts as stuck.
    pub settle_ms_max: i64,
    pub max_events: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            brokers: 3,
            partitions: 3,
            replication_factor: 3,
            min_insync_replicas: 2,
            replica_lag_time_max_ms: 3_000,
            broker_session_timeout_ms: 2_000,
            broker_heartbeat_interval_ms: 500,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff_ms: 1_000,
            request_timeout_ms: 2_000,
            alter_partition_timeout_ms: 5_000,
            produce_timeout_ms: 5_000,
            hw_checkpoint_interval_ms: 1_000,
            metadata_poll_ms: 500,
            fetch_max_records: 50,
            unclean_leader_election: false,
            first_fault_ms: 500,
            active_ms: 12_000,
            settle_ms_max: 60_000,
            max_events: 400_000,
        }
    }
}

impl Config {
    /// As `alter_partition_manager`: every `replica.lag.time.max.ms / 2`, at most every 250 ms.
    pub fn isr_check_interval_ms(&self) -> i64 {
        (self.replica_lag_time_max_ms / 2).clamp(10, 250)
    }
}

/// Deliberately broken variants, for the test that the checker catches them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bugs {
    /// A follower cuts its log to its high watermark instead of asking OffsetForLeaderEpoch.
    pub truncate_to_high_watermark: bool,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub config: Config,
    pub bugs: Bugs,
    /// Check invariant 2's second half (every in-sync replica holds the leader's records below
    /// its high watermark); off, only the loss of committed records shows a broken variant.
    pub check_in_sync_holds: bool,
    /// Print every step.
    pub tracing: bool,
}

impl Options {
    pub fn seed(seed: u64) -> Self {
        Self {
            seed,
            config: Config::default(),
            bugs: Bugs::default(),
            check_in_sync_holds: true,
            tracing: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// A hash of every event (time, node, kind) and of the final logs.
    pub trace_hash: u64,
    pub events: u64,
    pub sim_ms: i64,
    /// Records acknowledged by leaders, and acknowledgements the client received.
    pub acked: usize,
    pub client_acks: usize,
}

/// An invariant that did not hold, where and when.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub step: u64,
    pub time_ms: i64,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} step {} ({} ms): {} (replay: SIM_SEED={} cargo test -p quipu-broker --lib simulation -- --nocapture)",
            self.seed, self.step, self.time_ms, self.message, self.seed
        )
    }
}

/// Runs one seed.
pub fn run(options: &Options) -> Result<Outcome, Violation> {
    world::World::new(options).run()
}

/// The first batch: every broker registered (epoch 1, unfenced) and the topic, its partitions'
/// replicas spread in turn, each led by its first replica at epoch 0 with all in sync.
fn bootstrap(config: &Config) -> Batch {
    let mut records = Vec::new();
    for node_id in 1..=config.brokers {
        records.push(MetadataRecord::BrokerRegistered {
            node_id,
            broker_epoch: 1,
            host: "sim".into(),
            port: 9092 + node_id,
            rack: None,
        });
        records.push(MetadataRecord::BrokerFencing {
            node_id,
            fenced: false,
        });
    }
    records.push(MetadataRecord::TopicCreated {
        name: TOPIC.into(),
        topic_id: uuid::Uuid::from_u128(15),
        configs: BTreeMap::new(),
    });
    for p in 0..config.partitions {
        let replicas: Vec<i32> = (0..config.replication_factor)
            .map(|i| ((p + i) % config.brokers as usize) as i32 + 1)
            .collect();
        records.push(MetadataRecord::Partition(PartitionRecord {
            topic: TOPIC.into(),
            partition: p as i32,
            replicas: replicas.clone(),
            isr: replicas.clone(),
            leader: replicas[0],
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }));
    }
    records.into()
}
