//! ListPartitionReassignments (46): the reassignments in progress, with each partition's
//! replicas and those being added and removed, as `kafka-reassign-partitions --verify` reads
//! them.

use quipu_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use quipu_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use quipu_protocol::StrBytes;

use crate::request_context::RequestContext;

pub fn handle(
    ctx: &RequestContext,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let named = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect();
    let mut response = ListPartitionReassignmentsResponse::default();
    for (topic, partitions) in ctx.controller.list_reassignments(named) {
        let mut t = OngoingTopicReassignment::default();
        t.name = TopicName(StrBytes::from_string(topic));
        for (index, p) in partitions {
            let mut o = OngoingPartitionReassignment::default();
            o.partition_index = index;
            o.replicas = ids(&p.replicas);
            o.adding_replicas = ids(&p.adding_replicas);
            o.removing_replicas = ids(&p.removing_replicas);
            t.partitions.push(o);
        }
        response.topics.push(t);
    }
    response
}

super::handler::api!(
    ListPartitionReassignments,
    0..=0,
    ListPartitionReassignmentsRequest,
    |ctx, request, meta| { meta.reply(&handle(&ctx, request)) }
);
