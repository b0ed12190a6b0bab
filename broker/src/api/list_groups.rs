//! ListGroups: the groups this broker coordinates, with their state and type, as operators and
//! tools (such as `kafka-consumer-groups`) list them.

use quipu_protocol::messages::list_groups_response::ListedGroup;
use quipu_protocol::messages::*;

use super::str_bytes;
use crate::request_context::RequestContext;

/// Classic groups only: every group here uses the classic protocol.
pub(super) const GROUP_TYPE: &str = "classic";

pub fn list_groups(ctx: &RequestContext, request: ListGroupsRequest) -> ListGroupsResponse {
    let mut response = ListGroupsResponse::default();
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    for (id, protocol_type, state) in ctx.groups.list() {
        if !states.is_empty() && !states.contains(&state.to_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t == GROUP_TYPE) {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(str_bytes(&id));
        g.protocol_type = str_bytes(&protocol_type);
        g.group_state = str_bytes(state);
        g.group_type = str_bytes(GROUP_TYPE);
        response.groups.push(g);
    }
    response
}

super::handler::api!(
    ListGroups,
    0..=5,
    ListGroupsRequest,
    |ctx, request, meta| { meta.reply(&list_groups(&ctx, request)) }
);
