//! The network side: accepts connections, cuts frames, dispatches requests, writes responses.
//!
//! One task per connection. Requests are read while fewer than
//! `connection.max.in.flight.requests` are in progress; their handlers run concurrently (a
//! long-polling Fetch does not hold up the connection's reads) but responses are written strictly
//! in request order, as Kafka clients expect. A frame over `socket.request.max.bytes`, a bad
//! header, an unknown API, an unsupported version or a body that does not parse closes the
//! connection with a log line, as Kafka does; other connections are unaffected.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesOrdered, StreamExt};
use quipu_protocol::frame::FrameDecoder;
use quipu_protocol::header::{decode_request_header, peek_prefix};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::api::{self, Handled};
use crate::broker::Broker;

/// Bytes read from a socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(broker.config.max_connections as usize));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = connections.clone().try_acquire_owned() else {
                        crate::warn_limited!(%peer, max_connections = broker.config.max_connections, "connection refused: max.connections reached");
                        drop(stream);
                        continue;
                    };
                    let broker = broker.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(broker, stream, peer).await {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                        drop(permit);
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

async fn serve_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let decoder = FrameDecoder::new(broker.config.socket_request_max_bytes as usize);
    let max_in_flight = broker.config.connection_max_in_flight_requests as usize;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut in_flight = FuturesOrdered::new();
    let mut reading = true;
    loop {
        // Start handlers for every whole frame buffered, up to the in-flight limit.
        while in_flight.len() < max_in_flight {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    crate::warn_limited!(%peer, error = %e, "closing connection: bad frame");
                    return Ok(());
                }
            };
            match start_request(&broker, frame, peer) {
                Some(fut) => in_flight.push_back(fut),
                None => return Ok(()),
            }
        }
        if !reading && in_flight.is_empty() {
            return Ok(());
        }
        let can_read = reading && in_flight.len() < max_in_flight;
        tokio::select! {
            read = reader.read_buf(&mut buf), if can_read => {
                if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
                    buf.reserve(READ_CHUNK_BYTES);
                }
                if read? == 0 {
                    reading = false;
                }
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                match done {
                    Ok(Handled::Response(chunks)) => write_chunks(&mut writer, chunks).await?,
                    Ok(Handled::NoResponse) => {}
                    Err(e) => {
                        crate::warn_limited!(%peer, error = %e, "closing connection: request failed");
                        return Ok(());
                    }
                }
            }
        }
    }
}

type RequestFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Handled, api::RequestError>> + Send>>;

/// Parses the header and starts the handler, or says why the connection must close.
fn start_request(
    broker: &Arc<Broker>,
    mut frame: Bytes,
    peer: SocketAddr,
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
    let broker = broker.clone();
    Some(Box::pin(async move {
        api::handle(broker, header, frame, peer).await
    }))
}

/// Writes a response's chunks with vectored writes: record slices go straight from the mapping.
async fn write_chunks<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut chunks: Vec<Bytes>,
) -> std::io::Result<()> {
    quipu_protocol::frame::write_chunks(writer, &mut chunks).await?;
    writer.flush().await
}
