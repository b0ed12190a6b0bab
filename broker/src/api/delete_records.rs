//! DeleteRecords: moves partitions' log start offsets forward; whole segments below go at once.

use quipu_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use quipu_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use quipu_protocol::ResponseError;

use crate::request_context::RequestContext;
use quipu_storage::log::LogStartError;

/// The offset that means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub fn handle(ctx: &RequestContext, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    let mut moved = false;
    for t in request.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            let result = match ctx
                .replicas
                .leader_partition(&t.name, p.partition_index, -1)
            {
                Err(e) => Err(e),
                Ok(partition) => {
                    let high_watermark = partition.high_watermark();
                    let target = if p.offset == HIGH_WATERMARK {
                        high_watermark
                    } else {
                        p.offset
                    };
                    let before = partition.log().log_start_offset();
                    match partition
                        .log()
                        .advance_log_start_offset(target, high_watermark)
                    {
                        Ok(start) => {
                            moved |= start != before;
                            Ok(start)
                        }
                        Err(LogStartError::OutOfRange(_)) => Err(ResponseError::OffsetOutOfRange),
                        Err(LogStartError::Io(e)) => {
                            tracing::error!(topic = %t.name.0, partition = p.partition_index, error = %e, "delete records failed");
                            Err(ResponseError::KafkaStorageError)
                        }
                    }
                }
            };
            match result {
                Ok(low_watermark) => pr.low_watermark = low_watermark,
                Err(e) => pr.error_code = e.code(),
            }
            tr.partitions.push(pr);
        }
        response.topics.push(tr);
    }
    // The new start must survive a restart before the client hears of it.
    if moved {
        if let Err(e) = ctx.replicas.checkpoint_log_start_offsets() {
            tracing::error!(error = %e, "cannot checkpoint log start offsets");
            for t in &mut response.topics {
                for p in &mut t.partitions {
                    if p.error_code == 0 {
                        p.error_code = ResponseError::KafkaStorageError.code();
                    }
                }
            }
        }
    }
    response
}

super::handler::api!(
    DeleteRecords,
    0..=2,
    DeleteRecordsRequest,
    |ctx, request, meta| { meta.reply(&super::blocking(&ctx, move |b| handle(b, request)).await) }
);
