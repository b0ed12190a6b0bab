//! CreatePartitions: grows topics to a larger partition count.

use quipu_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use quipu_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use quipu_protocol::{ResponseError, StrBytes};

use super::metadata_error_code;
use crate::request_context::RequestContext;

pub fn handle(ctx: &RequestContext, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    let node = ctx.config.node_id;
    for t in request.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        let name = t.name.0.to_string();
        let bad_assignment = t.assignments.as_ref().is_some_and(|a| {
            a.iter()
                .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node)
        });
        let result = if bad_assignment {
            Err((
                ResponseError::InvalidReplicaAssignment,
                format!("replicas must be exactly [{node}] on a single broker"),
            ))
        } else {
            let check = ctx
                .controller
                .check_new_partitions(&name, t.count)
                .map(|_| ());
            let done = match check {
                Ok(()) if !request.validate_only => {
                    ctx.controller.create_partitions(&name, t.count)
                }
                other => other,
            };
            done.map_err(|e| (metadata_error_code(&e), e.to_string()))
        };
        if let Err((code, message)) = result {
            r.error_code = code.code();
            r.error_message = Some(StrBytes::from_string(message));
        }
        response.results.push(r);
    }
    response
}

super::handler::api!(
    CreatePartitions,
    0..=3,
    CreatePartitionsRequest,
    |ctx, request, meta| { meta.reply(&super::blocking(&ctx, move |b| handle(b, request)).await) }
);
