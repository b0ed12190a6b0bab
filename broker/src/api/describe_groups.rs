//! DescribeGroups: a group's state, protocol and members with their assignments.

use quipu_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use quipu_protocol::messages::*;

use super::authorized_operations;
use super::str_bytes;
use crate::group::state::GROUP_ID_NOT_FOUND;
use crate::request_context::RequestContext;

pub fn describe_groups(
    ctx: &RequestContext,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for id in &request.groups {
        let mut g = DescribedGroup::default();
        g.group_id = id.clone();
        g.authorized_operations = authorized_operations::when(
            version >= 3 && request.include_authorized_operations,
            authorized_operations::GROUP,
        );
        match ctx.groups.describe(&id.0) {
            // As Kafka's groupError: an empty (unknown) state.
            Err(code) => g.error_code = code,
            Ok(None) => {
                g.group_state = str_bytes("Dead");
                if version >= 6 {
                    g.error_code = GROUP_ID_NOT_FOUND;
                    g.error_message = Some(str_bytes(&format!("group {} not found", id.0)));
                }
            }
            Ok(Some(d)) => {
                g.group_state = str_bytes(d.state);
                g.protocol_type = str_bytes(&d.protocol_type);
                g.protocol_data = str_bytes(&d.protocol);
                g.members = d
                    .members
                    .into_iter()
                    .map(
                        |(member_id, instance, client_id, client_host, metadata, assignment)| {
                            let mut m = DescribedGroupMember::default();
                            m.member_id = str_bytes(&member_id);
                            m.group_instance_id = instance.as_deref().map(str_bytes);
                            m.client_id = str_bytes(&client_id);
                            m.client_host = str_bytes(&client_host);
                            m.member_metadata = metadata;
                            m.member_assignment = assignment;
                            m
                        },
                    )
                    .collect();
            }
        }
        response.groups.push(g);
    }
    response
}

super::handler::api!(
    DescribeGroups,
    0..=6,
    DescribeGroupsRequest,
    |ctx, request, meta| { meta.reply(&describe_groups(&ctx, request, meta.version)) }
);
