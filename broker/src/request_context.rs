//! What a request handler may reach: the broker's configuration and identity, the read-only
//! metadata cache, the replica manager, the group coordinator, the controller (the one way to
//! change metadata) and the pools that keep blocking work off the runtime. Handlers get this and
//! nothing else: the LogManager, the log tasks and the cleaner are the broker's own
//! (`broker::Broker`), so no handler writes a checkpoint or a directory behind the replica
//! manager's back.
//!
//! Invariant: everything here is shared read-only or behind its owner's locks; a handler holds
//! no lock of its own across an await.

use std::sync::Arc;

use quipu_config::BrokerConfig;

use crate::controller::Controller;
use crate::group::GroupCoordinator;
use crate::metadata::Metadata;
use crate::quorum::Quorum;
use crate::replica_manager::ReplicaManager;
use crate::work_pool::{WorkError, WorkPool};

/// How clients reach this broker, as Metadata and FindCoordinator advertise it.
pub struct Identity {
    pub cluster_id: String,
    pub advertised_host: String,
    pub advertised_port: u16,
}

pub struct RequestContext {
    pub config: BrokerConfig,
    pub identity: Identity,
    /// The metadata image and the topics served from it (read-only).
    pub metadata: Arc<Metadata>,
    /// The one writer of the metadata log: admin changes go through it.
    pub controller: Controller,
    /// The partitions this broker hosts; handlers find partitions only through it.
    pub replicas: Arc<ReplicaManager>,
    /// Consumer groups and committed offsets, derived from `__consumer_offsets`.
    pub groups: Arc<GroupCoordinator>,
    /// This node's part of the metadata quorum (all of it, on a single node).
    pub quorum: Quorum,
    /// Request work kept off the runtime ([`RequestContext::off_runtime`]): `num.io.threads`.
    pub(crate) io: WorkPool,
    /// Flushes before an acknowledgement; shared with the log tasks' blocking passes.
    pub(crate) background: Arc<WorkPool>,
    /// Places for acks=all produces waiting on the high watermark
    /// (`produce.purgatory.max.requests`).
    pub(crate) produce_purgatory: Arc<tokio::sync::Semaphore>,
}

impl RequestContext {
    /// The node clients are told is the controller (Metadata, DescribeCluster): this broker.
    /// As in KRaft, where a broker names a live broker rather than the active controller,
    /// admin requests sent to it are forwarded to the quorum's leader; naming the leader instead
    /// left librdkafka's admin client sending to a dead leader until its next metadata refresh.
    pub fn controller_id(&self) -> i32 {
        self.config.node_id
    }

    /// Runs request work that blocks or runs long (decompression, topic changes) on one of
    /// the `num.io.threads` threads, so that the network runtime never waits on it.
    pub async fn off_runtime<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, WorkError> {
        self.io.run(work).await
    }
}
