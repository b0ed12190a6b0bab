//! The metadata quorum: the metadata log replicated by openraft among the voters of
//! `controller.quorum.voters`, behind the same [`MetadataLog`] interface as a single node's file.
//!
//! - [`types`]: openraft's types (a log entry's data is a batch of metadata records);
//! - [`log_store`]: the Raft log, vote and commit point on disk;
//! - [`state_machine`]: committed batches applied to the image on every node, and snapshots;
//! - [`rpc`] and [`network`]: the controllers' wire and openraft's network over it.
//!
//! A controller commits a batch by proposing it to the leader, itself or, forwarded on the
//! controller listener, another voter; the call returns once this node has applied the batch, so a
//! client that changed metadata through any node reads the change back from that node.
//!
//! At start the node applies, before Raft runs, its newest snapshot and the entries it knows are
//! committed, so the partition logs are opened against the image they belong to; a node with an
//! empty directory joins as the voters list says (`initialize`, the same membership on every
//! voter) and is brought up to date by the leader, from a snapshot if the log it needs is purged.
//!
//! Invariants: a batch takes effect on a node only once committed by a majority; every node
//! applies the same batches in the same order, refusing alike the ones the image refuses; a
//! forwarded batch that may have reached the leader is never sent again (its caller is told the
//! outcome is unknown); the data directory belongs to one cluster (`meta.properties`), and a
//! voter of another cluster is refused.

pub mod alter_partition;
pub mod broker_api;
pub mod liveness;
pub mod log_store;
pub mod network;
pub mod rpc;
pub mod state_machine;
pub mod types;
pub mod upgrade;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, EntryPayload, SnapshotPolicy};
use quipu_config::BrokerConfig;
use quipu_protocol::ResponseError;
use quipu_storage::log_manager::LogManager;

use crate::commit_log::{CommitError, MetadataLog};
use crate::controller::{open_applier, Controller};
use crate::metadata::{Metadata, MetadataError, METADATA_DIR};
use crate::metadata_log::record::MetadataRecord;
use crate::publisher::MetadataSubscriber;
use crate::replica_manager::ReplicaManager;
use liveness::Liveness;
use log_store::LogStore;
use rpc::{Connection, Envelope, NodeStatus, QuorumDescription, Request, Response, VoterProgress};
use state_machine::{Applied, StateMachine};
use types::{NodeId, Raft, RecordBatch};

/// The quorum's directory, inside the metadata directory.
pub const QUORUM_DIR: &str = "quorum";
/// How long a change waits for a leader to commit it before the caller is told NOT_CONTROLLER.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one forwarded batch may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts while no leader is known.
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(50);

/// A running member of the quorum: its Raft and state machine.
#[derive(Clone)]
pub struct Quorum {
    pub raft: Raft,
    machine: StateMachine,
    cluster_id: Arc<str>,
    node_id: NodeId,
    /// Whether this node is the whole quorum (and so the whole cluster).
    single: bool,
    liveness: Arc<Liveness>,
    heard_from: network::HeardFrom,
    heartbeat_interval: Duration,
    session_timeout: Duration,
    /// This broker's registration epoch once the controller answered it; -1 before.
    broker_epoch: Arc<AtomicI64>,
    /// The voters' controller listeners, tried in turn while no leader is known.
    voter_addresses: Arc<[String]>,
    next_voter: Arc<AtomicUsize>,
    runtime: tokio::runtime::Handle,
    /// The broker's `unclean.leader.election.enable`, for elections after fencing.
    unclean_default: bool,
}

