//! Heartbeat: a member shows it is alive and learns of a rebalance, answered by the group
//! coordinator (`crate::group`).

use quipu_protocol::messages::*;

use crate::broker::Broker;

pub fn heartbeat(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    let mut response = HeartbeatResponse::default();
    response.error_code = broker.groups.heartbeat(
        &request.group_id.0,
        request.generation_id,
        &request.member_id,
        request.group_instance_id.as_deref(),
    );
    response
}

/// Heartbeat, versions 0 to 4.
pub struct Api;

impl super::handler::Handler for Api {
    const KEY: quipu_protocol::messages::ApiKey = quipu_protocol::messages::ApiKey::Heartbeat;
    const VERSIONS: (i16, i16) = (0, 4);
    type Request = quipu_protocol::messages::HeartbeatRequest;

    async fn handle(
        broker: std::sync::Arc<crate::broker::Broker>,
        request: Self::Request,
        meta: super::handler::RequestMeta,
    ) -> Result<super::Handled, super::RequestError> {
        meta.reply(&heartbeat(&broker, request))
    }
}
