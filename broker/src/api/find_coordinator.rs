//! FindCoordinator: a group's coordinator is the leader of the `__consumer_offsets` partition
//! that holds the group (the topic is created on first use, as Kafka does). Transactions are not
//! supported: a transaction coordinator is never available, and clients are told so at once.

use quipu_protocol::messages::find_coordinator_response::Coordinator;
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

use super::str_bytes;
use crate::group::offsets_topic::partition_for;
use crate::group::state::COORDINATOR_NOT_AVAILABLE;
use crate::metadata::OFFSETS_TOPIC;
use crate::request_context::RequestContext;

const GROUP_KEY_TYPE: i8 = 0;

/// Kafka's CLUSTER_AUTHORIZATION_FAILED.
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

/// The broker that leads the offsets partition of group `key`, as (id, host, port); otherwise
/// why no coordinator can be named.
fn group_coordinator(ctx: &RequestContext, key: &str) -> Result<(i32, String, i32), String> {
    let topic = ctx
        .groups
        .create_offsets_topic(&ctx.controller)
        .map_err(|e| format!("the group coordinator is not available: {e}"))?;
    let index = partition_for(key, topic.partition_count);
    let image = ctx.metadata.image();
    let leader = image
        .topic(OFFSETS_TOPIC)
        .and_then(|t| t.partitions.get(index as usize))
        .map_or(-1, |p| p.leader);
    // A broker whose image has not caught up since its start does not name itself.
    let stale_self = leader == ctx.config.node_id && !ctx.replicas.is_caught_up();
    match image.broker(leader) {
        Some(b) if !b.fenced && !stale_self => Ok((b.node_id, b.host.clone(), b.port)),
        _ => Err(format!(
            "partition {index} of {OFFSETS_TOPIC} is led by broker {leader}, which is not registered and unfenced"
        )),
    }
}

pub fn find_coordinator(
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let answer = |key: &StrBytes| -> Coordinator {
        let mut c = Coordinator::default();
        c.key = key.clone();
        if request.key_type == GROUP_KEY_TYPE {
            match group_coordinator(ctx, key) {
                Ok((node_id, host, port)) => {
                    c.node_id = BrokerId(node_id);
                    c.host = str_bytes(&host);
                    c.port = port;
                }
                Err(why) => {
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                    c.error_code = COORDINATOR_NOT_AVAILABLE;
                    c.error_message = Some(str_bytes(&why));
                }
            }
        } else {
            // No transaction (or share) coordinator exists: answer with an error clients treat as
            // fatal (librdkafka and the Java producer fail at once and show the message), not
            // with COORDINATOR_NOT_AVAILABLE, which they retry until their timeout.
            c.node_id = BrokerId(-1);
            c.port = -1;
            c.error_code = CLUSTER_AUTHORIZATION_FAILED;
            c.error_message = Some(str_bytes(
                "transactions and share groups are not supported by this broker",
            ));
        }
        c
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request.coordinator_keys.iter().map(answer).collect();
    } else {
        let c = answer(&request.key);
        response.error_code = c.error_code;
        response.error_message = c.error_message;
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    response
}

super::handler::api!(
    FindCoordinator,
    0..=6,
    FindCoordinatorRequest,
    |ctx, request, meta| {
        let version = meta.version;
        // The first one creates `__consumer_offsets` (directories, a sync): off the runtime,
        // like every topic change.
        if ctx
            .metadata
            .topic(crate::group::offsets_topic::TOPIC)
            .is_some()
        {
            meta.reply(&find_coordinator(&ctx, request, version))
        } else {
            meta.reply(&super::blocking(&ctx, move |b| find_coordinator(b, request, version)).await)
        }
    }
);
