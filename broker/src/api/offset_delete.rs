//! OffsetDelete: removes a group's committed offsets for partitions it no longer consumes.

use quipu_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use quipu_protocol::messages::*;

use crate::group::state::NONE;
use crate::request_context::RequestContext;

pub fn offset_delete(ctx: &RequestContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let mut response = OffsetDeleteResponse::default();
    match ctx.groups.delete_offsets(&request.group_id.0, &partitions) {
        Err(code) => response.error_code = code,
        Ok(errors) => {
            let mut errors = errors.into_iter();
            for t in &request.topics {
                let mut rt = OffsetDeleteResponseTopic::default();
                rt.name = t.name.clone();
                for p in &t.partitions {
                    let mut rp = OffsetDeleteResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = errors.next().unwrap_or(NONE);
                    rt.partitions.push(rp);
                }
                response.topics.push(rt);
            }
        }
    }
    response
}

super::handler::api!(
    OffsetDelete,
    0..=0,
    OffsetDeleteRequest,
    |ctx, request, meta| { meta.reply(&offset_delete(&ctx, request)) }
);
