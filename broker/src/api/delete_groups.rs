//! DeleteGroups: removes empty groups and their committed offsets.

use quipu_protocol::messages::delete_groups_response::DeletableGroupResult;
use quipu_protocol::messages::*;

use crate::request_context::RequestContext;

pub fn delete_groups(ctx: &RequestContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for id in &request.groups_names {
        let mut r = DeletableGroupResult::default();
        r.group_id = id.clone();
        r.error_code = ctx.groups.delete(&id.0);
        response.results.push(r);
    }
    response
}

super::handler::api!(
    DeleteGroups,
    0..=2,
    DeleteGroupsRequest,
    |ctx, request, meta| { meta.reply(&delete_groups(&ctx, request)) }
);
