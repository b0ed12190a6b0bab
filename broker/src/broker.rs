//! The broker: the request context its handlers share, and what only its own tasks touch (the
//! LogManager with its checkpoints, the log tasks' pool, the cleaner's thread).
//!
//! Invariant: the data directory is locked before anything in it is read or written, and stays
//! locked while the broker lives.

use std::sync::Arc;

use quipu_config::BrokerConfig;
use quipu_storage::log_manager::LogManager;

use crate::commit_log::MetadataLog;
use crate::group::GroupCoordinator;
use crate::metadata::MetadataError;
use crate::publisher::MetadataSubscriber;
use crate::quorum::Quorum;
use crate::replica_manager::ReplicaManager;
use crate::request_context::{Identity, RequestContext};
use crate::work_pool::WorkPool;

/// Threads for the log tasks' blocking passes.
const BACKGROUND_THREADS: usize = 2;

pub struct Broker {
    /// What request handlers reach.
    pub requests: Arc<RequestContext>,
    /// The data directory and the partition logs in it.
    pub logs: Arc<LogManager>,
    /// The log tasks' blocking passes (flushes, retention) and flushes before an acknowledgement.
    pub background: Arc<WorkPool>,
    /// The log cleaner's passes, on a thread of their own so a long clean delays nothing else.
    pub cleaner: WorkPool,
    /// This node's part of the metadata quorum (all of it, on a single node).
    pub quorum: Quorum,
}

impl Broker {
    /// Opens the data directory: its identity (`meta.properties`, made on first start) and metadata.
    pub fn open(config: BrokerConfig, bound_port: u16) -> Result<Self, MetadataError> {
        // The directory's lock comes before anything in it is read or written.
        let logs = Arc::new(LogManager::lock(
            &config.log_dirs,
            config.num_recovery_threads_per_data_dir as usize,
        )?);
        let identity = identity(&config, bound_port)?;
        let replicas = Arc::new(ReplicaManager::new(config.node_id, logs.clone()));
        let groups = Arc::new(GroupCoordinator::new(&config, replicas.clone()));
        let subscribers: Vec<Arc<dyn MetadataSubscriber>> = vec![groups.clone()];
        let (metadata, controller, quorum) = crate::quorum::open(
            &config,
            &identity.cluster_id,
            (logs.clone(), replicas.clone()),
            subscribers,
        )?;
        let background = Arc::new(WorkPool::new("quipu-background", BACKGROUND_THREADS, 16)?);
        let io_threads = config.num_io_threads as usize;
        let requests = Arc::new(RequestContext {
            io: WorkPool::new("quipu-io", io_threads, io_threads)?,
            background: background.clone(),
            produce_purgatory: Arc::new(tokio::sync::Semaphore::new(
                config.produce_purgatory_max_requests as usize,
            )),
            config,
            identity,
            metadata,
            controller,
            replicas,
            groups,
            quorum: quorum.clone(),
        });
        let broker = Self {
            requests,
            logs,
            background,
            cleaner: WorkPool::new("quipu-cleaner", 1, 0)?,
            quorum,
        };
        // A single node is its own controller: it registers before it serves. In a cluster
        // the quorum may have no leader yet, so the lifecycle registers in the background.
        if broker.quorum.is_single_node() {
            broker.register()?;
            broker.requests.replicas.set_caught_up();
            let image = broker.requests.metadata.image();
            broker.requests.groups.take_up_after_catch_up(&image);
        }
        Ok(broker)
    }

    /// Registers this broker with the controller at its advertised address (blocking: in a
    /// cluster, until the quorum has committed it).
    pub fn register(&self) -> Result<(), MetadataError> {
        let identity = &self.requests.identity;
        self.requests.controller.register_broker(
            self.config().node_id,
            &identity.advertised_host,
            i32::from(identity.advertised_port),
        )
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.requests.config
    }
}

/// The cluster id from the data directory and the address clients are told to use.
fn identity(config: &BrokerConfig, bound_port: u16) -> Result<Identity, MetadataError> {
    let cluster_id = cluster_id(config)?;
    let (advertised_host, mut advertised_port) = config.advertised_host_port();
    if config.advertised_listeners.is_none() && advertised_port == 0 {
        advertised_port = bound_port;
    }
    Ok(Identity {
        cluster_id,
        advertised_host,
        advertised_port,
    })
}

/// The cluster this node is configured for: `cluster.id`, else in a quorum one derived from the
/// voter list (so every voter given the same list agrees without a format step), else `None`.
fn configured_cluster_id(config: &BrokerConfig) -> Option<String> {
    if let Some(id) = &config.cluster_id {
        return Some(id.clone());
    }
    let voters = config.quorum_voters();
    if voters.is_empty() {
        return None;
    }
    let mut listed: Vec<String> = voters
        .iter()
        .map(|v| format!("{}@{}:{}", v.node_id, v.host, v.port))
        .collect();
    listed.sort();
    Some(format!(
        "quipu-{:08x}",
        crc32c::crc32c(listed.join(",").as_bytes())
    ))
}

/// Reads the cluster id from `meta.properties` (Kafka's file and keys), writing one on first
/// start; a directory of another cluster or another node id stops the start.
fn cluster_id(config: &BrokerConfig) -> Result<String, MetadataError> {
    let (dir, node_id) = (&config.log_dirs, config.node_id);
    let path = dir.join("meta.properties");
    let configured = configured_cluster_id(config);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().to_string())
        };
        if let Some(id) = value("cluster.id") {
            if configured.as_ref().is_some_and(|c| *c != id) {
                return Err(MetadataError::Damaged(format!(
                    "{} belongs to cluster {id}, but this node is configured for cluster {} (cluster.id, or the one controller.quorum.voters gives): a directory of another cluster, or voter lists that disagree",
                    path.display(),
                    configured.unwrap_or_default()
                )));
            }
            if let Some(stored) = value("node.id").filter(|n| *n != node_id.to_string()) {
                return Err(MetadataError::Damaged(format!(
                    "{} belongs to node {stored}, but this node is configured as node.id {node_id}",
                    path.display()
                )));
            }
            return Ok(id);
        }
    }
    let id = configured.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let tmp = dir.join("meta.properties.tmp");
    std::fs::write(
        &tmp,
        format!("version=1\ncluster.id={id}\nnode.id={node_id}\n"),
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// A broker for a unit test, on a runtime of its own (the quorum needs one); dropping it stops
/// the quorum, so the directory can be opened again.
#[cfg(test)]
pub(crate) struct TestBroker {
    broker: Option<Broker>,
    runtime: tokio::runtime::Runtime,
}

#[cfg(test)]
impl TestBroker {
    pub fn open(config: BrokerConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let entered = runtime.enter();
        let broker = Broker::open(config, 9092).expect("the broker opens");
        drop(entered);
        Self {
            broker: Some(broker),
            runtime,
        }
    }
}

#[cfg(test)]
impl std::ops::Deref for TestBroker {
    type Target = Broker;
    fn deref(&self) -> &Broker {
        self.broker.as_ref().expect("open until dropped")
    }
}

#[cfg(test)]
impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(b) = self.broker.take() {
            let _ = self.runtime.block_on(b.quorum.raft.shutdown());
        }
    }
}
