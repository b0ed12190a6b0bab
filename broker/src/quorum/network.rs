//! openraft's network for the quorum: one [`Peer`] per target voter, each a [`Connection`] to
//! its controller listener, sending Raft's three RPCs.
//!
//! A peer that cannot be reached is reported `Unreachable`, so openraft backs off before trying
//! again (a voter down at start is retried, not fatal); a connection that breaks mid-call is a
//! network error, retried at once; the peer's own Raft error comes back as a remote error.
//!
//! Invariant: making a peer does no I/O (openraft makes them freely); every call is bounded by
//! the time openraft gives it.

// The error types are openraft's, fixed by its `RaftNetwork` trait.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::rpc::{Connection, Envelope, Request, Response};
use super::types::{NodeId, QuorumTypes};

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// When each voter last answered an AppendEntries, in wall-clock milliseconds (what Kafka's
/// DescribeQuorum calls a voter's last fetch).
pub type HeardFrom = Arc<std::sync::Mutex<std::collections::BTreeMap<NodeId, i64>>>;

/// Makes the peers openraft sends to.
pub struct Network {
    pub cluster_id: Arc<str>,
    pub heard_from: HeardFrom,
}

pub struct Peer {
    target: NodeId,
    cluster_id: Arc<str>,
    connection: Connection,
    heard_from: HeardFrom,
    /// When a failure to reach the target was last logged, and how many since went unlogged.
    last_logged: Option<(std::time::Instant, u64)>,
}

/// Least time between two log lines about one unreachable peer.
const UNREACHABLE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

impl RaftNetworkFactory<QuorumTypes> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            cluster_id: self.cluster_id.clone(),
            connection: Connection::new(node.addr.clone()),
            heard_from: self.heard_from.clone(),
            last_logged: None,
        }
    }
}

impl Peer {
    /// Sends `body` and returns the response, with transport failures as openraft's errors.
    async fn send<E: std::error::Error>(
        &mut self,
        body: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let envelope = Envelope {
            cluster_id: self.cluster_id.to_string(),
            body,
        };
        match self.connection.call(&envelope, option.hard_ttl()).await {
            Ok(Response::Refused(why)) => {
                tracing::warn!(target = self.target, %why, "a voter refused this node");
                Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(why),
                )))
            }
            Ok(response) => {
                if self.last_logged.take().is_some() {
                    tracing::info!(target = self.target, "voter reachable again");
                }
                Ok(response)
            }
            Err(e) => {
                self.log_failure(&e);
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    Err(RPCError::Unreachable(Unreachable::new(&e)))
                } else {
                    Err(RPCError::Network(NetworkError::new(&e)))
                }
            }
        }
    }

    /// Logs a failure to reach the target at most once per [`UNREACHABLE_LOG_INTERVAL`].
    fn log_failure(&mut self, e: &std::io::Error) {
        let now = std::time::Instant::now();
        match &mut self.last_logged {
            Some((at, suppressed)) if now.duration_since(*at) < UNREACHABLE_LOG_INTERVAL => {
                *suppressed += 1
            }
            last => {
                let suppressed = last.map_or(0, |(_, n)| n);
                tracing::warn!(target = self.target, error = %e, suppressed, "cannot reach a voter; retrying");
                *last = Some((now, 0));
            }
        }
    }

    fn remote<T, E: std::error::Error>(
        &self,
        result: Result<T, RaftError<NodeId, E>>,
    ) -> RpcResult<T, E> {
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// The error for a response of the wrong kind.
fn unexpected<E: std::error::Error>(
    response: Response,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    let e = std::io::Error::other(format!("unexpected response {response:?}"));
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<QuorumTypes> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<QuorumTypes>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.send(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(r) => {
                if r.is_ok() {
                    let mut heard = self.heard_from.lock().expect("heard-from lock");
                    heard.insert(self.target, crate::clock::now_ms());
                }
                self.remote(r)
            }
            other => Err(unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<QuorumTypes>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.send(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(r) => self.remote(r),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.send(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => self.remote(r),
            other => Err(unexpected(other)),
        }
    }
}
