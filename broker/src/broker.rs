//! The broker: the request context its handlers share, and what only its own tasks touch (the
//! LogManager with its checkpoints, the log tasks' pool, the cleaner's thread).
//!
//! Invariant: the data directory is locked before anything in it is read or written, and stays
//! locked while the broker lives.

use std::path::Path;
use std::sync::Arc;

use quipu_config::BrokerConfig;
use quipu_storage::log_manager::LogManager;

use crate::group::GroupCoordinator;
use crate::metadata::MetadataError;
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
        let (metadata, controller) = crate::controller::open_local(
            &config,
            logs.clone(),
            replicas.clone(),
            vec![groups.clone()],
        )?;
        let background = Arc::new(WorkPool::new("quipu-background", BACKGROUND_THREADS, 16)?);
        controller.register_broker(
            config.node_id,
            &identity.advertised_host,
            i32::from(identity.advertised_port),
        )?;
        let io_threads = config.num_io_threads as usize;
        let requests = Arc::new(RequestContext {
            io: WorkPool::new("quipu-io", io_threads, io_threads)?,
            background: background.clone(),
            config,
            identity,
            metadata,
            controller,
            replicas,
            groups,
        });
        Ok(Self {
            requests,
            logs,
            background,
            cleaner: WorkPool::new("quipu-cleaner", 1, 0)?,
        })
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.requests.config
    }
}

/// The cluster id from the data directory and the address clients are told to use.
fn identity(config: &BrokerConfig, bound_port: u16) -> std::io::Result<Identity> {
    let cluster_id = cluster_id(&config.log_dirs, config.node_id)?;
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

/// Reads the cluster id from `meta.properties` (Kafka's file and keys), writing one on first start.
fn cluster_id(dir: &Path, node_id: i32) -> std::io::Result<String> {
    let path = dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("cluster.id=")) {
            return Ok(id.trim().to_string());
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = dir.join("meta.properties.tmp");
    std::fs::write(
        &tmp,
        format!("version=1\ncluster.id={id}\nnode.id={node_id}\n"),
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}
