//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat and LeaveGroup: the classic group membership
//! protocol, answered by the group coordinator (`crate::group`).
//!
//! This broker coordinates every group, so FindCoordinator names it for any group key (creating
//! `__consumer_offsets` on first use, as Kafka does). Transactions are not supported: a
//! transaction coordinator is never available.

use std::collections::HashMap;
use std::net::SocketAddr;

use quipu_protocol::messages::find_coordinator_response::Coordinator;
use quipu_protocol::messages::join_group_response::JoinGroupResponseMember;
use quipu_protocol::messages::leave_group_response::MemberResponse;
use quipu_protocol::messages::*;
use quipu_protocol::StrBytes;

use crate::broker::Broker;
use crate::group::state::{COORDINATOR_NOT_AVAILABLE, NONE};
use crate::group::JoinRequest;

const GROUP_KEY_TYPE: i8 = 0;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// Kafka's CLUSTER_AUTHORIZATION_FAILED.
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

pub fn find_coordinator(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let answer = |key: &StrBytes| -> Coordinator {
        let mut c = Coordinator::default();
        c.key = key.clone();
        let available = request.key_type == GROUP_KEY_TYPE
            && broker
                .groups
                .create_offsets_topic(&broker.controller)
                .is_ok();
        if available {
            c.node_id = BrokerId(broker.config.node_id);
            c.host = s(&broker.advertised_host);
            c.port = i32::from(broker.advertised_port);
        } else if request.key_type == GROUP_KEY_TYPE {
            c.node_id = BrokerId(-1);
            c.port = -1;
            c.error_code = COORDINATOR_NOT_AVAILABLE;
            c.error_message = Some(s("the group coordinator is not available"));
        } else {
            // No transaction (or share) coordinator exists: answer with an error clients treat as
            // fatal (librdkafka and the Java producer fail at once and show the message), not
            // with COORDINATOR_NOT_AVAILABLE, which they retry until their timeout.
            c.node_id = BrokerId(-1);
            c.port = -1;
            c.error_code = CLUSTER_AUTHORIZATION_FAILED;
            c.error_message = Some(s(
                "transactions and share groups are not supported by this broker",
            ));
        }
        c
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request.coordinator_keys.iter().map(answer).collect();
    } else {
        let c = answer(&request.key);
        response.error_code = c.error_code;
        response.error_message = c.error_message;
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    response
}

pub async fn join_group(
    broker: &Broker,
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
    let outcome = broker
        .groups
        .join(
            broker,
            JoinRequest {
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
            },
        )
        .await;
    let mut response = JoinGroupResponse::default();
    response.error_code = outcome.error;
    response.generation_id = outcome.generation;
    response.protocol_type = outcome.protocol_type.as_deref().map(s);
    response.protocol_name = match (outcome.protocol_name.as_deref(), version) {
        (Some(p), _) => Some(s(p)),
        // Before v7 the protocol name is not nullable.
        (None, v) if v < 7 => Some(StrBytes::default()),
        (None, _) => None,
    };
    response.leader = s(&outcome.leader);
    response.skip_assignment = outcome.skip_assignment;
    response.member_id = s(&outcome.member_id);
    response.members = outcome
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = s(&id);
            m.group_instance_id = instance.as_deref().map(s);
            m.metadata = metadata;
            m
        })
        .collect();
    response
}

pub async fn sync_group(broker: &Broker, request: SyncGroupRequest) -> SyncGroupResponse {
    let assignments: HashMap<String, bytes::Bytes> = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let outcome = broker
        .groups
        .sync(
            broker,
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
    response.protocol_type = outcome.protocol_type.as_deref().map(s);
    response.protocol_name = outcome.protocol_name.as_deref().map(s);
    response.assignment = outcome.assignment;
    response
}

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

pub fn leave_group(
    broker: &Broker,
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
    match broker.groups.leave(broker, &request.group_id.0, &leaving) {
        Err(code) => response.error_code = code,
        Ok(errors) if version >= 3 => {
            response.members = leaving
                .iter()
                .zip(errors)
                .map(|((id, instance), code)| {
                    let mut m = MemberResponse::default();
                    m.member_id = s(id);
                    m.group_instance_id = instance.as_deref().map(s);
                    m.error_code = code;
                    m
                })
                .collect();
        }
        Ok(errors) => response.error_code = errors.first().copied().unwrap_or(NONE),
    }
    response
}
