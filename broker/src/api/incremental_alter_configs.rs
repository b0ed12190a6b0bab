//! IncrementalAlterConfigs: sets, deletes, appends to or subtracts from single settings of a
//! topic, recorded and applied as AlterConfigs is. Broker settings are static: refused, except
//! the deletion of the replication throttles, which are never set.

use std::collections::BTreeMap;

use quipu_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use quipu_protocol::messages::{
    incremental_alter_configs_response, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use quipu_protocol::ResponseError;

use super::alter_configs::{apply, error_of, refuse_non_topic};
use crate::request_context::RequestContext;

const OP_SET: i8 = 0;

const OP_DELETE: i8 = 1;

const OP_APPEND: i8 = 2;

const OP_SUBTRACT: i8 = 3;

pub fn handle_incremental(
    ctx: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let outcome = if clears_unset_throttles(resource.resource_type, &resource.configs) {
            Ok(())
        } else {
            refuse_non_topic(resource.resource_type)
                .and_then(|()| changed_overrides(ctx, &name, &resource.configs))
                .and_then(|overrides| apply(ctx, &name, overrides, request.validate_only))
        };
        let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        r.resource_type = resource.resource_type;
        r.resource_name = resource.resource_name;
        (r.error_code, r.error_message) = error_of(outcome);
        response.responses.push(r);
    }
    response
}

/// Kafka's dynamic broker throttles, which `kafka-reassign-partitions --verify` deletes when a
/// move is done. Quipu has no replication throttle: they are never set.
const THROTTLE_KEYS: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    "replica.alter.log.dirs.io.max.bytes.per.second",
];

/// The broker resource's deletion of throttles that are not set: nothing to do, as Kafka
/// answers it.
fn clears_unset_throttles(resource_type: i8, configs: &[AlterableConfig]) -> bool {
    const RESOURCE_BROKER: i8 = 4;
    resource_type == RESOURCE_BROKER
        && !configs.is_empty()
        && configs
            .iter()
            .all(|c| c.config_operation == OP_DELETE && THROTTLE_KEYS.contains(&c.name.as_str()))
}

/// Topic `name`'s overrides with `configs`' operations applied in order.
fn changed_overrides(
    ctx: &RequestContext,
    name: &str,
    configs: &[AlterableConfig],
) -> Result<BTreeMap<String, String>, (ResponseError, String)> {
    let topic = ctx.metadata.topic(name).ok_or((
        ResponseError::UnknownTopicOrPartition,
        format!("topic '{name}' does not exist"),
    ))?;
    let mut overrides = topic.overrides.clone();
    for c in configs {
        let key = c.name.to_string();
        // APPEND and SUBTRACT work on list settings, as comma-separated values.
        let current = overrides
            .get(&key)
            .cloned()
            .or_else(|| topic.config.value(&key).map(str::to_string))
            .unwrap_or_default();
        match (c.config_operation, c.value.as_ref().map(|v| v.to_string())) {
            (OP_SET, Some(v)) => overrides.insert(key, v),
            (OP_DELETE, _) => overrides.remove(&key),
            (OP_APPEND, Some(v)) => overrides.insert(key, appended(&current, &v)),
            (OP_SUBTRACT, Some(v)) => overrides.insert(key, subtracted(&current, &v)),
            (op, _) => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("config operation {op} needs a value, or is unknown"),
                ))
            }
        };
    }
    Ok(overrides)
}

fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').filter(|s| !s.is_empty())
}

/// The list `current` with the items of `more` it lacks added at its end.
fn appended(current: &str, more: &str) -> String {
    let mut out: Vec<&str> = items(current).collect();
    for item in items(more) {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out.join(",")
}

/// The list `current` without the items of `less`.
fn subtracted(current: &str, less: &str) -> String {
    let remove: Vec<&str> = less.split(',').collect();
    let kept: Vec<&str> = items(current).filter(|s| !remove.contains(s)).collect();
    kept.join(",")
}

super::handler::api!(
    IncrementalAlterConfigs,
    0..=1,
    IncrementalAlterConfigsRequest,
    |ctx, request, meta| {
        meta.reply(&super::blocking(&ctx, move |b| handle_incremental(b, request)).await)
    }
);
