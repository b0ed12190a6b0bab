//! ListGroups, DescribeGroups and DeleteGroups: what operators and tools (such as
//! `kafka-consumer-groups`) see of the groups.

use quipu_protocol::messages::delete_groups_response::DeletableGroupResult;
use quipu_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use quipu_protocol::messages::list_groups_response::ListedGroup;
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

use super::authorized_operations;
use crate::broker::Broker;
use crate::group::state::GROUP_ID_NOT_FOUND;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Classic groups only: every group here uses the classic protocol.
const GROUP_TYPE: &str = "classic";

pub fn list_groups(broker: &Broker, request: ListGroupsRequest) -> ListGroupsResponse {
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
    for (id, protocol_type, state) in broker.groups.list() {
        if !states.is_empty() && !states.contains(&state.to_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t == GROUP_TYPE) {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(s(&id));
        g.protocol_type = s(&protocol_type);
        g.group_state = s(state);
        g.group_type = s(GROUP_TYPE);
        response.groups.push(g);
    }
    response
}

pub fn describe_groups(
    broker: &Broker,
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
        match broker.groups.describe(&id.0) {
            None => {
                g.group_state = s("Dead");
                if version >= 6 {
                    g.error_code = GROUP_ID_NOT_FOUND;
                    g.error_message = Some(s(&format!("group {} not found", id.0)));
                }
            }
            Some(d) => {
                g.group_state = s(d.state);
                g.protocol_type = s(&d.protocol_type);
                g.protocol_data = s(&d.protocol);
                g.members = d
                    .members
                    .into_iter()
                    .map(
                        |(member_id, instance, client_id, client_host, metadata, assignment)| {
                            let mut m = DescribedGroupMember::default();
                            m.member_id = s(&member_id);
                            m.group_instance_id = instance.as_deref().map(s);
                            m.client_id = s(&client_id);
                            m.client_host = s(&client_host);
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

pub fn delete_groups(broker: &Broker, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for id in &request.groups_names {
        let mut r = DeletableGroupResult::default();
        r.group_id = id.clone();
        r.error_code = broker.groups.delete(broker, &id.0);
        response.results.push(r);
    }
    response
}