/// Opens this node's part of the quorum: the image from its snapshot and committed entries
/// (the partition logs opened against it), Raft started, the controller listener answering, and
/// the quorum formed from `controller.quorum.voters` if this directory has never been part of it.
/// Must run on a multi-threaded runtime, from a thread that may block.
pub fn open(
    broker: &BrokerConfig,
    cluster_id: &str,
    (logs, replicas): (Arc<LogManager>, Arc<ReplicaManager>),
    more_subscribers: Vec<Arc<dyn MetadataSubscriber>>,
) -> Result<(Arc<Metadata>, Controller, Quorum), MetadataError> {
    let meta_dir = broker.log_dirs.join(METADATA_DIR);
    let dir = meta_dir.join(QUORUM_DIR);
    let voters = voters(broker);
    let observer = !broker.is_controller();
    let single = !observer && broker.is_broker() && voters.len() == 1;
    if single {
        let (id, voter) = voters.iter().next().expect("one voter");
        upgrade::upgrade_if_needed(&meta_dir, &dir, (*id as i32, voter.clone()))?;
    } else if meta_dir.join(upgrade::LEGACY_LOG).exists() {
        return Err(MetadataError::Damaged(format!(
            "{} holds a single node's metadata log: a member of a quorum of {} voters starts from a data directory of its own cluster (move it away, or start without controller.quorum.voters)",
            meta_dir.display(),
            voters.len()
        )));
    }
    let store = LogStore::open(&dir)?;
    let (applied, records) = replay(&dir, &store)?;
    let applier = open_applier(broker, (logs.clone(), replicas), &records, more_subscribers)?;
    let metadata = applier.metadata().clone();
    let machine = StateMachine::new(applier, &dir, applied);
    let runtime = tokio::runtime::Handle::current();
    let cluster_id: Arc<str> = cluster_id.into();
    let liveness = Arc::new(Liveness::new(Duration::from_millis(
        broker.broker_session_timeout_ms,
    )));
    let heard_from = network::HeardFrom::default();
    let voter_addresses: Arc<[String]> = voters.values().map(|v| v.addr.clone()).collect();
    let raft = runtime.block_on(start_raft(
        broker,
        (&cluster_id, voters, observer),
        store,
        (machine.clone(), liveness.clone(), heard_from.clone()),
    ))?;
    let quorum = Quorum {
        raft,
        machine,
        cluster_id,
        node_id: broker.node_id as NodeId,
        single,
        liveness,
        heard_from,
        heartbeat_interval: Duration::from_millis(broker.broker_heartbeat_interval_ms),
        session_timeout: Duration::from_millis(broker.broker_session_timeout_ms),
        broker_epoch: Arc::new(AtomicI64::new(-1)),
        voter_addresses,
        next_voter: Arc::default(),
        runtime,
        unclean_default: broker.unclean_leader_election_enable,
    };
    let controller = Controller::new(broker, Box::new(quorum.clone()), metadata.clone(), logs);
    Ok((metadata, controller, quorum))
}

/// The voters: `controller.quorum.voters`, or, on a single node, this node alone at its
/// controller listener (the quorum of one a single node is).
fn voters(broker: &BrokerConfig) -> BTreeMap<NodeId, BasicNode> {
    let configured = broker.quorum_voters();
    if configured.is_empty() {
        let (host, port) = broker.controller_host_port();
        let addr = format!("{host}:{port}");
        return [(broker.node_id as NodeId, BasicNode { addr })].into();
    }
    configured
        .into_iter()
        .map(|v| {
            let addr = format!("{}:{}", v.host, v.port);
            (v.node_id as NodeId, BasicNode { addr })
        })
        .collect()
}

/// What a restart applies before Raft runs: the newest snapshot, then the entries known
/// committed after it. Returns where that leaves the state machine and the image's records.
fn replay(
    dir: &std::path::Path,
    store: &LogStore,
) -> Result<(Applied, Vec<MetadataRecord>), MetadataError> {
    let mut applied = Applied::default();
    let mut image = crate::image::MetadataImage::default();
    if let Some((meta, records)) = state_machine::load_snapshot(dir)? {
        image = state_machine::image_of(&records)?;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership;
    }
    let (committed, entries) = store.committed_entries(applied.last_applied.map(|l| l.index));
    for entry in entries {
        match entry.payload {
            EntryPayload::Normal(batch) => {
                // Refused alike when it was first applied: it changed nothing then either.
                let _ = image.apply_all(&batch.0);
            }
            EntryPayload::Membership(m) => {
                applied.membership = openraft::StoredMembership::new(Some(entry.log_id), m)
            }
            EntryPayload::Blank => {}
        }
        applied.last_applied = Some(entry.log_id);
    }
    if let (Some(c), Some(a)) = (committed, applied.last_applied) {
        tracing::info!(
            committed = c.index,
            applied = a.index,
            "replayed the metadata quorum's log"
        );
    }
    Ok((applied, crate::snapshot::records_of(&image)))
}

