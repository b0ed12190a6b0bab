//! Request handlers, one module per Kafka API, and the table of versions served.
//!
//! `SUPPORTED_APIS` is what ApiVersions advertises; every version in it is handled. A request for
//! an API or version outside it closes the connection (as Kafka does), except ApiVersions, which is
//! answered with UNSUPPORTED_VERSION in its v0 form so the client can pick a version we serve.

mod alter_configs;
mod api_versions;
mod authorized_operations;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod fetch;
mod group_admin;
mod group_membership;
mod group_offsets;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
pub mod produce;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use quipu_protocol::header::RequestHeader;
use quipu_protocol::messages::{ApiKey, ResponseHeader};
use quipu_protocol::{Decodable, Encodable, ResponseError};

use crate::broker::Broker;
use crate::metadata::MetadataError;
use quipu_storage::log::AppendError;

/// APIs served, with the lowest and highest version of each.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
];

/// What a handler produced: a response frame as chunks, or nothing (Produce with acks=0).
pub enum Handled {
    Response(Vec<Bytes>),
    NoResponse,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("cannot parse {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot encode {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

impl RequestError {
    /// Whether the request gets an answer rather than a closed connection.
    pub fn answerable(&self) -> bool {
        matches!(
            self,
            RequestError::UnsupportedVersion {
                api: ApiKey::ApiVersions,
                ..
            }
        )
    }
}

pub fn supported_range(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|(_, min, max)| (*min, *max))
}

/// Whether an api key and version are served.
pub fn check_version(api_key: i16, version: i16) -> Result<ApiKey, RequestError> {
    let api = ApiKey::try_from(api_key).map_err(|_| RequestError::UnknownApi(api_key))?;
    match supported_range(api) {
        Some((min, max)) if (min..=max).contains(&version) => Ok(api),
        Some(_) => Err(RequestError::UnsupportedVersion { api, version }),
        None => Err(RequestError::UnknownApi(api_key)),
    }
}

pub async fn handle(
    broker: Arc<Broker>,
    header: RequestHeader,
    mut body: Bytes,
    peer: std::net::SocketAddr,
    append_turn: Option<produce::AppendTurn>,
) -> Result<Handled, RequestError> {
    let (api, version, correlation_id) =
        (header.api_key, header.api_version, header.correlation_id);
    if let Err(e) = check_version(api as i16, version) {
        if e.answerable() {
            return Ok(Handled::Response(api_versions::unsupported_version(
                correlation_id,
            )?));
        }
        return Err(e);
    }
    let malformed = |e: anyhow::Error| RequestError::Malformed {
        api,
        version,
        reason: e.to_string(),
    };
    // Every count the decoder will act on is checked first (Kafka 4.4's limits), so decoding
    // never reserves memory by a number it has not seen bounded.
    quipu_protocol::request_shape::check_request(api, version, &body)
        .map_err(|e| malformed(e.into()))?;
    macro_rules! decode {
        ($t:ty) => {
            <$t>::decode(&mut body, version).map_err(malformed)?
        };
    }
    use quipu_protocol::messages as m;
    let response = match api {
        ApiKey::Metadata => encode(
            correlation_id,
            api,
            version,
            &metadata::handle(&broker, decode!(m::MetadataRequest), version).await,
        )?,
        ApiKey::FindCoordinator => encode(correlation_id, api, version, &{
            let request = decode!(m::FindCoordinatorRequest);
            // The first one creates `__consumer_offsets` (directories, a sync): off the
            // runtime, like every topic change.
            if broker
                .metadata
                .topic(crate::group::offsets_topic::TOPIC)
                .is_some()
            {
                group_membership::find_coordinator(&broker, request, version)
            } else {
                blocking(&broker, move |b| {
                    group_membership::find_coordinator(b, request, version)
                })
                .await
            }
        })?,
        ApiKey::JoinGroup => {
            let request = decode!(m::JoinGroupRequest);
            let response = group_membership::join_group(
                &broker,
                request,
                version,
                header.client_id.as_deref(),
                peer,
            )
            .await;
            encode(correlation_id, api, version, &response)?
        }
        ApiKey::SyncGroup => {
            let request = decode!(m::SyncGroupRequest);
            let response = group_membership::sync_group(&broker, request).await;
            encode(correlation_id, api, version, &response)?
        }
        ApiKey::Heartbeat => encode(
            correlation_id,
            api,
            version,
            &group_membership::heartbeat(&broker, decode!(m::HeartbeatRequest)),
        )?,
        ApiKey::LeaveGroup => encode(
            correlation_id,
            api,
            version,
            &group_membership::leave_group(&broker, decode!(m::LeaveGroupRequest), version),
        )?,
        ApiKey::OffsetCommit => encode(
            correlation_id,
            api,
            version,
            &group_offsets::offset_commit(&broker, decode!(m::OffsetCommitRequest), version),
        )?,
        ApiKey::OffsetFetch => encode(
            correlation_id,
            api,
            version,
            &group_offsets::offset_fetch(&broker, decode!(m::OffsetFetchRequest), version),
        )?,
        ApiKey::OffsetDelete => encode(
            correlation_id,
            api,
            version,
            &group_offsets::offset_delete(&broker, decode!(m::OffsetDeleteRequest)),
        )?,
        ApiKey::ListGroups => encode(
            correlation_id,
            api,
            version,
            &group_admin::list_groups(&broker, decode!(m::ListGroupsRequest)),
        )?,
        ApiKey::DescribeGroups => encode(
            correlation_id,
            api,
            version,
            &group_admin::describe_groups(&broker, decode!(m::DescribeGroupsRequest), version),
        )?,
        ApiKey::DeleteGroups => encode(
            correlation_id,
            api,
            version,
            &group_admin::delete_groups(&broker, decode!(m::DeleteGroupsRequest)),
        )?,
        ApiKey::InitProducerId => encode(
            correlation_id,
            api,
            version,
            &init_producer_id::handle(&broker, decode!(m::InitProducerIdRequest)),
        )?,
        ApiKey::Produce => {
            match produce::handle(&broker, decode!(m::ProduceRequest), version, append_turn).await {
                Some(r) => encode(correlation_id, api, version, &r)?,
                None => return Ok(Handled::NoResponse),
            }
        }
        ApiKey::Fetch => {
            fetch::handle(&broker, decode!(m::FetchRequest), version, correlation_id).await
        }
        ApiKey::ApiVersions => encode(
            correlation_id,
            api,
            version,
            &api_versions::handle(decode!(m::ApiVersionsRequest)),
        )?,
        ApiKey::ListOffsets => encode(
            correlation_id,
            api,
            version,
            &list_offsets::handle(&broker, decode!(m::ListOffsetsRequest), version).await,
        )?,
        ApiKey::CreateTopics => encode(correlation_id, api, version, &{
            let request = decode!(m::CreateTopicsRequest);
            blocking(&broker, move |b| create_topics::handle(b, request, version)).await
        })?,
        ApiKey::DeleteTopics => encode(correlation_id, api, version, &{
            let request = decode!(m::DeleteTopicsRequest);
            blocking(&broker, move |b| delete_topics::handle(b, request, version)).await
        })?,
        ApiKey::CreatePartitions => encode(correlation_id, api, version, &{
            let request = decode!(m::CreatePartitionsRequest);
            blocking(&broker, move |b| create_partitions::handle(b, request)).await
        })?,
        ApiKey::OffsetForLeaderEpoch => encode(
            correlation_id,
            api,
            version,
            &offset_for_leader_epoch::handle(&broker, decode!(m::OffsetForLeaderEpochRequest)),
        )?,
        ApiKey::AlterConfigs => encode(correlation_id, api, version, &{
            let request = decode!(m::AlterConfigsRequest);
            blocking(&broker, move |b| alter_configs::handle_alter(b, request)).await
        })?,
        ApiKey::IncrementalAlterConfigs => encode(correlation_id, api, version, &{
            let request = decode!(m::IncrementalAlterConfigsRequest);
            blocking(&broker, move |b| {
                alter_configs::handle_incremental(b, request)
            })
            .await
        })?,
        ApiKey::DeleteRecords => encode(correlation_id, api, version, &{
            let request = decode!(m::DeleteRecordsRequest);
            blocking(&broker, move |b| delete_records::handle(b, request)).await
        })?,
        ApiKey::DescribeConfigs => encode(
            correlation_id,
            api,
            version,
            &describe_configs::handle(&broker, decode!(m::DescribeConfigsRequest), version),
        )?,
        ApiKey::DescribeCluster => encode(
            correlation_id,
            api,
            version,
            &describe_cluster::handle(&broker, decode!(m::DescribeClusterRequest)),
        )?,
        _ => return Err(RequestError::UnknownApi(api as i16)),
    };
    Ok(Handled::Response(response))
}

/// Runs a handler that changes metadata or storage (it makes and removes directories and
/// fsyncs: seconds for a topic of thousands of partitions) on a blocking thread, so that the
/// network runtime keeps serving every other request meanwhile.
async fn blocking<R: Send + 'static>(
    broker: &Arc<Broker>,
    work: impl FnOnce(&Broker) -> R + Send + 'static,
) -> R {
    let shared = broker.clone();
    match broker.off_runtime(move || work(&shared)).await {
        Ok(r) => r,
        // A handler bug: the connection's task ends as if the handler had panicked in place.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down, and this request is never answered.
        Err(_) => std::future::pending().await,
    }
}

