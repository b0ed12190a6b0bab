//! Kafka's broker lifecycle APIs on the controller listener (KIP-631), in Kafka's encoding:
//! BrokerRegistration (62) and BrokerHeartbeat (63), as the active controller answers them and
//! as a broker of a cluster sends them.
//!
//! - Registration commits the broker's address and unfences it, at a new broker epoch each
//!   time (the broker serves as leader once its own image holds that epoch: caught up). Another incarnation of an id whose broker is live
//!   (unfenced, heard within its session) gets DUPLICATE_BROKER_REGISTRATION, as in Kafka: a
//!   broker restarted after `kill -9` is let in once its old session has run out; one of
//!   another cluster gets INCONSISTENT_CLUSTER_ID.
//! - A heartbeat renews the session at the broker's epoch (STALE_BROKER_EPOCH for another);
//!   `want_shut_down` is controlled shutdown: the broker is fenced, and told `should_shut_down`
//!   once that is committed.
//!
//! Invariants: only the leader answers without NOT_CONTROLLER; a registration or fencing takes
//! effect only as committed records; a request is walked against its wire shape before it is
//! decoded, and one that does not fit, or does not decode, closes the connection.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use openraft::error::{ClientWriteError, RaftError};
use quipu_protocol::messages::broker_registration_request::Listener;
use quipu_protocol::messages::{
    AlterPartitionRequest, ApiKey, BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId,
    BrokerRegistrationRequest, BrokerRegistrationResponse, RequestHeader, ResponseHeader,
};
use quipu_protocol::{Decodable, Encodable, ResponseError, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::types::RecordBatch;
use super::{is_leader, Server};
use crate::metadata_log::record::MetadataRecord;

/// The versions this controller answers and its brokers send (the newest of each).
pub const REGISTRATION_VERSION: i16 = 4;
pub const HEARTBEAT_VERSION: i16 = 1;

/// What a broker tells the controller about itself when it registers.
#[derive(Debug, Clone)]
pub struct Registration {
    pub node_id: i32,
    pub cluster_id: String,
    /// This process's run: a new one at every start (Kafka's incarnation id).
    pub incarnation: uuid::Uuid,
    pub host: String,
    pub port: u16,
    /// `broker.rack`, if set.
    pub rack: Option<String>,
}

impl Server {
    /// Answers one Kafka-encoded request frame; `None` closes the connection.
    pub(super) async fn answer_kafka(&self, mut frame: Bytes) -> Option<Vec<u8>> {
        let header = quipu_protocol::header::decode_request_header(&mut frame).ok()?;
        let version = header.api_version;
        // Every count the decoder acts on is checked against the bytes first.
        if let Err(e) =
            quipu_protocol::request_shape::check_request(header.api_key, version, &frame)
        {
            tracing::warn!(api = ?header.api_key, version, error = %e, "controller listener: a malformed request; closing");
            return None;
        }
        match header.api_key {
            ApiKey::BrokerRegistration if (0..=REGISTRATION_VERSION).contains(&version) => {
                let request = BrokerRegistrationRequest::decode(&mut frame, version).ok()?;
                let response = self.register(request).await;
                encode(header.correlation_id, header.api_key, version, &response)
            }
            ApiKey::AlterPartition if (2..=super::alter_partition::VERSION).contains(&version) => {
                let request = AlterPartitionRequest::decode(&mut frame, version).ok()?;
                let response = self.alter_partition(request).await;
                encode(header.correlation_id, header.api_key, version, &response)
            }
            ApiKey::BrokerHeartbeat if (0..=HEARTBEAT_VERSION).contains(&version) => {
                let request = BrokerHeartbeatRequest::decode(&mut frame, version).ok()?;
                let response = self.heartbeat(request).await;
                encode(header.correlation_id, header.api_key, version, &response)
            }
            other => {
                tracing::warn!(api = ?other, version, "controller listener: an API it does not answer; closing");
                None
            }
        }
    }

    async fn register(&self, r: BrokerRegistrationRequest) -> BrokerRegistrationResponse {
        let mut response = BrokerRegistrationResponse::default();
        let node_id = r.broker_id.0;
        // Kafka's order: NOT_CONTROLLER, then the cluster id.
        let code = if !is_leader(&self.raft) {
            Err(ResponseError::NotController)
        } else if *r.cluster_id != *self.cluster_id {
            Err(ResponseError::InconsistentClusterId)
        } else {
            self.commit_registration(node_id, &r).await
        };
        match code {
            Ok(epoch) => response.broker_epoch = epoch,
            Err(e) => {
                response.error_code = e.code();
                response.broker_epoch = -1;
            }
        }
        response
    }

    /// Commits `r` as the leader; returns the broker's epoch.
    async fn commit_registration(
        &self,
        node_id: i32,
        r: &BrokerRegistrationRequest,
    ) -> Result<i64, ResponseError> {
        let Some(listener) = r.listeners.first() else {
            return Err(ResponseError::InvalidRequest);
        };
        let image = self.machine.applier().metadata().image();
        let live = image.broker(node_id).is_some_and(|b| !b.fenced);
        let now = Instant::now();
        if !self
            .liveness
            .registering(node_id, r.incarnation_id, live, now)
        {
            tracing::info!(node_id, incarnation = %r.incarnation_id, "refused a registration: another broker is registered with that id and live");
            return Err(ResponseError::DuplicateBrokerRegistration);
        }
        let (host, port) = (listener.host.to_string(), i32::from(listener.port));
        let rack = r.rack.as_ref().map(|r| r.to_string());
        let address = (host.as_str(), port, rack.as_deref());
        let (epoch, records) = crate::controller::new_registration(&image, node_id, address);
        self.commit(self.with_elections(&image, records)).await?;
        tracing::info!(node_id, broker_epoch = epoch, %host, port, "registered broker");
        self.liveness.heard(node_id, epoch, now);
        Ok(epoch)
    }

    async fn heartbeat(&self, r: BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
        let mut response = BrokerHeartbeatResponse::default();
        match self.renew(&r).await {
            Ok((fenced, shut_down)) => {
                response.is_fenced = fenced;
                response.should_shut_down = shut_down;
                response.is_caught_up = true;
            }
            Err(e) => response.error_code = e.code(),
        }
        response
    }

    /// Renews `r`'s session; returns whether the broker is fenced and may shut down.
    async fn renew(&self, r: &BrokerHeartbeatRequest) -> Result<(bool, bool), ResponseError> {
        if !is_leader(&self.raft) {
            return Err(ResponseError::NotController);
        }
        let node_id = r.broker_id.0;
        let image = self.machine.applier().metadata().image();
        let Some(broker) = image
            .broker(node_id)
            .filter(|b| b.broker_epoch == r.broker_epoch)
        else {
            return Err(ResponseError::StaleBrokerEpoch);
        };
        self.liveness.heard(node_id, r.broker_epoch, Instant::now());
        if !r.want_shut_down {
            return Ok((broker.fenced, false));
        }
        // A heartbeat that arrives after this one must not unfence it.
        self.liveness.shutting_down(node_id, r.broker_epoch);
        if !broker.fenced {
            let fence = vec![MetadataRecord::BrokerFencing {
                node_id,
                fenced: true,
            }];
            self.commit(self.with_elections(&image, fence)).await?;
            tracing::info!(node_id, "controlled shutdown: fenced");
        }
        Ok((true, true))
    }

    /// `records` (registrations, fencing) and the partition changes they call for.
    fn with_elections(
        &self,
        image: &crate::image::MetadataImage,
        mut records: Vec<MetadataRecord>,
    ) -> Vec<MetadataRecord> {
        let elections =
            crate::election::after_broker_changes(image, &records, self.unclean_default);
        records.extend(elections);
        records
    }

    pub(super) async fn commit(&self, records: Vec<MetadataRecord>) -> Result<(), ResponseError> {
        match self.raft.client_write(RecordBatch(records)).await {
            Ok(written) => written.data.map_err(|e| {
                tracing::warn!(error = %e, "a broker's registration change did not apply");
                ResponseError::UnknownServerError
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(ResponseError::NotController)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a broker's registration change was not committed");
                Err(ResponseError::NotController)
            }
        }
    }
}

fn encode<R: Encodable>(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: &R,
) -> Option<Vec<u8>> {
    let frame = quipu_protocol::frame::response_frame(correlation_id, api, version, body);
    frame.ok().map(|f| f.to_vec())
}

/// Registers `me` with the controller at `address`: the broker epoch, or the error it answered.
pub async fn send_registration(
    address: &str,
    me: &Registration,
    timeout: Duration,
) -> std::io::Result<Result<i64, ResponseError>> {
    let mut listener = Listener::default();
    listener.name = StrBytes::from_static_str("PLAINTEXT");
    listener.host = StrBytes::from_string(me.host.clone());
    listener.port = me.port;
    let mut r = BrokerRegistrationRequest::default();
    r.broker_id = BrokerId(me.node_id);
    r.cluster_id = StrBytes::from_string(me.cluster_id.clone());
    r.incarnation_id = me.incarnation;
    r.listeners = vec![listener];
    r.rack = me.rack.clone().map(StrBytes::from_string);
    r.previous_broker_epoch = -1;
    let response: BrokerRegistrationResponse = call(
        address,
        (ApiKey::BrokerRegistration, REGISTRATION_VERSION),
        &r,
        timeout,
    )
    .await?;
    Ok(match ResponseError::try_from_code(response.error_code) {
        None => Ok(response.broker_epoch),
        Some(e) => Err(e),
    })
}

/// Sends a heartbeat of `node_id` at `broker_epoch` to the controller at `address`; with
/// `want_shut_down`, asks for controlled shutdown.
pub async fn send_heartbeat(
    address: &str,
    (node_id, broker_epoch): (i32, i64),
    want_shut_down: bool,
    timeout: Duration,
) -> std::io::Result<BrokerHeartbeatResponse> {
    let mut r = BrokerHeartbeatRequest::default();
    r.broker_id = BrokerId(node_id);
    r.broker_epoch = broker_epoch;
    r.want_shut_down = want_shut_down;
    call(
        address,
        (ApiKey::BrokerHeartbeat, HEARTBEAT_VERSION),
        &r,
        timeout,
    )
    .await
}

/// One request and its response on a new connection to `address`, within `timeout`.
pub(super) async fn call<Req: Encodable, Resp: Decodable>(
    address: &str,
    (api, version): (ApiKey, i16),
    request: &Req,
    timeout: Duration,
) -> std::io::Result<Resp> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        stream
            .write_all(&request_frame(api, version, request)?)
            .await?;
        let mut frame = Bytes::from(super::rpc::read_raw_frame(&mut stream).await?);
        let invalid = |e: anyhow::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        ResponseHeader::decode(&mut frame, api.response_header_version(version))
            .map_err(invalid)?;
        let response = Resp::decode(&mut frame, version).map_err(invalid)?;
        if frame.has_remaining() {
            return Err(std::io::Error::other("bytes left after the response"));
        }
        Ok(response)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from {address} within {timeout:?}"),
            ))
        })
}

fn request_frame<R: Encodable>(api: ApiKey, version: i16, request: &R) -> std::io::Result<Vec<u8>> {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.client_id = Some(StrBytes::from_static_str("quipu-broker"));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, api.request_header_version(version))
        .and_then(|()| request.encode(&mut body, version))
        .map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.put_u32(body.len() as u32);
    frame.extend_from_slice(&body);
    Ok(frame)
}
