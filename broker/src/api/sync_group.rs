//! SyncGroup: the leader hands out the assignment and every member receives its own, answered
//! by the group coordinator (`crate::group`).

use std::collections::HashMap;

use quipu_protocol::messages::*;

use super::str_bytes;
use crate::request_context::RequestContext;

pub async fn sync_group(ctx: &RequestContext, request: SyncGroupRequest) -> SyncGroupResponse {
    let assignments: HashMap<String, bytes::Bytes> = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let outcome = ctx
        .groups
        .sync(
            &request.group_id.0,
            request.generation_id,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.protocol_type.as_deref(),
            request.protocol_name.as_deref(),
            assignments,
        )
        .await;
    let mut response = SyncGroupResponse::default();
    response.error_code = outcome.error;
    response.protocol_type = outcome.protocol_type.as_deref().map(str_bytes);
    response.protocol_name = outcome.protocol_name.as_deref().map(str_bytes);
    response.assignment = outcome.assignment;
    response
}

super::handler::api!(SyncGroup, 0..=5, SyncGroupRequest, |ctx, request, meta| {
    meta.reply(&sync_group(&ctx, request).await)
});
