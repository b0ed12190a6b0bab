//! The quorum's wire: what controllers say to each other on their controller listeners (Raft's
//! AppendEntries, Vote and InstallSnapshot, a batch forwarded to the leader, a node's status,
//! an observer's request to follow the log),
//! the framing, the client side of one connection and the server that answers on the listener.
//!
//! Frame: `length u32 | JSON`, big-endian; a request is an [`Envelope`] naming the sender's
//! cluster, answered by exactly one response on the same connection, in order. A frame whose
//! payload does not start with `{` is a Kafka request (`broker_api`: BrokerRegistration and
//! BrokerHeartbeat), answered in Kafka's encoding.
//!
//! Invariants: a frame longer than [`MAX_FRAME_BYTES`] closes the connection before anything is
//! allocated for it; a request from another cluster is refused, never handed to Raft; at most
//! [`MAX_CONNECTIONS`] connections are served at once; a connection that fails is dropped and
//! made anew by the next call.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::types::{NodeId, Outcome, QuorumTypes, RecordBatch};

/// Largest frame read: a snapshot chunk (1 MiB of data, as hex in JSON) with room to spare.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Connections the controller listener serves at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub cluster_id: String,
    pub body: Request,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<QuorumTypes>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<QuorumTypes>),
    /// A batch for the leader to commit, from a controller that is not the leader.
    Propose(RecordBatch),
    /// The leader's view of the quorum (Kafka's DescribeQuorum, forwarded).
    DescribeQuorum,
    Status,
    /// A broker-only node asks to follow the log (as a learner of the membership).
    AddObserver {
        node_id: NodeId,
        addr: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The index the batch was committed at and its outcome; or why it was not proposed (this
    /// node is not the leader), so it may be sent again.
    Proposed(Result<(u64, Outcome), String>),
    /// The quorum as the leader sees it; or why not (this node is not the leader).
    Quorum(Result<QuorumDescription, String>),
    Status(NodeStatus),
    /// Added (or already a member); or why not (this node is not the leader).
    Observer(Result<(), String>),
    /// Not handed to Raft: the sender belongs to another cluster.
    Refused(String),
}

/// What a node reports of itself: its place in the quorum and the image it has applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// Index of the last entry applied to the image.
    pub last_applied: Option<u64>,
    /// CRC-32C of the image's records (`snapshot::digest`): equal on nodes with equal images.
    pub image_digest: u32,
    pub topics: usize,
}

/// The metadata quorum as its leader sees it (what Kafka's DescribeQuorum reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumDescription {
    pub leader_id: i32,
    pub leader_epoch: i32,
    /// The offset (index) just past the last committed entry.
    pub high_watermark: i64,
    pub voters: Vec<VoterProgress>,
    /// The broker-only nodes that follow the log.
    #[serde(default)]
    pub observers: Vec<VoterProgress>,
    /// Each voter's id and controller listener.
    pub listeners: Vec<(i32, String, u16)>,
}

/// How far one voter's log is, as the leader knows it; -1 where it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterProgress {
    pub node_id: i32,
    pub log_end_offset: i64,
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

/// Handles one request (Raft, a forwarded batch or a status question).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> impl std::future::Future<Output = Response> + Send;
    /// Answers a request in Kafka's encoding (a frame whose payload is not JSON): the response
    /// frame, or `None` to close the connection.
    fn handle_kafka(
        &self,
        frame: bytes::Bytes,
    ) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send;
}

/// One connection to a peer's controller listener, made on first use and after a failure.
pub struct Connection {
    address: String,
    stream: Option<TcpStream>,
}

impl Connection {
    pub fn new(address: String) -> Self {
        Self {
            address,
            stream: None,
        }
    }

    /// Sends `request` and reads its response, within `timeout`; on any failure the connection
    /// is dropped, so the next call connects again.
    pub async fn call(
        &mut self,
        request: &Envelope,
        timeout: Duration,
    ) -> std::io::Result<Response> {
        let result = tokio::time::timeout(timeout, self.exchange(request)).await;
        let result = result.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from {} within {timeout:?}", self.address),
            ))
        });
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &Envelope) -> std::io::Result<Response> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.address).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected");
        write_frame(stream, request).await?;
        read_frame(stream).await
    }
}

/// Writes `value` as one frame.
async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    if json.len() > MAX_FRAME_BYTES {
        return Err(std::io::Error::other(format!(
            "a frame of {} bytes is above the limit of {MAX_FRAME_BYTES}",
            json.len()
        )));
    }
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    stream.write_all(&out).await
}

/// Reads one frame as JSON, refusing a length above [`MAX_FRAME_BYTES`] before allocating.
async fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut TcpStream) -> std::io::Result<T> {
    let body = read_raw_frame(stream).await?;
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads one frame's payload, refusing a length above [`MAX_FRAME_BYTES`] before allocating.
pub(crate) async fn read_raw_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let length = stream.read_u32().await? as usize;
    if length > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes is above the limit of {MAX_FRAME_BYTES}"),
        ));
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Answers requests on `listener` until the task is dropped.
pub async fn serve<H: Handler>(listener: TcpListener, cluster_id: Arc<str>, handler: Arc<H>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "controller listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (cluster_id, handler) = (cluster_id.clone(), handler.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &cluster_id, &*handler).await {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, error = %e, "controller connection closed");
                }
            }
            drop(slot);
        });
    }
}

/// Answers the requests of one connection in order, until it closes or fails.
async fn answer<H: Handler>(
    mut stream: TcpStream,
    cluster_id: &str,
    handler: &H,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let frame = read_raw_frame(&mut stream).await?;
        if frame.first() != Some(&b'{') {
            // Kafka's encoding (an API key, never `{`): BrokerRegistration and BrokerHeartbeat.
            let Some(response) = handler.handle_kafka(frame.into()).await else {
                return Ok(());
            };
            stream.write_all(&response).await?;
            continue;
        }
        let request: Envelope = serde_json::from_slice(&frame)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let response = if request.cluster_id == cluster_id {
            handler.handle(request.body).await
        } else {
            tracing::warn!(theirs = %request.cluster_id, ours = %cluster_id, "refused a quorum request from another cluster");
            Response::Refused(format!(
                "this node belongs to cluster {cluster_id}, not {}",
                request.cluster_id
            ))
        };
        write_frame(&mut stream, &response).await?;
    }
}

/// Asks the node at `address` for its status (for tests and tools).
pub async fn status(
    address: &str,
    cluster_id: &str,
    timeout: Duration,
) -> std::io::Result<NodeStatus> {
    let request = Envelope {
        cluster_id: cluster_id.to_string(),
        body: Request::Status,
    };
    match Connection::new(address.to_string())
        .call(&request, timeout)
        .await?
    {
        Response::Status(s) => Ok(s),
        other => Err(std::io::Error::other(format!(
            "unexpected answer to a status request: {other:?}"
        ))),
    }
}
