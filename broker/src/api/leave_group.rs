//! LeaveGroup: members (several at once from v3, by instance id too) leave a group, answered by
//! the group coordinator (`crate::group`).

use quipu_protocol::messages::leave_group_response::MemberResponse;
use quipu_protocol::messages::*;

use super::str_bytes;
use crate::group::state::NONE;
use crate::request_context::RequestContext;

pub fn leave_group(
    ctx: &RequestContext,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let mut response = LeaveGroupResponse::default();
    match ctx.groups.leave(&request.group_id.0, &leaving) {
        Err(code) => response.error_code = code,
        Ok(errors) if version >= 3 => {
            response.members = leaving
                .iter()
                .zip(errors)
                .map(|((id, instance), code)| {
                    let mut m = MemberResponse::default();
                    m.member_id = str_bytes(id);
                    m.group_instance_id = instance.as_deref().map(str_bytes);
                    m.error_code = code;
                    m
                })
                .collect();
        }
        Ok(errors) => response.error_code = errors.first().copied().unwrap_or(NONE),
    }
    response
}

super::handler::api!(
    LeaveGroup,
    0..=5,
    LeaveGroupRequest,
    |ctx, request, meta| { meta.reply(&leave_group(&ctx, request, meta.version)) }
);
