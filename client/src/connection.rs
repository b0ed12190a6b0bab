//! One TCP connection to one broker, with pipelined requests.
//!
//! A writer task frames requests (size, header with a fresh correlation id, body) and writes
//! them in the order callers hand them over; a reader task reads responses, which Kafka sends in
//! request order, and hands each body to its caller. On connect the client asks ApiVersions and
//! every typed request then uses the highest version both sides support.
//!
//! Invariants: at most `max_in_flight` requests are written and unanswered at once (a semaphore
//! permit travels with each request until its response arrives); a response whose correlation id
//! is not the oldest outstanding one, or whose size is over `max_response_bytes`, closes the
//! connection and fails every outstanding request; nothing is allocated from a length before it
//! is checked against that limit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quipu_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use quipu_protocol::wire::skip_tagged_fields;
use quipu_protocol::{Decodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use quipu_protocol::{HeaderVersion, Request};

/// Settings of a connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// The client id every request header carries.
    pub client_id: String,
    /// How long connecting may take.
    pub connect_timeout_ms: u64,
    /// How long a request waits for its response.
    pub request_timeout_ms: u64,
    /// Requests written and not yet answered, at most.
    pub max_in_flight: usize,
    /// Largest response accepted; a larger one closes the connection.
    pub max_response_bytes: usize,
}

struct Outgoing {
    api_key: i16,
    api_version: i16,
    header_version: i16,
    response_header_version: i16,
    /// The body as chunks, written one after another (record batches are not copied).
    body: Vec<Bytes>,
    reply: oneshot::Sender<Result<Bytes>>,
    /// `false`: the broker sends no response (Produce with acks=0); the reply comes once the
    /// request is written.
    expects_response: bool,
    permit: OwnedSemaphorePermit,
}

struct Pending {
    correlation_id: i32,
    response_header_version: i16,
    reply: oneshot::Sender<Result<Bytes>>,
    _permit: OwnedSemaphorePermit,
}

/// A live connection; cheap to share behind an `Arc`.
pub struct Connection {
    /// The broker's address, as connected to.
    pub addr: String,
    requests: mpsc::UnboundedSender<Outgoing>,
    in_flight: Arc<Semaphore>,
    versions: HashMap<i16, (i16, i16)>,
    broken: Arc<AtomicBool>,
    request_timeout_ms: u64,
}

