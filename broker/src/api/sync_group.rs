//! SyncGroup: the leader hands out the assignment and every member receives its own, answered
//! by the group coordinator (`crate::group`).

use std::collections::HashMap;

use quipu_protocol::messages::*;

use super::str_bytes;
use crate::broker::Broker;

pub async fn sync_group(broker: &Broker, request: SyncGroupRequest) -> SyncGroupResponse {
    let assignments: HashMap<String, bytes::Bytes> = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let outcome = broker
        .groups
        .sync(
            &broker.controller,
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

/// SyncGroup, versions 0 to 5.
pub struct Api;

impl super::handler::Handler for Api {
    const KEY: quipu_protocol::messages::ApiKey = quipu_protocol::messages::ApiKey::SyncGroup;
    const VERSIONS: (i16, i16) = (0, 5);
    type Request = quipu_protocol::messages::SyncGroupRequest;

    async fn handle(
        broker: std::sync::Arc<crate::broker::Broker>,
        request: Self::Request,
        meta: super::handler::RequestMeta,
    ) -> Result<super::Handled, super::RequestError> {
        meta.reply(&sync_group(&broker, request).await)
    }
}
