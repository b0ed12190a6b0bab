//! DescribeConfigs: a topic's effective settings with their sources, and the broker's settings.

use quipu_config::topic::TOPIC_CONFIG_KEYS;
use quipu_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use quipu_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use quipu_protocol::{ResponseError, StrBytes};

use super::create_topics::{SOURCE_DEFAULT_CONFIG, SOURCE_DYNAMIC_TOPIC_CONFIG};
use crate::request_context::RequestContext;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;

/// The group configs Kafka 4.0 defines (GroupConfig, KIP-848 and KIP-932), with their defaults
/// and types. They govern the consumer and share group protocols, which Quipu does not serve
/// yet, so no group can override them: each is reported at its default.
const GROUP_CONFIGS: &[(&str, &str, i8, &str)] = &[
    (
        "consumer.session.timeout.ms",
        "45000",
        TYPE_INT,
        "The timeout to detect client failures when using the consumer group protocol.",
    ),
    (
        "consumer.heartbeat.interval.ms",
        "5000",
        TYPE_INT,
        "The heartbeat interval given to the members of a consumer group.",
    ),
    (
        "share.session.timeout.ms",
        "45000",
        TYPE_INT,
        "The timeout to detect client failures when using the share group protocol.",
    ),
    (
        "share.heartbeat.interval.ms",
        "5000",
        TYPE_INT,
        "The heartbeat interval given to the members of a share group.",
    ),
    (
        "share.record.lock.duration.ms",
        "30000",
        TYPE_INT,
        "The record acquisition lock duration in milliseconds for share groups.",
    ),
    (
        "share.auto.offset.reset",
        "latest",
        TYPE_STRING,
        "The strategy to initialize the share-partition start offset.",
    ),
];

/// What a request asks of every setting it describes.
struct Asked {
    synonyms: bool,
    documentation: bool,
    version: i16,
}

type Described = Result<Vec<DescribeConfigsResourceResult>, (ResponseError, String)>;

pub fn handle(
    ctx: &RequestContext,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let asked = Asked {
        synonyms: request.include_synonyms,
        documentation: request.include_documentation,
        version,
    };
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = resource.resource_type;
        r.resource_name = resource.resource_name.clone();
        r.error_message = None;
        // Null or empty asks for every setting, as in Kafka.
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
        };
        let name = resource.resource_name.as_str();
        let described = match resource.resource_type {
            RESOURCE_TOPIC => describe_topic(ctx, name, &wanted, &asked),
            RESOURCE_BROKER => describe_broker(ctx, name, &wanted),
            RESOURCE_GROUP => describe_group(name, &wanted, &asked),
            other => Err((
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported"),
            )),
        };
        match described {
            Ok(configs) => r.configs = configs,
            Err((code, message)) => {
                r.error_code = code.code();
                r.error_message = Some(StrBytes::from_string(message));
            }
        }
        response.results.push(r);
    }
    response
}

/// A topic's settings: each Kafka topic config, overridden or from the broker's defaults.
fn describe_topic(
    ctx: &RequestContext,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
    asked: &Asked,
) -> Described {
    let topic = ctx.metadata.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        )
    })?;
    let defaults =
        quipu_config::topic::TopicConfig::defaults_from(&ctx.config).expect("validated at start");
    let mut configs = Vec::new();
    for key in TOPIC_CONFIG_KEYS.iter().filter(|k| wanted(k.name)) {
        let overridden = topic.overrides.get(key.name);
        let mut c = DescribeConfigsResourceResult::default();
        c.name = StrBytes::from_static_str(key.name);
        c.value = topic
            .config
            .value(key.name)
            .map(|v| StrBytes::from_string(v.to_string()));
        c.config_source = if overridden.is_some() {
            SOURCE_DYNAMIC_TOPIC_CONFIG
        } else {
            SOURCE_DEFAULT_CONFIG
        };
        if asked.synonyms {
            if let Some(v) = overridden {
                c.synonyms
                    .push(synonym(key.name, v, SOURCE_DYNAMIC_TOPIC_CONFIG));
            }
            if let Some(v) = defaults.value(key.name) {
                let name = if key.broker_synonym.is_empty() {
                    key.name
                } else {
                    key.broker_synonym
                };
                c.synonyms.push(synonym(name, v, SOURCE_DEFAULT_CONFIG));
            }
        }
        typed(&mut c, key.config_type as i8, key.documentation, asked);
        configs.push(c);
    }
    Ok(configs)
}

/// This broker's settings (static: read-only), for its own id or an empty name.
fn describe_broker(ctx: &RequestContext, name: &str, wanted: &dyn Fn(&str) -> bool) -> Described {
    if name != ctx.config.node_id.to_string() && !name.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            format!("unexpected broker id, expected {}", ctx.config.node_id),
        ));
    }
    let configs = ctx
        .config
        .entries()
        .into_iter()
        .filter(|(n, _)| wanted(n))
        .map(|(name, value)| {
            let mut c = DescribeConfigsResourceResult::default();
            c.name = StrBytes::from_static_str(name);
            c.value = Some(StrBytes::from_string(value));
            c.read_only = true;
            c.config_source = SOURCE_STATIC_BROKER_CONFIG;
            c
        })
        .collect();
    Ok(configs)
}

/// A group's settings: as in Kafka, any group name is answered, whether or not it exists.
fn describe_group(name: &str, wanted: &dyn Fn(&str) -> bool, asked: &Asked) -> Described {
    if name.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            "Group name must not be empty".to_string(),
        ));
    }
    let configs = GROUP_CONFIGS
        .iter()
        .filter(|(n, ..)| wanted(n))
        .map(|(name, value, config_type, doc)| {
            let mut c = DescribeConfigsResourceResult::default();
            c.name = StrBytes::from_static_str(name);
            c.value = Some(StrBytes::from_static_str(value));
            c.config_source = SOURCE_DEFAULT_CONFIG;
            if asked.synonyms {
                c.synonyms.push(synonym(name, value, SOURCE_DEFAULT_CONFIG));
            }
            typed(&mut c, *config_type, doc, asked);
            c
        })
        .collect();
    Ok(configs)
}

/// From v3: the setting's type and, when asked, its documentation.
fn typed(c: &mut DescribeConfigsResourceResult, config_type: i8, doc: &'static str, asked: &Asked) {
    if asked.version >= 3 {
        c.config_type = config_type;
        if asked.documentation {
            c.documentation = Some(StrBytes::from_static_str(doc));
        }
    }
}

fn synonym(name: &'static str, value: &str, source: i8) -> DescribeConfigsSynonym {
    let mut s = DescribeConfigsSynonym::default();
    s.name = StrBytes::from_static_str(name);
    s.value = Some(StrBytes::from_string(value.to_string()));
    s.source = source;
    s
}

super::handler::api!(
    DescribeConfigs,
    1..=4,
    DescribeConfigsRequest,
    |ctx, request, meta| { meta.reply(&handle(&ctx, request, meta.version)) }
);
