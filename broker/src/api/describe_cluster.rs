//! DescribeCluster (API 60, KIP-700): the cluster id, the brokers and the controller a broker
//! endpoint reports.
//!
//! Invariant: a broker endpoint answers only broker-endpoint requests (`endpoint_type` 1);
//! a request meant for a controller endpoint gets MISMATCHED_ENDPOINT_TYPE and an unknown type
//! UNSUPPORTED_ENDPOINT_TYPE, as in Kafka.

use quipu_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use quipu_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use quipu_protocol::{ResponseError, StrBytes};

use super::authorized_operations;
use crate::request_context::RequestContext;

const ENDPOINT_BROKER: i8 = 1;
const ENDPOINT_CONTROLLER: i8 = 2;

pub fn handle(ctx: &RequestContext, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default();
    response.endpoint_type = ENDPOINT_BROKER;
    response.cluster_authorized_operations = authorized_operations::OMITTED;
    match request.endpoint_type {
        ENDPOINT_BROKER => {}
        ENDPOINT_CONTROLLER => {
            response.error_code = ResponseError::MismatchedEndpointType.code();
            response.error_message = Some(StrBytes::from_static_str(
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER",
            ));
            return response;
        }
        other => {
            response.error_code = ResponseError::UnsupportedEndpointType.code();
            response.error_message = Some(StrBytes::from_string(format!(
                "endpoint type {other} is not known"
            )));
            return response;
        }
    }
    response.cluster_id = StrBytes::from_string(ctx.identity.cluster_id.clone());
    response.controller_id = BrokerId(ctx.controller_id());
    // v2 may ask for fenced brokers too (KIP-1073), marked as such.
    let with_fenced = request.include_fenced_brokers;
    for registered in ctx.metadata.image().brokers() {
        if registered.fenced && !with_fenced {
            continue;
        }
        let mut b = DescribeClusterBroker::default();
        b.broker_id = BrokerId(registered.node_id);
        b.host = StrBytes::from_string(registered.host.clone());
        b.rack = registered.rack.clone().map(StrBytes::from_string);
        b.port = registered.port;
        b.is_fenced = registered.fenced;
        response.brokers.push(b);
    }
    response.cluster_authorized_operations = authorized_operations::when(
        request.include_cluster_authorized_operations,
        authorized_operations::CLUSTER,
    );
    response
}

super::handler::api!(
    DescribeCluster,
    0..=2,
    DescribeClusterRequest,
    |ctx, request, meta| { meta.reply(&handle(&ctx, request)) }
);
