//! DeleteGroups: removes empty groups and their committed offsets.

use quipu_protocol::messages::delete_groups_response::DeletableGroupResult;
use quipu_protocol::messages::*;

use crate::broker::Broker;

pub fn delete_groups(broker: &Broker, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for id in &request.groups_names {
        let mut r = DeletableGroupResult::default();
        r.group_id = id.clone();
        r.error_code = broker.groups.delete(&broker.controller, &id.0);
        response.results.push(r);
    }
    response
}

super::handler::api!(
    DeleteGroups,
    0..=2,
    DeleteGroupsRequest,
    |broker, request, meta| { meta.reply(&delete_groups(&broker, request)) }
);