/// Encodes a response frame: size, header (of the version this API and version use), body.
/// Fails only when a handler set a field the version cannot carry: a bug, reported, not a panic.
pub fn encode<R: Encodable>(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: &R,
) -> Result<Vec<Bytes>, RequestError> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let header_version = api.response_header_version(version);
    let failed = |e: anyhow::Error| RequestError::Encode {
        api,
        version,
        reason: e.to_string(),
    };
    header.encode(&mut buf, header_version).map_err(failed)?;
    body.encode(&mut buf, version).map_err(failed)?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(vec![buf.freeze()])
}

/// The one place broker errors become Kafka error codes.
pub fn append_error_code(e: &AppendError) -> ResponseError {
    match e {
        AppendError::Corrupt(_) => ResponseError::CorruptMessage,
        AppendError::InvalidRecord(_) | AppendError::RecordsRefused(_) => {
            ResponseError::InvalidRecord
        }
        AppendError::TimestampsRefused(_) => ResponseError::InvalidTimestamp,
        AppendError::TooLarge { .. } => ResponseError::MessageTooLarge,
        AppendError::Sequence(quipu_storage::log::producer_state::SequenceError::OutOfOrder(_)) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        AppendError::Sequence(quipu_storage::log::producer_state::SequenceError::InvalidEpoch(
            _,
        )) => ResponseError::InvalidProducerEpoch,
        AppendError::Io(_) => ResponseError::KafkaStorageError,
    }
}

pub fn metadata_error_code(e: &MetadataError) -> ResponseError {
    match e {
        MetadataError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        MetadataError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        MetadataError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        MetadataError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        MetadataError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        MetadataError::InvalidConfig(_) => ResponseError::InvalidConfig,
        MetadataError::Io(_) | MetadataError::Log(_) | MetadataError::Damaged(_) => {
            ResponseError::KafkaStorageError
        }
    }
}
