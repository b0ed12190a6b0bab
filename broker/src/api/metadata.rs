//! Metadata: brokers, topics and partition leaders; creates topics on demand when allowed.

use std::collections::BTreeMap;
use std::sync::Arc;

use quipu_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use quipu_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use quipu_protocol::{ResponseError, StrBytes};

use super::authorized_operations as ops;
use super::metadata_error_code;
use crate::image::MetadataImage;
use crate::metadata::{validate_topic_name, Topic};
use crate::request_context::RequestContext;

pub async fn handle(
    ctx: &Arc<RequestContext>,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut response = cluster(ctx, &request, version);
    let topic_ops = ops::when(
        version >= 8 && request.include_topic_authorized_operations,
        ops::TOPIC,
    );
    // v0: an empty list means every topic; v1+: null means every topic.
    let all = match &request.topics {
        None => true,
        Some(t) => version == 0 && t.is_empty(),
    };
    if all {
        let image = ctx.metadata.image();
        for topic in ctx.metadata.topics() {
            response
                .topics
                .push(describe(&image, &topic, version, topic_ops));
        }
        return response;
    }
    // Before v4 there is no flag and Kafka creates topics whenever the broker allows it.
    let may_create =
        ctx.config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    // Deduplicated, in name order, as Kafka answers.
    let mut wanted: BTreeMap<String, Option<uuid::Uuid>> = BTreeMap::new();
    let mut by_id = Vec::new();
    for t in request.topics.unwrap_or_default() {
        match t.name {
            Some(name) => {
                wanted.insert(name.0.to_string(), None);
            }
            None => by_id.push(t.topic_id),
        }
    }
    for (name, _) in wanted {
        response
            .topics
            .push(match named(ctx, &name, may_create).await {
                Ok(t) => describe(&ctx.metadata.image(), &t, version, topic_ops),
                Err(code) => error_topic(Some(name), uuid::Uuid::nil(), code, topic_ops),
            });
    }
    for id in by_id {
        response.topics.push(match ctx.metadata.topic_by_id(id) {
            Some(t) => describe(&ctx.metadata.image(), &t, version, topic_ops),
            None => error_topic(None, id, ResponseError::UnknownTopicId, topic_ops),
        });
    }
    response
}

/// The response's cluster part: the brokers, the cluster id, the controller, and the cluster's
/// authorized operations where the version carries them.
fn cluster(ctx: &RequestContext, request: &MetadataRequest, version: i16) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    // As Kafka: the registered brokers that are not fenced.
    for registered in ctx.metadata.image().brokers().filter(|b| !b.fenced) {
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(registered.node_id);
        b.host = StrBytes::from_string(registered.host.clone());
        b.port = registered.port;
        if version >= 1 {
            b.rack = registered.rack.clone().map(StrBytes::from_string);
        }
        response.brokers.push(b);
    }
    response.cluster_id = Some(StrBytes::from_string(ctx.identity.cluster_id.clone()));
    if version >= 1 {
        response.controller_id = BrokerId(ctx.controller_id());
    }
    // Kafka fills the cluster set only from v8 to v10 (v11 moved it to DescribeCluster).
    response.cluster_authorized_operations = ops::when(
        (8..=10).contains(&version) && request.include_cluster_authorized_operations,
        ops::CLUSTER,
    );
    response
}

/// A topic asked for by name, created when it is missing and `may_create`.
async fn named(
    ctx: &Arc<RequestContext>,
    name: &str,
    may_create: bool,
) -> Result<Arc<Topic>, ResponseError> {
    if let Some(t) = ctx.metadata.topic(name) {
        return Ok(t);
    }
    if !may_create {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    validate_topic_name(name).map_err(|e| metadata_error_code(&e))?;
    // Creation makes directories and fsyncs, and may wait behind another topic change: off
    // the runtime.
    match create_automatically(ctx, name).await {
        Ok(t) => Ok(t),
        // Another request created it first.
        Err(crate::metadata::MetadataError::TopicExists(_)) => ctx
            .metadata
            .topic(name)
            .ok_or(ResponseError::UnknownTopicOrPartition),
        Err(e) => {
            tracing::warn!(topic = %name, error = %e, "automatic topic creation failed");
            Err(metadata_error_code(&e))
        }
    }
}

async fn create_automatically(
    ctx: &Arc<RequestContext>,
    name: &str,
) -> Result<Arc<Topic>, crate::metadata::MetadataError> {
    let name = name.to_string();
    super::blocking(ctx, move |b| {
        let placement = crate::controller::Placement::auto(-1, -1);
        b.controller
            .create_topic(&name, &placement, BTreeMap::new())
    })
    .await
}

fn error_topic(
    name: Option<String>,
    id: uuid::Uuid,
    code: ResponseError,
    topic_ops: i32,
) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = code.code();
    t.name = name.map(|n| TopicName(StrBytes::from_string(n)));
    t.topic_id = id;
    t.topic_authorized_operations = topic_ops;
    t
}

/// A topic's entry, with each partition's leader, epoch and replicas as the image has them.
fn describe(
    image: &MetadataImage,
    topic: &Arc<Topic>,
    version: i16,
    topic_ops: i32,
) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.name.to_string())));
    if version >= 10 {
        t.topic_id = topic.id;
    }
    t.is_internal = version >= 1 && crate::metadata::is_internal(&topic.name);
    t.topic_authorized_operations = topic_ops;
    let partitions = image
        .topic(&topic.name)
        .filter(|t| t.id == topic.id)
        .map(|t| t.partitions.as_slice())
        .unwrap_or_default();
    // A replica on a fenced (or unregistered) broker is offline, as Kafka lists it.
    let alive = |b: i32| image.broker(b).is_some_and(|r| !r.fenced);
    for (index, p) in partitions.iter().enumerate() {
        let mut mp = MetadataResponsePartition::default();
        mp.partition_index = index as i32;
        mp.leader_id = BrokerId(p.leader);
        if !alive(p.leader) {
            // No leader (all in-sync replicas gone) or one not reachable: clients wait.
            mp.error_code = ResponseError::LeaderNotAvailable.code();
            mp.leader_id = BrokerId(-1);
        }
        if version >= 7 {
            mp.leader_epoch = p.leader_epoch;
        }
        mp.replica_nodes = p.replicas.iter().copied().map(BrokerId).collect();
        mp.isr_nodes = p.isr.iter().copied().map(BrokerId).collect();
        if version >= 5 {
            let offline = p.replicas.iter().copied().filter(|b| !alive(*b));
            mp.offline_replicas = offline.map(BrokerId).collect();
        }
        t.partitions.push(mp);
    }
    t
}

super::handler::api!(Metadata, 0..=12, MetadataRequest, |ctx, request, meta| {
    meta.reply(&handle(&ctx, request, meta.version).await)
});
