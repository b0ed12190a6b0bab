//! ApiVersions: the APIs and versions this broker serves.

use bytes::Bytes;
use quipu_protocol::messages::api_versions_response::ApiVersion;
use quipu_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use quipu_protocol::ResponseError;

use super::{encode, SUPPORTED_APIS};

fn response(error: Option<ResponseError>) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error.map_or(0, |e| e.code());
    r.api_keys = SUPPORTED_APIS
        .iter()
        .map(|(k, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = *min;
            v.max_version = *max;
            v
        })
        .collect();
    r
}

pub fn handle(_request: ApiVersionsRequest) -> ApiVersionsResponse {
    response(None)
}

/// Kafka's answer to an ApiVersions version it lacks: UNSUPPORTED_VERSION with the list, in v0.
pub fn unsupported_version(correlation_id: i32) -> Result<Vec<Bytes>, super::RequestError> {
    encode(
        correlation_id,
        ApiKey::ApiVersions,
        0,
        &response(Some(ResponseError::UnsupportedVersion)),
    )
}

super::handler::api!(
    ApiVersions,
    0..=3,
    ApiVersionsRequest,
    |_broker, request, meta| { meta.reply(&handle(request)) }
);
