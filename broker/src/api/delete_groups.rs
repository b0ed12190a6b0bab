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

/// DeleteGroups, versions 0 to 2.
pub struct Api;

impl super::handler::Handler for Api {
    const KEY: quipu_protocol::messages::ApiKey = quipu_protocol::messages::ApiKey::DeleteGroups;
    const VERSIONS: (i16, i16) = (0, 2);
    type Request = quipu_protocol::messages::DeleteGroupsRequest;

    async fn handle(
        broker: std::sync::Arc<crate::broker::Broker>,
        request: Self::Request,
        meta: super::handler::RequestMeta,
    ) -> Result<super::Handled, super::RequestError> {
        meta.reply(&delete_groups(&broker, request))
    }
}