fn raft_config(broker: &BrokerConfig, cluster_id: &str) -> Result<openraft::Config, MetadataError> {
    let election_ms = broker.controller_quorum_election_timeout_ms;
    let between = broker.metadata_log_max_records_between_snapshots;
    openraft::Config {
        cluster_name: cluster_id.to_string(),
        heartbeat_interval: (election_ms / 5).max(20),
        election_timeout_min: election_ms,
        election_timeout_max: election_ms * 2,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(between),
        max_in_snapshot_log_to_keep: between.min(1000),
        snapshot_max_chunk_size: 1024 * 1024,
        ..Default::default()
    }
    .validate()
    .map_err(|e| MetadataError::Damaged(format!("quorum settings: {e}")))
}

async fn start_raft(
    broker: &BrokerConfig,
    (cluster_id, voters, observer): (&Arc<str>, BTreeMap<NodeId, BasicNode>, bool),
    store: LogStore,
    (machine, liveness, heard_from): (StateMachine, Arc<Liveness>, network::HeardFrom),
) -> Result<Raft, MetadataError> {
    // A single node without configured voters has no peer to answer: it binds no listener.
    let listener = match broker.quorum_voters().is_empty() {
        true => None,
        false => Some(bind_controller_listener(broker).await?),
    };
    let network = network::Network {
        cluster_id: cluster_id.clone(),
        heard_from: heard_from.clone(),
    };
    let node_id = broker.node_id as NodeId;
    let config = Arc::new(raft_config(broker, cluster_id)?);
    let raft = Raft::new(node_id, config, network, store, machine.clone())
        .await
        .map_err(|e| MetadataError::Damaged(format!("cannot start the quorum: {e}")))?;
    if let Some(listener) = listener {
        let server = Arc::new(Server {
            raft: raft.clone(),
            cluster_id: cluster_id.clone(),
            machine,
            liveness,
            heard_from,
            unclean_default: broker.unclean_leader_election_enable,
        });
        tokio::spawn(rpc::serve(listener, cluster_id.clone(), server));
    }
    if observer {
        let (host, port) = broker.controller_host_port();
        let me = (node_id, BasicNode::new(format!("{host}:{port}")));
        tokio::spawn(join_as_observer(
            raft.clone(),
            cluster_id.clone(),
            me,
            voters,
        ));
        return Ok(raft);
    }
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| MetadataError::Damaged(format!("quorum: {e}")))?;
    if !initialized {
        // Every voter starts from the same membership, so the first entry is the same on all.
        if let Err(e) = raft.initialize(voters.clone()).await {
            tracing::info!(error = %e, "quorum membership already set");
        }
        tracing::info!(?voters, "formed the metadata quorum");
    }
    if voters.len() == 1 {
        lead_alone(&raft, node_id).await?;
    }
    Ok(raft)
}

