//! JoinGroup: a member joins a classic group's rebalance, answered by the group coordinator
//! (`crate::group`) once the join phase completes.

use std::net::SocketAddr;

use quipu_protocol::messages::join_group_response::JoinGroupResponseMember;
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

use super::str_bytes;
use crate::group::JoinRequest;
use crate::request_context::RequestContext;

pub async fn join_group(
    ctx: &RequestContext,
    request: JoinGroupRequest,
    version: i16,
    client_id: Option<&str>,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let rebalance_timeout_ms = if version >= 1 {
        request.rebalance_timeout_ms
    } else {
        request.session_timeout_ms
    };
    let outcome = ctx
        .groups
        .join(JoinRequest {
            group_id: request.group_id.0.to_string(),
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
            client_id: client_id.unwrap_or_default().to_string(),
            client_host: format!("/{}", peer.ip()),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            require_known_member_id: version >= 4,
            supports_skip_assignment: version >= 9,
        })
        .await;
    let mut response = JoinGroupResponse::default();
    response.error_code = outcome.error;
    response.generation_id = outcome.generation;
    response.protocol_type = outcome.protocol_type.as_deref().map(str_bytes);
    response.protocol_name = match (outcome.protocol_name.as_deref(), version) {
        (Some(p), _) => Some(str_bytes(p)),
        // Before v7 the protocol name is not nullable.
        (None, v) if v < 7 => Some(StrBytes::default()),
        (None, _) => None,
    };
    response.leader = str_bytes(&outcome.leader);
    response.skip_assignment = outcome.skip_assignment;
    response.member_id = str_bytes(&outcome.member_id);
    response.members = outcome
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(&id);
            m.group_instance_id = instance.as_deref().map(str_bytes);
            m.metadata = metadata;
            m
        })
        .collect();
    response
}

super::handler::api!(JoinGroup, 0..=9, JoinGroupRequest, |ctx, request, meta| {
    let response = join_group(
        &ctx,
        request,
        meta.version,
        meta.client_id.as_deref(),
        meta.peer,
    )
    .await;
    meta.reply(&response)
});
