//! The network side: accepts connections, cuts frames, dispatches requests, writes responses.
//!
//! One task per connection. Requests are read while fewer than
//! `connection.max.in.flight.requests` are in progress; their handlers run concurrently (a
//! long-polling Fetch does not hold up the connection's reads) but responses are written strictly
//! in request order, as Kafka clients expect. A frame over `socket.request.max.bytes`, a bad
//! header, an unknown API, an unsupported version or a body that does not parse closes the
//! connection with a log line, as Kafka does; other connections are unaffected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesOrdered, StreamExt};
use quipu_protocol::frame::{FrameDecoder, FRAME_SIZE_PREFIX_BYTES};
use quipu_protocol::header::{decode_request_header, peek_prefix};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Duration, Instant};

use crate::api::produce::AppendTurn;
use crate::api::{self, Handled};
use crate::request_context::RequestContext;
use quipu_protocol::messages::ApiKey;

/// Bytes read from a socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    ctx: Arc<RequestContext>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(ctx.config.max_connections as usize));
    let per_ip = Arc::new(ConnectionsPerIp::new(&ctx.config));
    let request_bytes = Arc::new(Semaphore::new(ctx.config.queued_max_request_bytes as usize));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(ip_slot) = per_ip.take(peer.ip()) else {
                        crate::warn_limited!(%peer, "connection refused: max.connections.per.ip reached");
                        drop(stream);
                        continue;
                    };
                    let Ok(permit) = connections.clone().try_acquire_owned() else {
                        crate::warn_limited!(%peer, max_connections = ctx.config.max_connections, "connection refused: max.connections reached");
                        drop(stream);
                        continue;
                    };
                    let ctx = ctx.clone();
                    let request_bytes = request_bytes.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(ctx, stream, peer, request_bytes).await {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                        drop(permit);
                        drop(ip_slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Connections open per client address, against `max.connections.per.ip` and its overrides.
struct ConnectionsPerIp {
    open: Mutex<HashMap<IpAddr, u32>>,
    limit: u32,
    overrides: HashMap<IpAddr, u32>,
}

impl ConnectionsPerIp {
    fn new(config: &quipu_config::BrokerConfig) -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            limit: config.max_connections_per_ip,
            overrides: config
                .connection_limits_per_ip()
                .expect("validated with the configuration"),
        }
    }

    /// A slot for one more connection from `ip`, or `None` at its limit.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let limit = self.overrides.get(&ip).copied().unwrap_or(self.limit);
        let mut open = self.open.lock().expect("per-ip lock");
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }
}

/// One connection's place in its address's count; given back when dropped.
struct IpSlot {
    owner: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().expect("per-ip lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The receive buffer of a connection, and the share of `queued.max.request.bytes` it holds: a
/// permit for every byte of capacity past the first read chunk (that much every connection has,
/// so small requests never wait on large ones: at most `max.connections` x 64 KiB). A frame split
/// off it takes its permits along to its handler; they go back to the pool when it is done.
struct ReceiveBuffer {
    buf: BytesMut,
    held: Option<OwnedSemaphorePermit>,
}

impl ReceiveBuffer {
    fn held_bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits())
    }

    /// The capacity the buffer must grow to before the next read, if it must: room for the
    /// whole pending frame once its size is known, else a read chunk past what is pending.
    fn growth(&self, decoder: &FrameDecoder) -> Option<usize> {
        let frame_bytes = decoder.wanted_bytes(&self.buf);
        let full = self.buf.capacity() == self.buf.len();
        (full || frame_bytes > self.buf.capacity())
            .then(|| frame_bytes.max(self.buf.len() + READ_CHUNK_BYTES))
    }

    /// Moves the pending bytes to a buffer of exactly `capacity`, holding as many permits:
    /// `more` (just taken) joins those held, and any surplus goes back to the pool.
    fn grow(&mut self, capacity: usize, more: Option<OwnedSemaphorePermit>) {
        match (&mut self.held, more) {
            (Some(held), Some(more)) => held.merge(more),
            (None, more) => self.held = more,
            (Some(_), None) => {}
        }
        if let Some(held) = &mut self.held {
            let surplus = held.num_permits().saturating_sub(charged(capacity));
            drop(held.split(surplus));
        }
        debug_assert_eq!(
            self.held_bytes(),
            charged(capacity),
            "a permit per charged byte"
        );
        let mut bigger = BytesMut::with_capacity(capacity);
        bigger.extend_from_slice(&self.buf);
        self.buf = bigger;
    }

    /// The permits of `bytes` that just left the buffer in a frame.
    fn release(&mut self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        self.held
            .as_mut()
            .and_then(|h| h.split(bytes.min(h.num_permits())))
    }
}

