//! AlterPartitionReassignments (45): moves partitions' replicas to other brokers (or cancels a
//! move), as `kafka-reassign-partitions --execute` asks; the new replicas catch up before the
//! old ones leave (see `reassignment`).

use quipu_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use quipu_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use quipu_protocol::StrBytes;

use super::alter_configs::error_of;
use super::metadata_error_code;
use crate::request_context::RequestContext;

pub fn handle(
    ctx: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let mut response = AlterPartitionReassignmentsResponse::default();
    // v0 has no such flag: the factor may change, as it always could.
    let allow_rf_change = version < 1 || request.allow_replication_factor_change;
    response.allow_replication_factor_change = allow_rf_change;
    let entries = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let target = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
                    (p.partition_index, target)
                })
                .collect();
            (t.name.0.to_string(), partitions)
        })
        .collect();
    match ctx.controller.alter_reassignments(entries, allow_rf_change) {
        Ok(outcomes) => {
            for ((_, partitions), t) in outcomes.into_iter().zip(&request.topics) {
                let mut r = ReassignableTopicResponse::default();
                r.name = t.name.clone();
                for (index, outcome) in partitions {
                    let mut p = ReassignablePartitionResponse::default();
                    p.partition_index = index;
                    (p.error_code, p.error_message) = error_of(outcome);
                    r.partitions.push(p);
                }
                response.responses.push(r);
            }
        }
        Err(e) => {
            response.error_code = metadata_error_code(&e).code();
            response.error_message = Some(StrBytes::from_string(e.to_string()));
        }
    }
    response
}

super::handler::api!(
    AlterPartitionReassignments,
    0..=1,
    AlterPartitionReassignmentsRequest,
    |ctx, request, meta| {
        let version = meta.version;
        meta.reply(&super::blocking(&ctx, move |b| handle(b, request, version)).await)
    }
);
