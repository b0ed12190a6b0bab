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

super::handler::api!(
    Heartbeat,
    0..=4,
    HeartbeatRequest,
    |broker, request, meta| { meta.reply(&heartbeat(&broker, request)) }
);
