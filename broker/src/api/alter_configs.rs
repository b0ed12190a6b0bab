//! AlterConfigs (replace a topic's overrides) and IncrementalAlterConfigs (set, delete, append to
//! or subtract from single settings). Changes are recorded in the metadata log and applied to the
//! partitions at once. Broker settings are static in Quipu: changing them is refused.

use std::collections::BTreeMap;

use quipu_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use quipu_protocol::{ResponseError, StrBytes};

use super::metadata_error_code;
use crate::broker::Broker;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

type Outcome = Result<(), (ResponseError, String)>;

fn refuse_non_topic(resource_type: i8) -> Outcome {
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

fn apply(
    broker: &Broker,
    name: &str,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Outcome {
    broker
        .controller
        .set_topic_overrides(name, overrides, validate_only)
        .map_err(|e| (metadata_error_code(&e), e.to_string()))
}

pub fn handle_alter(broker: &Broker, request: AlterConfigsRequest) -> AlterConfigsResponse {
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
            apply(broker, &name, overrides, request.validate_only)
        });
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
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

pub fn handle_incremental(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let outcome = refuse_non_topic(resource.resource_type).and_then(|()| {
            let topic = broker.metadata.topic(&name).ok_or((
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
            apply(broker, &name, overrides, request.validate_only)
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