/// The bytes of a receive buffer of `capacity` that count against `queued.max.request.bytes`.
fn charged(capacity: usize) -> usize {
    capacity.saturating_sub(READ_CHUNK_BYTES)
}

/// A connection's limits, from the broker's config.
struct ConnectionLimits {
    decoder: FrameDecoder,
    max_in_flight: usize,
    idle: Duration,
    frame_timeout: Duration,
}

impl ConnectionLimits {
    fn new(config: &quipu_config::BrokerConfig) -> Self {
        Self {
            decoder: FrameDecoder::new(config.socket_request_max_bytes as usize),
            max_in_flight: config.connection_max_in_flight_requests as usize,
            idle: Duration::from_millis(config.connections_max_idle_ms as u64),
            frame_timeout: Duration::from_millis(config.socket_request_read_timeout_ms as u64),
        }
    }
}

/// What a connection's read side tracks between wake-ups.
struct ReadState {
    rx: ReceiveBuffer,
    /// False once the client has closed its side.
    reading: bool,
    last_activity: Instant,
    /// When the first byte of a frame not yet whole arrived.
    frame_started: Option<Instant>,
    /// The last Produce's turn: the next one appends after it (request order).
    last_produce: Option<oneshot::Receiver<()>>,
}

impl ReadState {
    fn new() -> Self {
        Self {
            rx: ReceiveBuffer {
                buf: BytesMut::new(),
                held: None,
            },
            reading: true,
            last_activity: Instant::now(),
            frame_started: None,
            last_produce: None,
        }
    }

    /// Starts the clock on a partly received frame, or stops it once nothing is buffered.
    fn track_frame(&mut self) {
        self.frame_started = match (self.rx.buf.is_empty(), self.frame_started) {
            (true, _) => None,
            (false, started) => Some(started.unwrap_or_else(Instant::now)),
        };
    }

    /// The pool bytes needed to grow the buffer to `capacity`; `None` when it grew without any.
    fn permits_for(&mut self, capacity: usize) -> Option<usize> {
        let more = charged(capacity).saturating_sub(self.rx.held_bytes());
        if more == 0 {
            self.rx.grow(capacity, None);
            return None;
        }
        Some(more)
    }

    /// Whether a deadline closes the connection: a frame slower than
    /// `socket.request.read.timeout.ms`, or `connections.max.idle.ms` with nothing in flight.
    fn expired(
        &self,
        limits: &ConnectionLimits,
        nothing_in_flight: bool,
        peer: SocketAddr,
    ) -> bool {
        let now = Instant::now();
        if self
            .frame_started
            .is_some_and(|t| t + limits.frame_timeout <= now)
        {
            crate::warn_limited!(%peer, timeout_ms = limits.frame_timeout.as_millis() as u64, pending_bytes = self.rx.buf.len(), "closing connection: a request did not arrive whole within socket.request.read.timeout.ms");
            return true;
        }
        if nothing_in_flight && self.last_activity + limits.idle <= now {
            tracing::debug!(%peer, "closing idle connection (connections.max.idle.ms)");
            return true;
        }
        false
    }

    fn deadline(&self, limits: &ConnectionLimits, nothing_in_flight: bool) -> Instant {
        next_deadline(
            self.frame_started.map(|t| t + limits.frame_timeout),
            nothing_in_flight,
            self.last_activity,
            limits.idle,
        )
    }
}

/// Serves one connection until the client closes it, a limit closes it, or a request does.
async fn serve_connection(
    ctx: Arc<RequestContext>,
    stream: TcpStream,
    peer: SocketAddr,
    request_bytes: Arc<Semaphore>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let limits = ConnectionLimits::new(&ctx.config);
    let mut st = ReadState::new();
    let mut in_flight = FuturesOrdered::new();
    loop {
        let queue = (&mut in_flight, limits.max_in_flight);
        if !start_buffered(
            &ctx,
            &limits.decoder,
            &mut st.rx,
            queue,
            peer,
            &mut st.last_produce,
        ) {
            return Ok(());
        }
        st.track_frame();
        if !st.reading && in_flight.is_empty() {
            return Ok(());
        }
        let can_read = st.reading && in_flight.len() < limits.max_in_flight;
        let growth = st.rx.growth(&limits.decoder);
        let permits_wanted = match growth {
            Some(capacity) if can_read => match st.permits_for(capacity) {
                Some(more) => more,
                None => continue,
            },
            _ => 0,
        };
        let deadline = st.deadline(&limits, in_flight.is_empty());
        tokio::select! {
            permits = request_bytes.clone().acquire_many_owned(permits_wanted as u32), if permits_wanted > 0 => {
                let permits = permits.expect("the request pool is never closed");
                st.rx.grow(growth.expect("growth wanted"), Some(permits));
            }
            read = reader.read_buf(&mut st.rx.buf), if can_read && growth.is_none() => {
                if read? == 0 {
                    st.reading = false;
                } else {
                    st.last_activity = Instant::now();
                }
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                if !respond(&mut writer, done, peer).await? {
                    return Ok(());
                }
                st.last_activity = Instant::now();
            }
            _ = tokio::time::sleep_until(deadline) => {
                if st.expired(&limits, in_flight.is_empty(), peer) {
                    return Ok(());
                }
            }
        }
    }
}

