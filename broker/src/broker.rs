//! The broker's shared state: its configuration, identity and metadata, as the handlers see it.

use std::path::Path;
use std::sync::Arc;

use quipu_config::BrokerConfig;
use quipu_storage::log_manager::LogManager;

use crate::controller::Controller;
use crate::group::GroupCoordinator;
use crate::metadata::{Metadata, MetadataError};
use crate::replica_manager::ReplicaManager;
use crate::work_pool::{WorkError, WorkPool};

/// Threads for the log tasks' blocking passes.
const BACKGROUND_THREADS: usize = 2;

pub struct Broker {
    pub config: BrokerConfig,
    /// The metadata image and the topics served from it (read-only for handlers).
    pub metadata: Arc<Metadata>,
    /// The one writer of the metadata log: admin changes go through it.
    pub controller: Controller,
    /// The partitions this broker hosts; handlers find partitions only through it.
    pub replicas: Arc<ReplicaManager>,
    /// Consumer groups and committed offsets, derived from `__consumer_offsets`.
    pub groups: GroupCoordinator,
    pub cluster_id: String,
    pub advertised_host: String,
    pub advertised_port: u16,
    /// The data directory and the partition logs in it.
    pub logs: Arc<LogManager>,
    /// Request work kept off the runtime ([`Broker::off_runtime`]): `num.io.threads` threads.
    io: WorkPool,
    /// The log tasks' blocking passes (flushes, retention) and flushes before an acknowledgement.
    pub background: WorkPool,
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
        let cluster_id = cluster_id(&config.log_dirs, config.node_id)?;
        let replicas = Arc::new(ReplicaManager::new(config.node_id, logs.clone()));
        let (metadata, controller) =
            crate::controller::open_local(&config, logs.clone(), replicas.clone())?;
        let groups = GroupCoordinator::load(&config, &replicas);
        let (advertised_host, mut advertised_port) = config.advertised_host_port();
        if config.advertised_listeners.is_none() && advertised_port == 0 {
            advertised_port = bound_port;
        }
        Ok(Self {
            logs,
            io: WorkPool::new(
                "quipu-io",
                config.num_io_threads as usize,
                config.num_io_threads as usize,
            )?,
            background: WorkPool::new("quipu-background", BACKGROUND_THREADS, 16)?,
            cleaner: WorkPool::new("quipu-cleaner", 1, 0)?,
            config,
            metadata,
            controller,
            replicas,
            groups,
            cluster_id,
            advertised_host,
            advertised_port,
        })
    }
}

impl Broker {
    /// Runs request work that blocks or runs long (decompression, topic changes) on one of
    /// the `num.io.threads` threads, so that the network runtime never waits on it.
    pub async fn off_runtime<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, WorkError> {
        self.io.run(work).await
    }
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
