//! OffsetForLeaderEpoch (KIP-101, KIP-320): for a leader epoch, the largest epoch at or below it
//! that this log holds and the offset where that epoch ends, from the leader epoch cache. Followers
//! truncate to it; consumers use it to detect a diverged log.

use quipu_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use quipu_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::request_context::RequestContext;

/// Kafka's answer when no epoch at or below the requested one is known.
const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_EPOCH_OFFSET: i64 = -1;

pub fn handle(
    ctx: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    for t in request.topics {
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for p in t.partitions {
            let mut pr = EpochEndOffset::default();
            pr.partition = p.partition;
            pr.leader_epoch = UNDEFINED_EPOCH;
            pr.end_offset = UNDEFINED_EPOCH_OFFSET;
            match ctx
                .replicas
                .leader_partition(&t.topic, p.partition, p.current_leader_epoch)
            {
                Err(e) => pr.error_code = e.code(),
                Ok(partition) => {
                    if let Some((epoch, end_offset)) =
                        partition.log().end_offset_for_epoch(p.leader_epoch)
                    {
                        pr.leader_epoch = epoch;
                        pr.end_offset = end_offset;
                    }
                }
            }
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    response
}

super::handler::api!(
    OffsetForLeaderEpoch,
    2..=4,
    OffsetForLeaderEpochRequest,
    |ctx, request, meta| { meta.reply(&handle(&ctx, request)) }
);
