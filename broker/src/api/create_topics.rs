//! CreateTopics: creates topics (or, with `validate_only`, checks that they could be created),
//! placed by the controller or as the request's manual assignment says.

use std::collections::BTreeMap;

use quipu_config::topic::TOPIC_CONFIG_KEYS;
use quipu_protocol::messages::create_topics_request::CreatableTopic;
use quipu_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use quipu_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use quipu_protocol::{ResponseError, StrBytes};

use super::metadata_error_code;
use crate::controller::Placement;
use crate::metadata::MetadataError;
use crate::request_context::RequestContext;

/// Kafka's config sources, as DescribeConfigs and CreateTopics report them.
pub const SOURCE_DYNAMIC_TOPIC_CONFIG: i8 = 1;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

pub fn handle(
    ctx: &RequestContext,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    let mut seen = std::collections::HashSet::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        r.num_partitions = -1;
        r.replication_factor = -1;
        // Kafka answers a created topic with a null message.
        r.error_message = None;
        let result = create_one(ctx, &t, request.validate_only, &mut seen);
        match result {
            Ok((id, partitions, replication_factor, overrides)) => {
                if version >= 7 {
                    r.topic_id = id;
                }
                if version >= 5 {
                    r.num_partitions = partitions;
                    r.replication_factor = replication_factor;
                    r.configs = Some(configs_of(ctx, &overrides));
                }
            }
            Err((code, message)) => {
                crate::warn_limited!(topic = ?name, error = %message, "create topic refused");
                r.error_code = code.code();
                r.error_message = Some(StrBytes::from_string(message));
                if version >= 5 {
                    r.topic_config_error_code = 0;
                }
            }
        }
        response.topics.push(r);
    }
    response
}

/// A created (or, validating only, creatable) topic: its id, partition count, replication
/// factor and overrides.
type Created = (uuid::Uuid, i32, i16, BTreeMap<String, String>);

fn create_one(
    ctx: &RequestContext,
    t: &CreatableTopic,
    validate_only: bool,
    seen: &mut std::collections::HashSet<String>,
) -> Result<Created, (ResponseError, String)> {
    let name = t.name.0.to_string();
    if !seen.insert(name.clone()) {
        return Err((
            ResponseError::InvalidRequest,
            format!("topic '{name}' appears more than once in the request"),
        ));
    }
    let mut overrides = BTreeMap::new();
    for c in &t.configs {
        match &c.value {
            Some(v) => {
                overrides.insert(c.name.to_string(), v.to_string());
            }
            None => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("null value for config {}", c.name.as_str()),
                ))
            }
        }
    }
    let placement = placement_of(t)?;
    let err = |e: MetadataError| (metadata_error_code(&e), e.to_string());
    let (partitions, _) = ctx
        .controller
        .check_new_topic(&name, &placement, &overrides)
        .map_err(err)?;
    let replication_factor = match &placement {
        Placement::Manual(assignment) => assignment[0].len() as i16,
        Placement::Auto {
            replication_factor: -1,
            ..
        } => ctx.config.default_replication_factor,
        Placement::Auto {
            replication_factor, ..
        } => *replication_factor,
    };
    if validate_only {
        return Ok((uuid::Uuid::nil(), partitions, replication_factor, overrides));
    }
    let topic = ctx
        .controller
        .create_topic(&name, &placement, overrides.clone())
        .map_err(err)?;
    Ok((topic.id, partitions, replication_factor, overrides))
}

/// The entry's placement: a count and factor, or the replicas of each partition (indexes 0..n
/// in any order, with the count and factor left at -1, as Kafka requires).
fn placement_of(t: &CreatableTopic) -> Result<Placement, (ResponseError, String)> {
    if t.assignments.is_empty() {
        return Ok(Placement::auto(t.num_partitions, t.replication_factor));
    }
    if t.num_partitions != -1 || t.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "A manual partition assignment was specified, but numPartitions or replicationFactor was not set to -1.".into(),
        ));
    }
    // Keyed by partition index, as Kafka's controller takes them: any order, each once, 0..n.
    let mut by_index = BTreeMap::new();
    for a in &t.assignments {
        let replicas: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
        if by_index.insert(a.partition_index, replicas).is_some() {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "Found multiple manual partition assignments for partition {}",
                    a.partition_index
                ),
            ));
        }
    }
    if by_index.keys().copied().ne(0..by_index.len() as i32) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    let assignment = by_index.into_values().collect();
    Ok(Placement::Manual(assignment))
}

fn configs_of(
    ctx: &RequestContext,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    let effective =
        quipu_config::topic::TopicConfig::with_overrides(ctx.metadata.broker_config(), overrides)
            .expect("checked at creation");
    TOPIC_CONFIG_KEYS
        .iter()
        .map(|k| {
            let mut c = CreatableTopicConfigs::default();
            c.name = StrBytes::from_static_str(k.name);
            c.value = effective
                .value(k.name)
                .map(|v| StrBytes::from_string(v.to_string()));
            c.config_source = if overrides.contains_key(k.name) {
                SOURCE_DYNAMIC_TOPIC_CONFIG
            } else {
                SOURCE_DEFAULT_CONFIG
            };
            c
        })
        .collect()
}

super::handler::api!(
    CreateTopics,
    2..=7,
    CreateTopicsRequest,
    |ctx, request, meta| {
        let version = meta.version;
        meta.reply(&super::blocking(&ctx, move |b| handle(b, request, version)).await)
    }
);
