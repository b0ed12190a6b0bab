//! ListOffsets: the earliest, latest and max-timestamp offsets, and the first offset at or after
//! a timestamp.
//!
//! A lookup by timestamp finds its batch under the partition's lock and walks that batch's
//! records (decompressing, bounded) off the lock and off the network runtime, at most
//! `num.io.threads` at a time.

use quipu_protocol::messages::list_offsets_request::ListOffsetsPartition;
use quipu_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use quipu_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, TopicName};
use quipu_protocol::ResponseError;

use crate::partition::Partition;
use crate::request_context::RequestContext;
use quipu_storage::log::TimestampLookup;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub async fn handle(
    ctx: &RequestContext,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    for t in request.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let replica = request.replica_id.0 >= 0;
            tr.partitions
                .push(partition_offset(ctx, &t.name, p, (version, replica)).await);
        }
        response.topics.push(tr);
    }
    response
}

/// One partition's answer: the offset (and its timestamp) the request's timestamp names.
async fn partition_offset(
    ctx: &RequestContext,
    topic: &TopicName,
    p: ListOffsetsPartition,
    (version, replica): (i16, bool),
) -> ListOffsetsPartitionResponse {
    let mut pr = ListOffsetsPartitionResponse::default();
    pr.partition_index = p.partition_index;
    pr.timestamp = -1;
    pr.offset = -1;
    pr.leader_epoch = -1;
    let partition = ctx
        .replicas
        .leader_partition(topic, p.partition_index, p.current_leader_epoch);
    let leader_epoch = partition.as_ref().map_or(-1, |p| p.leader_epoch());
    let found = match partition {
        Err(e) => Err(e),
        Ok(_) if p.timestamp == MAX_TIMESTAMP && version < 7 => {
            Err(ResponseError::UnsupportedVersion)
        }
        Ok(_) if p.timestamp == EARLIEST_LOCAL && version < 8 => {
            Err(ResponseError::UnsupportedVersion)
        }
        Ok(partition) => look_up(ctx, &partition, p.timestamp, replica).await,
    };
    match found {
        Ok(Some((timestamp, offset))) => {
            pr.timestamp = timestamp;
            pr.offset = offset;
            if version >= 4 {
                pr.leader_epoch = leader_epoch;
            }
        }
        Ok(None) => {}
        Err(e) => pr.error_code = e.code(),
    }
    pr
}

/// The (timestamp, offset) that `timestamp` (or one of the special values) names in
/// `partition`, below its high watermark; a lookup inside a batch decodes it off the runtime.
/// A replica (a follower) asking for the latest offset is told the log end, as in Kafka.
async fn look_up(
    ctx: &RequestContext,
    partition: &Partition,
    timestamp: i64,
    replica: bool,
) -> Result<Option<(i64, i64)>, ResponseError> {
    let high_watermark = partition.high_watermark();
    let lookup = {
        let log = partition.log();
        match timestamp {
            LATEST if replica => Ok(Some(TimestampLookup::Found(-1, log.log_end_offset()))),
            LATEST => Ok(Some(TimestampLookup::Found(-1, high_watermark))),
            EARLIEST | EARLIEST_LOCAL => {
                Ok(Some(TimestampLookup::Found(-1, log.log_start_offset())))
            }
            MAX_TIMESTAMP => log.max_timestamp_and_offset(),
            ts if ts >= 0 => log.offset_for_timestamp(ts),
            _ => Ok(None),
        }
    };
    let lookup = lookup.inspect_err(|e| partition.take_offline(e));
    let found = match lookup {
        Err(_) => Err(ResponseError::KafkaStorageError),
        Ok(None) => Ok(None),
        Ok(Some(TimestampLookup::Found(ts, offset))) => Ok(Some((ts, offset))),
        Ok(Some(in_batch)) => ctx
            .off_runtime(move || in_batch.resolve())
            .await
            .map(Some)
            .map_err(|_| ResponseError::UnknownServerError),
    };
    found.map(|found| found.filter(|(_, o)| timestamp < 0 || *o < high_watermark))
}

super::handler::api!(
    ListOffsets,
    1..=8,
    ListOffsetsRequest,
    |ctx, request, meta| { meta.reply(&handle(&ctx, request, meta.version).await) }
);