/// Starts handlers for every whole frame buffered, up to the in-flight limit; `false` when the
/// connection must close (a bad frame, or a request refused before it runs).
fn start_buffered(
    ctx: &Arc<RequestContext>,
    decoder: &FrameDecoder,
    rx: &mut ReceiveBuffer,
    (in_flight, max_in_flight): (&mut FuturesOrdered<RequestFuture>, usize),
    peer: SocketAddr,
    last_produce: &mut Option<oneshot::Receiver<()>>,
) -> bool {
    while in_flight.len() < max_in_flight {
        let frame = match decoder.decode(&mut rx.buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                crate::warn_limited!(%peer, error = %e, "closing connection: bad frame");
                return false;
            }
        };
        let permits = rx.release(FRAME_SIZE_PREFIX_BYTES + frame.len());
        match start_request(ctx, frame, peer, permits, last_produce) {
            Some(fut) => in_flight.push_back(fut),
            None => return false,
        }
    }
    true
}

/// When the connection must next look at the clock: a frame begun must be whole by
/// `frame_due`; an idle connection closes `idle` after its last activity; one with requests in
/// progress is not idle (it looks again after an hour at the latest).
fn next_deadline(
    frame_due: Option<Instant>,
    nothing_in_flight: bool,
    last_activity: Instant,
    idle: Duration,
) -> Instant {
    match frame_due {
        Some(due) => due.min(last_activity + idle),
        None if nothing_in_flight => last_activity + idle,
        None => last_activity + idle.max(Duration::from_secs(3600)),
    }
}

/// Writes a finished request's response; `false` when the connection must close.
async fn respond<W: AsyncWrite + Unpin>(
    writer: &mut W,
    done: Result<Handled, api::RequestError>,
    peer: SocketAddr,
) -> std::io::Result<bool> {
    match done {
        Ok(Handled::Response(chunks)) => write_chunks(writer, chunks).await?,
        Ok(Handled::NoResponse) => {}
        Err(e) => {
            crate::warn_limited!(%peer, error = %e, "closing connection: request failed");
            return Ok(false);
        }
    }
    Ok(true)
}

type RequestFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Handled, api::RequestError>> + Send>>;

/// Parses the header and starts the handler, or says why the connection must close. `permits`
/// (the frame's share of `queued.max.request.bytes`) are held until the handler is done.
fn start_request(
    ctx: &Arc<RequestContext>,
    mut frame: Bytes,
    peer: SocketAddr,
    permits: Option<OwnedSemaphorePermit>,
    last_produce: &mut Option<oneshot::Receiver<()>>,
) -> Option<RequestFuture> {
    let prefix = match peek_prefix(&frame) {
        Ok(p) => p,
        Err(e) => {
            crate::warn_limited!(%peer, error = %e, "closing connection: bad request header");
            return None;
        }
    };
    if let Err(e) = api::check_version(prefix.api_key, prefix.api_version) {
        if !e.answerable() {
            crate::warn_limited!(%peer, api_key = prefix.api_key, api_version = prefix.api_version, correlation_id = prefix.correlation_id, error = %e, "closing connection");
            return None;
        }
    }
    let header = match decode_request_header(&mut frame) {
        Ok(h) => h,
        Err(e) => {
            crate::warn_limited!(%peer, error = %e, "closing connection: bad request header");
            return None;
        }
    };
    let append_turn = (header.api_key == ApiKey::Produce).then(|| {
        let (turn, next) = AppendTurn::after(last_produce.take());
        *last_produce = Some(next);
        turn
    });
    let ctx = ctx.clone();
    Some(Box::pin(async move {
        let handled = api::handle(ctx, header, frame, peer, append_turn).await;
        drop(permits);
        handled
    }))
}

/// Writes a response's chunks with vectored writes: record slices go straight from the mapping.
async fn write_chunks<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut chunks: Vec<Bytes>,
) -> std::io::Result<()> {
    quipu_net::write_chunks(writer, &mut chunks).await?;
    writer.flush().await
}
