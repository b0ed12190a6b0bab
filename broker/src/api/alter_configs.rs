//! AlterConfigs: replaces a topic's overrides. Changes are recorded in the metadata log and
//! applied to the partitions at once. Broker settings are static in Quipu: changing them is
//! refused.

use std::collections::BTreeMap;

use quipu_protocol::messages::{alter_configs_response, AlterConfigsRequest, AlterConfigsResponse};
use quipu_protocol::{ResponseError, StrBytes};

use super::metadata_error_code;
use crate::request_context::RequestContext;

const RESOURCE_TOPIC: i8 = 2;

const RESOURCE_BROKER: i8 = 4;

pub(super) type Outcome = Result<(), (ResponseError, String)>;

pub(super) fn refuse_non_topic(resource_type: i8) -> Outcome {
    match resource_type {
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER => Err((
            ResponseError::InvalidRequest,
            "broker settings are static in Quipu: change them in the configuration and restart"
                .into(),
        )),
        other => Err((
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported"),
        )),
    }
}

/// A resource's error code and message, as both AlterConfigs responses carry them.
pub(super) fn error_of(outcome: Outcome) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((code, message)) => (code.code(), Some(StrBytes::from_string(message))),
    }
}

pub(super) fn apply(
    ctx: &RequestContext,
    name: &str,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Outcome {
    ctx.controller
        .set_topic_overrides(name, overrides, validate_only)
        .map_err(|e| (metadata_error_code(&e), e.to_string()))
}

pub fn handle_alter(ctx: &RequestContext, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let outcome = refuse_non_topic(resource.resource_type).and_then(|()| {
            let mut overrides = BTreeMap::new();
            for c in &resource.configs {
                // AlterConfigs replaces every override: a null value leaves the setting at its default.
                if let Some(v) = &c.value {
                    overrides.insert(c.name.to_string(), v.to_string());
                }
            }
            apply(ctx, &name, overrides, request.validate_only)
        });
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
        r.resource_type = resource.resource_type;
        r.resource_name = resource.resource_name;
        (r.error_code, r.error_message) = error_of(outcome);
        response.responses.push(r);
    }
    response
}

super::handler::api!(
    AlterConfigs,
    0..=2,
    AlterConfigsRequest,
    |ctx, request, meta| {
        meta.reply(&super::blocking(&ctx, move |b| handle_alter(b, request)).await)
    }
);
