//! ElectLeaders (43): preferred or unclean leader elections, as `kafka-leader-election` asks
//! them, made by the controller (see `controller::partition_admin`).

use quipu_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use quipu_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use quipu_protocol::{ResponseError, StrBytes};

use super::alter_configs::error_of;
use super::metadata_error_code;
use crate::controller::ElectionType;
use crate::request_context::RequestContext;

pub fn handle(
    ctx: &RequestContext,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let mut response = ElectLeadersResponse::default();
    let kind = match request.election_type {
        0 => ElectionType::Preferred,
        1 => ElectionType::Unclean,
        _ => {
            response.error_code = ResponseError::InvalidRequest.code();
            return response;
        }
    };
    let named = request.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    match ctx.controller.elect_leaders(kind, named) {
        Ok(outcomes) => {
            for (topic, partitions) in outcomes {
                let mut r = ReplicaElectionResult::default();
                r.topic = TopicName(StrBytes::from_string(topic));
                for (index, outcome) in partitions {
                    let mut p = PartitionResult::default();
                    p.partition_id = index;
                    (p.error_code, p.error_message) = error_of(outcome);
                    r.partition_result.push(p);
                }
                response.replica_election_results.push(r);
            }
        }
        // v0 has no top-level error: it is answered with no results, and the failure logged.
        Err(e) if version >= 1 => response.error_code = metadata_error_code(&e).code(),
        Err(e) => tracing::warn!(error = %e, "leader election not committed"),
    }
    response
}

super::handler::api!(
    ElectLeaders,
    0..=2,
    ElectLeadersRequest,
    |ctx, request, meta| {
        let version = meta.version;
        meta.reply(&super::blocking(&ctx, move |b| handle(b, request, version)).await)
    }
);