/// A broker-only node asks the voters in turn, with backoff, until it is in the quorum's
/// membership as a learner (an observer, in Kafka's words): from then on the leader replicates
/// the log to it, from a snapshot if it is far behind. Ends once this node sees itself a member.
async fn join_as_observer(
    raft: Raft,
    cluster_id: Arc<str>,
    (node_id, me): (NodeId, BasicNode),
    voters: BTreeMap<NodeId, BasicNode>,
) {
    let mut backoff = Duration::from_millis(100);
    let member = |raft: &Raft| {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&node_id)
            .is_some()
    };
    while !member(&raft) {
        let request = Envelope {
            cluster_id: cluster_id.to_string(),
            body: Request::AddObserver {
                node_id,
                addr: me.addr.clone(),
            },
        };
        for voter in voters.values() {
            let answer = Connection::new(voter.addr.clone())
                .call(&request, FORWARD_TIMEOUT)
                .await;
            match answer {
                Ok(Response::Observer(Ok(()))) => {
                    tracing::info!(leader = %voter.addr, "joined the metadata quorum as an observer");
                    break;
                }
                other => {
                    tracing::debug!(voter = %voter.addr, answer = ?other, "not added as an observer")
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn bind_controller_listener(
    broker: &BrokerConfig,
) -> Result<tokio::net::TcpListener, MetadataError> {
    let (host, port) = broker.controller_host_port();
    tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| {
            MetadataError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot listen on controller.listener {host}:{port}: {e}"),
            ))
        })
}

/// The one voter of a quorum of one takes the lead now rather than after an election timeout:
/// it has no one to wait for.
async fn lead_alone(raft: &Raft, node_id: NodeId) -> Result<(), MetadataError> {
    let leading = |m: &openraft::RaftMetrics<NodeId, BasicNode>| m.current_leader == Some(node_id);
    if !leading(&raft.metrics().borrow()) {
        raft.trigger()
            .elect()
            .await
            .map_err(|e| MetadataError::Damaged(format!("quorum: {e}")))?;
    }
    raft.wait(Some(COMMIT_TIMEOUT))
        .metrics(leading, "this node leads its quorum of one")
        .await
        .map(|_| ())
        .map_err(|e| MetadataError::Damaged(format!("the quorum of one did not elect itself: {e}")))
}

impl Quorum {
    /// Runs `work` to completion from a thread that may block (an io thread, or the start).
    fn block_on<F: std::future::Future>(&self, work: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(work)),
            Err(_) => self.runtime.block_on(work),
        }
    }

    /// This node's status: its view of the quorum and of the image.
    pub fn status(&self) -> NodeStatus {
        status(&self.raft, &self.machine)
    }

    /// Registers this broker with the active controller (BrokerRegistration), retrying with
    /// backoff until it is committed. Another live broker with this id (DUPLICATE_BROKER_
    /// REGISTRATION for longer than twice the session: not merely this broker's previous run)
    /// or a controller of another cluster ends it with the reason the node must stop.
    pub async fn register(&self, me: broker_api::Registration) -> Result<i64, String> {
        let mut backoff = Duration::from_millis(100);
        let mut duplicate_since: Option<Instant> = None;
        loop {
            let address = self.controller_address();
            let answer = match &address {
                Some(a) => Some(broker_api::send_registration(a, &me, FORWARD_TIMEOUT).await),
                None => None,
            };
            match answer {
                Some(Ok(Ok(epoch))) => {
                    self.broker_epoch.store(epoch, Ordering::Relaxed);
                    return Ok(epoch);
                }
                Some(Ok(Err(ResponseError::DuplicateBrokerRegistration))) => {
                    let since = *duplicate_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.session_timeout * 2 {
                        return Err(format!("node.id {} is registered by another live broker: every broker of a cluster needs an id of its own", me.node_id));
                    }
                }
                Some(Ok(Err(ResponseError::InconsistentClusterId))) => {
                    return Err(format!(
                        "the controller at {} belongs to another cluster than {}",
                        address.unwrap_or_default(),
                        me.cluster_id
                    ));
                }
                other => tracing::debug!(answer = ?other, "broker registration not committed yet"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// This broker's registration epoch, -1 before the controller answered it.
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Relaxed)
    }

    /// The controller listener of the active controller, or of a voter while none is known.
    pub fn controller_address(&self) -> Option<String> {
        if let Some((_, address)) = self.leader() {
            return Some(address);
        }
        let n = self.voter_addresses.len();
        let next = self.next_voter.fetch_add(1, Ordering::Relaxed);
        (n > 0).then(|| self.voter_addresses[next % n].clone())
    }

    /// Tells the active controller this broker is alive (BrokerHeartbeat), every
    /// `broker.heartbeat.interval.ms`, until the task is dropped; nothing before it registered.
    pub async fn run_heartbeats(self, node_id: i32) {
        let mut ticker = tokio::time::interval(self.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let epoch = self.broker_epoch.load(Ordering::Relaxed);
            let Some(address) = self.controller_address().filter(|_| epoch >= 0) else {
                continue;
            };
            let answer = broker_api::send_heartbeat(
                &address,
                (node_id, epoch),
                false,
                self.heartbeat_interval,
            )
            .await;
            match answer {
                Ok(r) if r.error_code == 0 => {}
                other => tracing::debug!(%address, answer = ?other, "heartbeat not heard"),
            }
        }
    }

    /// As the active controller, fences brokers silent past their session and unfences those
    /// heard from again; checks twice a heartbeat interval, until the task is dropped.
    pub async fn run_fencing(self) {
        let mut ticker = tokio::time::interval(self.heartbeat_interval / 2);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let term = {
                let metrics = self.raft.metrics();
                let m = metrics.borrow();
                (m.current_leader == Some(self.node_id)).then_some(m.current_term)
            };
            let Some(term) = term else {
                self.liveness.not_leading();
                continue;
            };
            let image = self.machine.applier().metadata().image();
            let mut changes = self.liveness.changes(term, &image, Instant::now());
            if changes.is_empty() {
                continue;
            }
            let elections =
                crate::election::after_broker_changes(&image, &changes, self.unclean_default);
            changes.extend(elections);
            match self.propose(&changes).await {
                Ok(()) => tracing::info!(?changes, "broker fencing changed"),
                Err(e) => tracing::warn!(error = %e, "broker fencing not committed"),
            }
        }
    }

    /// Controlled shutdown: a heartbeat with `want_shut_down`, which has the active controller
    /// fence this broker so that clients stop being sent to it now rather than after its
    /// session runs out. Gives up after `timeout` (no controller to fence it): the session
    /// timeout then fences it.
    pub async fn shut_down_broker(&self, node_id: i32, timeout: Duration) {
        let epoch = self.broker_epoch.load(Ordering::Relaxed);
        if epoch < 0 {
            return;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Some(address) = self.controller_address() else {
                tokio::time::sleep(NO_LEADER_BACKOFF).await;
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match broker_api::send_heartbeat(&address, (node_id, epoch), true, left).await {
                Ok(r) if r.should_shut_down => {
                    tracing::info!(node_id, "controlled shutdown: fenced");
                    return;
                }
                other => tracing::debug!(node_id, answer = ?other, "controlled shutdown: not yet"),
            }
            tokio::time::sleep(NO_LEADER_BACKOFF).await;
        }
        tracing::warn!(
            node_id,
            ?timeout,
            "controlled shutdown: no controller fenced this broker"
        );
    }

    /// The quorum as its leader sees it, asked of the leader when it is another node.
    pub async fn describe(&self) -> Result<QuorumDescription, String> {
        let Some((leader, address)) = self.leader() else {
            return Err("the metadata quorum has no leader".into());
        };
        if leader == self.node_id {
            return describe(&self.raft, &self.heard_from)
                .ok_or_else(|| "leadership moved".to_string());
        }
        let request = Envelope {
            cluster_id: self.cluster_id.to_string(),
            body: Request::DescribeQuorum,
        };
        match Connection::new(address)
            .call(&request, FORWARD_TIMEOUT)
            .await
        {
            Ok(Response::Quorum(description)) => description,
            Ok(other) => Err(format!("the leader answered {other:?}")),
            Err(e) => Err(format!("the leader did not answer: {e}")),
        }
    }

    /// The active controller's node id, if one is known.
    pub fn leader_id(&self) -> Option<i32> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .map(|id| id as i32)
    }

    /// The leader's id and controller address, if one is known.
    fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    async fn propose(&self, records: &[MetadataRecord]) -> Result<(), CommitError> {
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        loop {
            let batch = RecordBatch(records.to_vec());
            let leader = match self.raft.client_write(batch.clone()).await {
                Ok(written) => return written.data.map_err(CommitError::Refused),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f.leader_node,
                Err(e) => return Err(CommitError::NoController(format!("quorum: {e}"))),
            };
            if let Some(leader) = leader {
                if let Some(result) = self.forward(&leader.addr, batch).await? {
                    return result;
                }
            }
            if Instant::now() >= deadline {
                return Err(CommitError::NoController(format!(
                    "no leader of the metadata quorum committed the change within {COMMIT_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(NO_LEADER_BACKOFF).await;
        }
    }

    /// Sends `batch` to the leader at `address`; `None` when it was not proposed (the node is no
    /// longer the leader), so it may be sent again. Once the leader has committed it, waits for
    /// this node to apply it.
    async fn forward(
        &self,
        address: &str,
        batch: RecordBatch,
    ) -> Result<Option<Result<(), CommitError>>, CommitError> {
        let request = Envelope {
            cluster_id: self.cluster_id.to_string(),
            body: Request::Propose(batch),
        };
        let mut connection = Connection::new(address.to_string());
        let (index, outcome) = match connection.call(&request, FORWARD_TIMEOUT).await {
            Ok(Response::Proposed(Ok(proposed))) => proposed,
            Ok(Response::Proposed(Err(_))) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
            Ok(other) => {
                return Err(CommitError::NoController(format!(
                    "the leader at {address} answered {other:?}"
                )))
            }
            Err(e) => {
                return Err(CommitError::NoController(format!(
                    "the change was sent to the leader at {address}, which did not answer ({e}): it may or may not be committed"
                )))
            }
        };
        let mut applied = self.machine.applied_end();
        let caught_up = tokio::time::timeout(FORWARD_TIMEOUT, applied.wait_for(|end| *end > index))
            .await
            .is_ok_and(|r| r.is_ok());
        match caught_up {
            true => Ok(Some(outcome.map_err(CommitError::Refused))),
            false => Err(CommitError::NoController(format!(
                "committed at index {index}, but this node has not applied it within {FORWARD_TIMEOUT:?}"
            ))),
        }
    }
}

impl MetadataLog for Quorum {
    fn commit(&self, records: &[MetadataRecord]) -> Result<(), CommitError> {
        self.block_on(self.propose(records))
    }

    fn is_single_node(&self) -> bool {
        self.single
    }

    fn committed_end(&self) -> i64 {
        self.machine
            .last_applied()
            .map_or(0, |l| l.index as i64 + 1)
    }
}

/// The quorum as this node sees it, if it leads.
fn describe(raft: &Raft, heard_from: &network::HeardFrom) -> Option<QuorumDescription> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        return None;
    }
    let now = crate::clock::now_ms();
    let end = m.last_log_index.map_or(0, |i| i as i64 + 1);
    let heard = heard_from.lock().expect("heard-from lock").clone();
    let matched = m.replication.clone().unwrap_or_default();
    let progress = |id: NodeId| {
        if id == m.id {
            return VoterProgress {
                node_id: id as i32,
                log_end_offset: end,
                last_fetch_ms: now,
                last_caught_up_ms: now,
            };
        }
        let log_end_offset = matched
            .get(&id)
            .copied()
            .flatten()
            .map_or(-1, |l| l.index as i64 + 1);
        let last_fetch_ms = heard.get(&id).copied().unwrap_or(-1);
        let caught_up = log_end_offset == end;
        VoterProgress {
            node_id: id as i32,
            log_end_offset,
            last_fetch_ms,
            last_caught_up_ms: if caught_up { last_fetch_ms } else { -1 },
        }
    };
    let membership = m.membership_config.membership();
    let listeners = membership
        .voter_ids()
        .filter_map(|id| {
            let (host, port) = membership.get_node(&id)?.addr.rsplit_once(':')?;
            Some((id as i32, host.to_string(), port.parse().ok()?))
        })
        .collect();
    Some(QuorumDescription {
        leader_id: m.id as i32,
        leader_epoch: m.current_term as i32,
        high_watermark: m.last_applied.map_or(0, |l| l.index as i64 + 1),
        voters: membership.voter_ids().map(progress).collect(),
        observers: membership.learner_ids().map(progress).collect(),
        listeners,
    })
}

fn is_leader(raft: &Raft) -> bool {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    m.current_leader == Some(m.id)
}

fn status(raft: &Raft, machine: &StateMachine) -> NodeStatus {
    let metrics = raft.metrics().borrow().clone();
    let image = machine.applier().metadata().image();
    NodeStatus {
        node_id: metrics.id,
        leader: metrics.current_leader,
        term: metrics.current_term,
        last_applied: machine.last_applied().map(|l| l.index),
        image_digest: crate::snapshot::digest(&image),
        topics: image.topics().count(),
    }
}

/// Answers the controller listener's requests.
struct Server {
    raft: Raft,
    cluster_id: Arc<str>,
    machine: StateMachine,
    liveness: Arc<Liveness>,
    heard_from: network::HeardFrom,
    unclean_default: bool,
}

impl rpc::Handler for Server {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::AppendEntries(r) => Response::AppendEntries(self.raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(self.raft.vote(r).await),
            Request::InstallSnapshot(r) => {
                Response::InstallSnapshot(self.raft.install_snapshot(r).await)
            }
            Request::Propose(batch) => {
                Response::Proposed(match self.raft.client_write(batch).await {
                    Ok(written) => Ok((written.log_id.index, written.data)),
                    Err(e) => Err(e.to_string()),
                })
            }
            Request::DescribeQuorum => Response::Quorum(
                describe(&self.raft, &self.heard_from).ok_or_else(|| "not the leader".to_string()),
            ),
            Request::Status => Response::Status(status(&self.raft, &self.machine)),
            Request::AddObserver { node_id, addr } => {
                Response::Observer(self.add_observer(node_id, addr).await)
            }
        }
    }

    async fn handle_kafka(&self, frame: bytes::Bytes) -> Option<Vec<u8>> {
        self.answer_kafka(frame).await
    }
}

impl Server {
    /// As the leader, adds a broker-only node to the membership as a learner (once: a member
    /// already is one), without waiting for it to catch up.
    async fn add_observer(&self, node_id: NodeId, addr: String) -> Result<(), String> {
        let membership = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            if m.current_leader != Some(m.id) {
                return Err("not the leader".into());
            }
            m.membership_config.membership().clone()
        };
        if membership.voter_ids().any(|v| v == node_id) {
            return Err(format!("node {node_id} is a voter, not an observer"));
        }
        if membership.get_node(&node_id).is_some() {
            return Ok(());
        }
        tracing::info!(node_id, %addr, "adding an observer to the metadata quorum");
        self.raft
            .add_learner(node_id, BasicNode::new(addr), false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;
    use types::{Entry, LogId};

    fn entry(index: u64, records: Vec<MetadataRecord>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(RecordBatch(records)),
        }
    }

    /// Writes a quorum directory of `count` committed entries (a topic, then config changes).
    fn log_of(dir: &std::path::Path, count: u64) -> LogStore {
        let store = LogStore::open(dir).unwrap();
        let mut entries = vec![entry(
            0,
            vec![MetadataRecord::TopicCreated {
                name: "t".into(),
                topic_id: uuid::Uuid::new_v4(),
                configs: BTreeMap::new(),
            }],
        )];
        entries.extend((1..count).map(|i| {
            let configs = [("retention.ms".to_string(), i.to_string())].into();
            entry(
                i,
                vec![MetadataRecord::TopicConfigChanged {
                    name: "t".into(),
                    configs,
                }],
            )
        }));
        store.append_committed(entries);
        store
    }

    #[test]
    fn a_restart_replays_the_committed_entries_after_the_newest_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = log_of(dir.path(), 50);
        let (applied, records) = replay(dir.path(), &store).unwrap();
        assert_eq!(applied.last_applied.map(|l| l.index), Some(49));
        let image = state_machine::image_of(&records).unwrap();
        assert_eq!(image.topic("t").unwrap().configs["retention.ms"], "49");
        // A snapshot at 30 with another value: what follows it is applied on top.
        let mut at_30 = image.clone();
        let configs = [("retention.ms".to_string(), "30".to_string())].into();
        at_30
            .apply(&MetadataRecord::TopicConfigChanged {
                name: "t".into(),
                configs,
            })
            .unwrap();
        let meta = types::SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 30)),
            last_membership: Default::default(),
            snapshot_id: "s".into(),
        };
        state_machine::write_snapshot(dir.path(), &meta, &crate::snapshot::records_of(&at_30))
            .unwrap();
        let (applied, records) = replay(dir.path(), &LogStore::open(dir.path()).unwrap()).unwrap();
        assert_eq!(applied.last_applied.map(|l| l.index), Some(49));
        let image = state_machine::image_of(&records).unwrap();
        assert_eq!(image.topic("t").unwrap().configs["retention.ms"], "49");
    }

    /// Start-up figures: opening and replaying 100 000 committed metadata records, without and
    /// with a snapshot of them. On demand:
    /// `cargo test --release -p quipu-broker --lib replay_figures -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn replay_figures() {
        const RECORDS: u64 = 100_000;
        let dir = tempfile::tempdir().unwrap();
        drop(log_of(dir.path(), RECORDS));
        let started = Instant::now();
        let store = LogStore::open(dir.path()).unwrap();
        let (applied, records) = replay(dir.path(), &store).unwrap();
        let without = started.elapsed();
        assert_eq!(applied.last_applied.map(|l| l.index), Some(RECORDS - 1));
        let meta = types::SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: Default::default(),
            snapshot_id: "s".into(),
        };
        state_machine::write_snapshot(dir.path(), &meta, &records).unwrap();
        // As after a purge: the entries the snapshot covers are gone from the log.
        std::fs::remove_file(dir.path().join("raft.log")).unwrap();
        let started = Instant::now();
        let store = LogStore::open(dir.path()).unwrap();
        let (applied, _) = replay(dir.path(), &store).unwrap();
        let with = started.elapsed();
        assert_eq!(applied.last_applied.map(|l| l.index), Some(RECORDS - 1));
        println!("replay of {RECORDS} metadata records: {without:?} from the log, {with:?} from a snapshot");
    }
}