impl Connection {
    /// Connects, starts the reader and writer, and asks the broker for its API versions.
    pub async fn open(addr: &str, config: &ConnectionConfig) -> Result<Self> {
        let connect = TcpStream::connect(addr);
        let stream =
            tokio::time::timeout(Duration::from_millis(config.connect_timeout_ms), connect)
                .await
                .map_err(|_| Error::Connect {
                    addr: addr.to_string(),
                    reason: format!("no answer within {} ms", config.connect_timeout_ms),
                })?
                .map_err(|e| Error::Connect {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Mutex::new(VecDeque::new()));
        let broken = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_loop(
            addr.to_string(),
            config.client_id.clone(),
            write_half,
            rx,
            pending.clone(),
            broken.clone(),
        ));
        tokio::spawn(read_loop(
            addr.to_string(),
            read_half,
            pending,
            broken.clone(),
            config.max_response_bytes,
        ));
        let mut conn = Self {
            addr: addr.to_string(),
            requests: tx,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            versions: HashMap::new(),
            broken,
            request_timeout_ms: config.request_timeout_ms,
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("quipu-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response: ApiVersionsResponse = conn.send_version(&request, 3).await?;
        if let Some(e) = Error::broker(response.error_code, "ApiVersions") {
            return Err(e);
        }
        conn.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// Whether the connection failed; a broken connection is replaced, never reused.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire) || self.requests.is_closed()
    }

    /// The highest version of `R` both sides support.
    pub fn version_for<R: Request>(&self) -> Result<i16> {
        let ours = R::VERSIONS;
        let (min, max) = self.versions.get(&R::KEY).copied().ok_or_else(|| {
            Error::Protocol(format!(
                "broker {} does not support API key {}",
                self.addr,
                R::KEY
            ))
        })?;
        let version = max.min(ours.max);
        if version < min.max(ours.min) {
            return Err(Error::Protocol(format!(
                "no common version of API key {} with broker {} (broker {min}..={max}, client {}..={})",
                R::KEY,
                self.addr,
                ours.min,
                ours.max
            )));
        }
        Ok(version)
    }

    /// Sends `request` at the highest common version and decodes the response.
    pub async fn send<R: Request>(&self, request: &R) -> Result<R::Response> {
        let version = self.version_for::<R>()?;
        self.send_version(request, version).await
    }

    /// Sends `request` at `version` and decodes the response.
    pub async fn send_version<R: Request>(&self, request: &R, version: i16) -> Result<R::Response> {
        let body = self
            .enqueue::<R>(request, version, self.request_timeout_ms)
            .await?
            .await?;
        decode_response::<R>(body, version)
    }

    /// Sends `request` at the highest common version and waits up to `timeout_ms` for the
    /// answer (JoinGroup and SyncGroup wait for the whole group, longer than a request timeout).
    pub async fn send_timeout<R: Request>(
        &self,
        request: &R,
        timeout_ms: u64,
    ) -> Result<R::Response> {
        let version = self.version_for::<R>()?;
        let body = self
            .enqueue::<R>(request, version, timeout_ms)
            .await?
            .await?;
        decode_response::<R>(body, version)
    }

    /// Hands a request body, encoded as chunks, to the writer now (waiting for a free in-flight
    /// slot) and returns the future of its response: requests handed over one after another are
    /// written in that order.
    pub async fn start_chunks<R: Request>(
        &self,
        body: Vec<Bytes>,
        version: i16,
    ) -> Result<impl std::future::Future<Output = Result<R::Response>> + Send + 'static> {
        let reply = self
            .enqueue_chunks::<R>(body, version, Some(self.request_timeout_ms))
            .await?;
        Ok(async move {
            let body = reply.await?;
            decode_response::<R>(body, version)
        })
    }

    /// Sends a body of chunks that has no response (Produce with acks=0); returns once written.
    pub async fn send_chunks_no_response<R: Request>(
        &self,
        body: Vec<Bytes>,
        version: i16,
    ) -> Result<()> {
        self.enqueue_chunks::<R>(body, version, None)
            .await?
            .await
            .map(|_| ())
    }

    async fn enqueue<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout_ms: u64,
    ) -> Result<impl std::future::Future<Output = Result<Bytes>> + Send + 'static> {
        let mut body = BytesMut::new();
        request
            .encode(&mut body, version)
            .map_err(|e| Error::Protocol(format!("cannot encode API key {}: {e:#}", R::KEY)))?;
        self.enqueue_chunks::<R>(vec![body.freeze()], version, Some(timeout_ms))
            .await
    }

    /// `answer_timeout_ms`: how long to wait for the answer; `None` when there is none.
    async fn enqueue_chunks<R: Request>(
        &self,
        body: Vec<Bytes>,
        version: i16,
        answer_timeout_ms: Option<u64>,
    ) -> Result<impl std::future::Future<Output = Result<Bytes>> + Send + 'static> {
        let expects_response = answer_timeout_ms.is_some();
        let timeout = Duration::from_millis(self.request_timeout_ms);
        let permit = tokio::time::timeout(timeout, self.in_flight.clone().acquire_owned())
            .await
            .map_err(|_| Error::Timeout {
                timeout_ms: self.request_timeout_ms,
                what: format!("waiting for a free request slot on {}", self.addr),
            })?
            .map_err(|_| self.lost("connection closed"))?;
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Outgoing {
                api_key: R::KEY,
                api_version: version,
                header_version: R::header_version(version),
                response_header_version: R::Response::header_version(version),
                body,
                reply,
                expects_response,
                permit,
            })
            .map_err(|_| self.lost("connection closed"))?;
        let addr = self.addr.clone();
        let broken = self.broken.clone();
        let timeout_ms = answer_timeout_ms.unwrap_or(self.request_timeout_ms);
        let timeout = Duration::from_millis(timeout_ms);
        Ok(async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(Error::Disconnected {
                    addr,
                    reason: "connection closed".into(),
                }),
                Err(_) => {
                    // A request without an answer leaves the connection in an unknown state.
                    broken.store(true, Ordering::Release);
                    Err(Error::Timeout {
                        timeout_ms,
                        what: format!("API key {} request to {addr}", R::KEY),
                    })
                }
            }
        })
    }

    fn lost(&self, reason: &str) -> Error {
        Error::Disconnected {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Dropping the sender ends the writer, which shuts the socket down; the reader follows.
        self.broken.store(true, Ordering::Release);
    }
}

