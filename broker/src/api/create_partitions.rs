//! CreatePartitions: grows topics to a larger partition count, the new partitions placed by the
//! controller or as the request's assignments say.

use quipu_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use quipu_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use quipu_protocol::StrBytes;

use super::metadata_error_code;
use crate::request_context::RequestContext;

pub fn handle(ctx: &RequestContext, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for t in request.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        let name = t.name.0.to_string();
        let assignment: Option<Vec<Vec<i32>>> = t.assignments.as_ref().map(|a| {
            a.iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        });
        let assignment = assignment.as_deref();
        let check = ctx
            .controller
            .check_new_partitions(&name, t.count, assignment)
            .map(|_| ());
        let result = match check {
            Ok(()) if !request.validate_only => {
                ctx.controller.create_partitions(&name, t.count, assignment)
            }
            other => other,
        }
        .map_err(|e| (metadata_error_code(&e), e.to_string()));
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
