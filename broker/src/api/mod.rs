//! Request handlers, one module per Kafka API, and the table of versions served.
//!
//! `SUPPORTED_APIS` is what ApiVersions advertises; every version in it is handled. A request for
//! an API or version outside it closes the connection (as Kafka does), except ApiVersions, which is
//! answered with UNSUPPORTED_VERSION in its v0 form so the client can pick a version we serve.

mod alter_configs;
mod alter_partition_reassignments;
mod api_versions;
mod authorized_operations;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_quorum;
mod elect_leaders;
mod fetch;
mod find_coordinator;
pub mod handler;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
pub mod produce;
mod sync_group;

use std::sync::Arc;

use bytes::Bytes;
use quipu_protocol::header::RequestHeader;
use quipu_protocol::messages::ApiKey;
use quipu_protocol::{Decodable, Encodable, ResponseError};

use crate::metadata::MetadataError;
use crate::request_context::RequestContext;
use handler::{Handler, RequestMeta};
use quipu_storage::log::AppendError;

/// The registry: every API served, as its handler type. `SUPPORTED_APIS` (what ApiVersions
/// advertises) and the dispatch are both made from this one list.
macro_rules! registry {
    ($($api:ident),* $(,)?) => {
        /// APIs served, with the lowest and highest version of each.
        pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
            $((<$api::Api as Handler>::KEY, <$api::Api as Handler>::VERSIONS.0, <$api::Api as Handler>::VERSIONS.1)),*
        ];

        /// Runs the handler of `meta.api` on `body`.
        async fn dispatch(
            ctx: Arc<RequestContext>,
            body: Bytes,
            meta: RequestMeta,
        ) -> Result<Handled, RequestError> {
            $(if meta.api == <$api::Api as Handler>::KEY {
                return run::<$api::Api>(ctx, body, meta).await;
            })*
            Err(RequestError::UnknownApi(meta.api as i16))
        }
    };
}

registry![
    produce,
    fetch,
    list_offsets,
    metadata,
    api_versions,
    create_topics,
    delete_topics,
    describe_configs,
    describe_cluster,
    describe_quorum,
    create_partitions,
    delete_records,
    alter_configs,
    incremental_alter_configs,
    offset_for_leader_epoch,
    init_producer_id,
    find_coordinator,
    join_group,
    sync_group,
    heartbeat,
    leave_group,
    offset_commit,
    offset_fetch,
    offset_delete,
    list_groups,
    describe_groups,
    delete_groups,
    elect_leaders,
    alter_partition_reassignments,
    list_partition_reassignments,
    describe_log_dirs,
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

/// Answers one request: the version is checked against the registry, the body against its
/// message's wire shape, then the API's handler runs on the decoded request.
pub async fn handle(
    ctx: Arc<RequestContext>,
    header: RequestHeader,
    body: Bytes,
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
    let meta = RequestMeta {
        api,
        version,
        correlation_id,
        client_id: header.client_id.map(|c| c.to_string()),
        peer,
        append_turn,
    };
    dispatch(ctx, body, meta).await
}

/// Decodes `body` as `H`'s request, after checking every count the decoder will act on
/// (Kafka 4.4's limits), so decoding never reserves memory by a number it has not seen bounded.
async fn run<H: Handler>(
    ctx: Arc<RequestContext>,
    mut body: Bytes,
    meta: RequestMeta,
) -> Result<Handled, RequestError> {
    let malformed = |reason: String| RequestError::Malformed {
        api: meta.api,
        version: meta.version,
        reason,
    };
    quipu_protocol::request_shape::check_request(meta.api, meta.version, &body)
        .map_err(|e| malformed(e.to_string()))?;
    let request =
        H::Request::decode(&mut body, meta.version).map_err(|e| malformed(e.to_string()))?;
    H::handle(ctx, request, meta).await
}

/// Runs a handler that changes metadata or storage (it makes and removes directories and
/// fsyncs: seconds for a topic of thousands of partitions) on a blocking thread, so that the
/// network runtime keeps serving every other request meanwhile.
async fn blocking<R: Send + 'static>(
    ctx: &Arc<RequestContext>,
    work: impl FnOnce(&RequestContext) -> R + Send + 'static,
) -> R {
    let shared = ctx.clone();
    match ctx.off_runtime(move || work(&shared)).await {
        Ok(r) => r,
        // A handler bug: the connection's task ends as if the handler had panicked in place.
        Err(crate::work_pool::WorkError::Panicked(panic)) => std::panic::resume_unwind(panic),
    }
}

/// A response string from text.
pub(super) fn str_bytes(text: &str) -> quipu_protocol::StrBytes {
    quipu_protocol::StrBytes::from_string(text.to_string())
}

/// Encodes a response frame: size, header (of the version this API and version use), body.
/// Fails only when a handler set a field the version cannot carry: a bug, reported, not a panic.
pub fn encode<R: Encodable>(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: &R,
) -> Result<Vec<Bytes>, RequestError> {
    let frame = quipu_protocol::frame::response_frame(correlation_id, api, version, body).map_err(
        |reason| RequestError::Encode {
            api,
            version,
            reason,
        },
    )?;
    Ok(vec![frame.freeze()])
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
        MetadataError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        MetadataError::InvalidConfig(_) => ResponseError::InvalidConfig,
        MetadataError::Io(_) | MetadataError::Log(_) | MetadataError::Damaged(_) => {
            ResponseError::KafkaStorageError
        }
        MetadataError::NotController(_) => ResponseError::NotController,
    }
}

#[cfg(test)]
mod tests;
