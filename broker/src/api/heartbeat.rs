//! Heartbeat: a member shows it is alive and learns of a rebalance, answered by the group
//! coordinator (`crate::group`).

use quipu_protocol::messages::*;

use crate::request_context::RequestContext;

pub fn heartbeat(ctx: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let mut response = HeartbeatResponse::default();
    response.error_code = ctx.groups.heartbeat(
        &request.group_id.0,
        request.generation_id,
        &request.member_id,
        request.group_instance_id.as_deref(),
    );
    response
}

super::handler::api!(Heartbeat, 0..=4, HeartbeatRequest, |ctx, request, meta| {
    meta.reply(&heartbeat(&ctx, request))
});
