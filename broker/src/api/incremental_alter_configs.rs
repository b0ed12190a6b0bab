//! IncrementalAlterConfigs: sets, deletes, appends to or subtracts from single settings of a
//! topic, recorded and applied as AlterConfigs is. Broker settings are static: refused.

use quipu_protocol::messages::{
    incremental_alter_configs_response, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use quipu_protocol::{ResponseError, StrBytes};

use super::alter_configs::{apply, refuse_non_topic};
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
        let outcome = refuse_non_topic(resource.resource_type).and_then(|()| {
            let topic = ctx.metadata.topic(&name).ok_or((
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            ))?;
            let mut overrides = topic.overrides.clone();
            for c in &resource.configs {
                let key = c.name.to_string();
                let value = c.value.as_ref().map(|v| v.to_string());
                // APPEND and SUBTRACT work on list settings, as comma-separated values.
                let current = || {
                    overrides
                        .get(&key)
                        .cloned()
                        .or_else(|| topic.config.value(&key).map(str::to_string))
                        .unwrap_or_default()
                };
                match (c.config_operation, value) {
                    (OP_SET, Some(v)) => {
                        overrides.insert(key, v);
                    }
                    (OP_DELETE, _) => {
                        overrides.remove(&key);
                    }
                    (OP_APPEND, Some(v)) => {
                        let mut items: Vec<String> = current()
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect();
                        for item in v.split(',').filter(|s| !s.is_empty()) {
                            if !items.iter().any(|i| i == item) {
                                items.push(item.to_string());
                            }
                        }
                        overrides.insert(key, items.join(","));
                    }
                    (OP_SUBTRACT, Some(v)) => {
                        let remove: Vec<&str> = v.split(',').collect();
                        let items: Vec<String> = current()
                            .split(',')
                            .filter(|s| !s.is_empty() && !remove.contains(s))
                            .map(str::to_string)
                            .collect();
                        overrides.insert(key, items.join(","));
                    }
                    (op, _) => {
                        return Err((
                            ResponseError::InvalidRequest,
                            format!("config operation {op} needs a value, or is unknown"),
                        ))
                    }
                }
            }
            apply(ctx, &name, overrides, request.validate_only)
        });
        let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        r.resource_type = resource.resource_type;
        r.resource_name = resource.resource_name;
        if let Err((code, message)) = outcome {
            r.error_code = code.code();
            r.error_message = Some(StrBytes::from_string(message));
        }
        response.responses.push(r);
    }
    response
}

super::handler::api!(
    IncrementalAlterConfigs,
    0..=1,
    IncrementalAlterConfigsRequest,
    |ctx, request, meta| {
        meta.reply(&super::blocking(&ctx, move |b| handle_incremental(b, request)).await)
    }
);