async fn write_loop(
    addr: String,
    client_id: String,
    mut out: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    pending: Arc<Mutex<VecDeque<Pending>>>,
    broken: Arc<AtomicBool>,
) {
    let mut correlation_id: i32 = 0;
    let mut chunks: Vec<Bytes> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut acks0 = Vec::new();
        // Frame everything queued, then write it all with vectored writes: the bodies' chunks
        // (record batches among them) go to the socket as they are, never into a buffer.
        while let Some(req) = next.take() {
            correlation_id = correlation_id.wrapping_add(1);
            let size = req.body.iter().map(Bytes::len).sum::<usize>();
            let mut head = BytesMut::with_capacity(16 + client_id.len());
            head.put_i32(0); // size, below
            head.put_i16(req.api_key);
            head.put_i16(req.api_version);
            head.put_i32(correlation_id);
            if req.header_version >= 1 {
                head.put_i16(client_id.len() as i16);
                head.extend_from_slice(client_id.as_bytes());
            }
            if req.header_version >= 2 {
                head.put_u8(0); // no tagged fields
            }
            let frame_size = (head.len() - 4 + size) as i32;
            head[..4].copy_from_slice(&frame_size.to_be_bytes());
            chunks.push(head.freeze());
            chunks.extend(req.body.into_iter().filter(|c| !c.is_empty()));
            // Registered before the bytes go out: the response may arrive before this task
            // runs again after the write.
            if req.expects_response {
                pending.lock().expect("pending lock").push_back(Pending {
                    correlation_id,
                    response_header_version: req.response_header_version,
                    reply: req.reply,
                    _permit: req.permit,
                });
            } else {
                acks0.push(req.reply);
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = write_chunks(&mut out, &mut chunks).await {
            broken.store(true, Ordering::Release);
            fail_pending(&addr, &pending, &e.to_string());
            for reply in acks0 {
                let _ = reply.send(Err(Error::Disconnected {
                    addr: addr.clone(),
                    reason: e.to_string(),
                }));
            }
            return;
        }
        for reply in acks0 {
            let _ = reply.send(Ok(Bytes::new()));
        }
    }
    let _ = out.shutdown().await;
}

/// Writes and empties `chunks` (vectored, see `quipu_net::write_chunks`).
async fn write_chunks(
    out: &mut tokio::net::tcp::OwnedWriteHalf,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    quipu_net::write_chunks(out, chunks).await?;
    chunks.clear();
    Ok(())
}

async fn read_loop(
    addr: String,
    read_half: tokio::net::tcp::OwnedReadHalf,
    pending: Arc<Mutex<VecDeque<Pending>>>,
    broken: Arc<AtomicBool>,
    max_response_bytes: usize,
) {
    // Small responses come many to a read; a large one bypasses the buffer.
    let mut input = BufReader::with_capacity(64 * 1024, read_half);
    let reason = loop {
        let mut size = [0u8; 4];
        if let Err(e) = input.read_exact(&mut size).await {
            break e.to_string();
        }
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > max_response_bytes {
            break format!("response size {size} is outside 4..={max_response_bytes}");
        }
        let size = size as usize;
        // Read into spare capacity: no zeroing of a buffer about to be overwritten.
        let mut frame = BytesMut::with_capacity(size);
        let mut rest = (&mut input).take(size as u64);
        let mut failed = None;
        while frame.len() < size {
            match rest.read_buf(&mut frame).await {
                Ok(0) => {
                    failed = Some("connection closed mid-response".to_string());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(reason) = failed {
            break reason;
        }
        let mut frame = frame.freeze();
        let correlation_id = frame.get_i32();
        let Some(p) = pending.lock().expect("pending lock").pop_front() else {
            break format!("response {correlation_id} to no request");
        };
        if p.correlation_id != correlation_id {
            let _ = p.reply.send(Err(Error::Protocol(format!(
                "response correlation id {correlation_id} where {} was expected",
                p.correlation_id
            ))));
            break "correlation id mismatch".to_string();
        }
        if p.response_header_version >= 1 {
            if let Err(e) = skip_tagged_fields(&mut frame) {
                let _ = p
                    .reply
                    .send(Err(Error::Protocol(format!("response header: {e}"))));
                break "bad response header".to_string();
            }
        }
        let _ = p.reply.send(Ok(frame));
    };
    broken.store(true, Ordering::Release);
    tracing::debug!(%addr, %reason, "connection closed");
    fail_pending(&addr, &pending, &reason);
}

fn fail_pending(addr: &str, pending: &Mutex<VecDeque<Pending>>, reason: &str) {
    let drained: Vec<Pending> = pending.lock().expect("pending lock").drain(..).collect();
    for p in drained {
        let _ = p.reply.send(Err(Error::Disconnected {
            addr: addr.to_string(),
            reason: reason.to_string(),
        }));
    }
}

/// A response body decoded as `R`'s response at `version`.
fn decode_response<R: Request>(mut body: Bytes, version: i16) -> Result<R::Response> {
    R::Response::decode(&mut body, version).map_err(|e| {
        Error::Protocol(format!(
            "cannot decode response to API key {}: {e:#}",
            R::KEY
        ))
    })
}
