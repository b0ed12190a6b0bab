//! Fetch: reads record batches as zero-copy slices of the partition logs, waiting up to
//! `max_wait_ms` for `min_bytes` to arrive.
//!
//! Limits: `max_bytes` for the response (capped by the broker's `fetch.max.bytes`) and
//! `partition_max_bytes` per partition, in whole batches, except that the first batch of the first
//! partition with data always comes whole (KIP-74), so a batch larger than the limits never stalls
//! a consumer. A consumer's reads stop at the high watermark; a follower's (a replica id) go to
//! the log end, and its fetch offset tells the leader how far its log reaches. Fetch sessions
//! are not kept: a request for a new session gets session id 0, which clients take as "full
//! fetches only".

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use quipu_protocol::fetch_response::{
    encode_fetch_response, FetchPartition, FetchResponse, FetchTopic,
};
use quipu_protocol::messages::FetchRequest;
use quipu_protocol::ResponseError;
use tokio::sync::watch;

use crate::partition::Partition;
use crate::request_context::RequestContext;
use quipu_storage::log::ReadError;

/// Longest a fetch may wait, whatever it asks: bounds how long a request holds its connection slot.
const MAX_WAIT_MS_LIMIT: i32 = 60_000;

enum Target {
    Found(Arc<Partition>),
    /// Led here, but the consumer should read from this replica in its rack (KIP-392).
    Elsewhere(Arc<Partition>, i32),
    Error(ResponseError),
}

/// One partition of the request, resolved.
struct PartitionRead {
    index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    target: Target,
}

struct TopicRead {
    name: String,
    id: uuid::Uuid,
    partitions: Vec<PartitionRead>,
}

pub async fn handle(
    ctx: &RequestContext,
    request: FetchRequest,
    version: i16,
    correlation_id: i32,
) -> Vec<Bytes> {
    if let Some(e) = session_error(&request) {
        let response = FetchResponse {
            error_code: e.code(),
            ..Default::default()
        };
        return encode_fetch_response(correlation_id, version, &response);
    }

    // A follower's fetch (KIP-392's consumers send -1): it reads up to the log end, and its
    // fetch offset is its log end, which moves the high watermark.
    let replica = (request.replica_id.0 >= 0).then_some(request.replica_id.0);
    let targets = resolve(ctx, &request, (replica, version));
    let max_bytes = request.max_bytes.clamp(0, ctx.config.fetch_max_bytes) as usize;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_LIMIT) as u64);
    let deadline = tokio::time::Instant::now() + max_wait;
    // Subscribe before the first read so that an append between read and wait is not missed.
    let mut watchers: Vec<watch::Receiver<i64>> = targets
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter_map(|p| match &p.target {
            Target::Found(p) if replica.is_some() => Some(p.subscribe_log_end()),
            Target::Found(p) => Some(p.subscribe()),
            Target::Elsewhere(..) | Target::Error(_) => None,
        })
        .collect();
    loop {
        for w in watchers.iter_mut() {
            w.borrow_and_update();
        }
        let (response, bytes, errors) = read_all(&targets, max_bytes, replica.is_some());
        let waited_enough = tokio::time::Instant::now() >= deadline;
        if bytes >= min_bytes || errors || waited_enough || watchers.is_empty() {
            return encode_fetch_response(correlation_id, version, &response);
        }
        let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        match tokio::time::timeout_at(deadline, changed).await {
            Ok((Ok(()), _, _)) => continue,
            // A partition went away (topic deleted) or time is up: answer with what there is.
            Ok((Err(_), _, _)) | Err(_) => {
                let (response, _, _) = read_all(&targets, max_bytes, replica.is_some());
                return encode_fetch_response(correlation_id, version, &response);
            }
        }
    }
}

/// Fetch sessions are not kept: a request naming one (or an epoch of one) is refused.
fn session_error(request: &FetchRequest) -> Option<ResponseError> {
    if request.session_id != 0 {
        Some(ResponseError::FetchSessionIdNotFound)
    } else if request.session_epoch > 0 {
        Some(ResponseError::InvalidFetchSessionEpoch)
    } else {
        None
    }
}

/// Every partition of the request resolved once, through the replica manager; a follower's
/// fetch is recorded as its progress (NOT_LEADER_OR_FOLLOWER from a broker that is no replica).
fn resolve(
    ctx: &RequestContext,
    request: &FetchRequest,
    (replica, version): (Option<i32>, i16),
) -> Vec<TopicRead> {
    let now = crate::clock::now_ms();
    // A consumer that sends its rack (v11+) may read from a follower (KIP-392).
    let from_follower = replica.is_none() && version >= 11;
    let selector = ReadReplicaSelector::of(ctx, request);
    let mut targets: Vec<TopicRead> = Vec::new();
    for t in &request.topics {
        let topic = ctx.metadata.topic(&t.topic);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let (topic, index, epoch) = (&t.topic, p.partition, p.current_leader_epoch);
            let found = match from_follower {
                true => ctx.replicas.readable_partition(topic, index, epoch),
                false => ctx.replicas.leader_partition(topic, index, epoch),
            };
            let target = match found {
                Ok(partition) => match replica {
                    None => selector.target(partition),
                    Some(r) => match partition.record_follower_fetch(r, p.fetch_offset, now) {
                        Ok(()) => Target::Found(partition),
                        Err(e) => {
                            crate::warn_limited!(topic = ?t.topic.0, partition = p.partition, replica = r, "a fetch from a broker that is not a replica");
                            Target::Error(e)
                        }
                    },
                },
                Err(e) => Target::Error(e),
            };
            parts.push(PartitionRead {
                index: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                target,
            });
        }
        targets.push(TopicRead {
            name: t.topic.0.to_string(),
            id: topic.map_or(uuid::Uuid::nil(), |t| t.id),
            partitions: parts,
        });
    }
    targets
}

/// Kafka's RackAwareReplicaSelector, when `replica.selector.class` names it and the consumer
/// sent its `client.rack`: an in-sync replica on a live broker of that rack, the leader first.
struct ReadReplicaSelector {
    client_rack: Option<String>,
    image: Arc<crate::image::MetadataImage>,
}

impl ReadReplicaSelector {
    fn of(ctx: &RequestContext, request: &FetchRequest) -> Self {
        let enabled = ctx.config.replica_selector_class.is_some();
        let client_rack = request.rack_id.as_str().to_string();
        Self {
            client_rack: (enabled && !client_rack.is_empty()).then_some(client_rack),
            image: ctx.metadata.image(),
        }
    }

    /// Where a consumer reads `partition`: here, or (led here) another replica in its rack.
    fn target(&self, partition: Arc<Partition>) -> Target {
        let Some(rack) = &self.client_rack else {
            return Target::Found(partition);
        };
        if !partition.is_leader() {
            return Target::Found(partition);
        }
        let in_rack = |b: &&i32| {
            self.image
                .broker(**b)
                .is_some_and(|r| !r.fenced && r.rack.as_deref() == Some(rack.as_str()))
        };
        let (_, isr) = partition.replica_ids();
        let leader = partition.leader();
        let leader_in_rack = isr.iter().filter(in_rack).any(|b| *b == leader);
        match isr.iter().find(in_rack) {
            Some(&b) if !leader_in_rack && b != leader => Target::Elsewhere(partition, b),
            _ => Target::Found(partition),
        }
    }
}

/// One pass over the partitions, up to the high watermark (up to the log end for a follower);
/// returns the response, its record bytes, and whether any partition has an error (which
/// answers at once, as Kafka does).
fn read_all(
    targets: &[TopicRead],
    max_bytes: usize,
    to_log_end: bool,
) -> (FetchResponse, usize, bool) {
    let mut response = FetchResponse::default();
    let mut total = 0usize;
    let mut errors = false;
    for t in targets {
        let mut topic = FetchTopic {
            name: t.name.clone(),
            topic_id: t.id,
            partitions: Vec::with_capacity(t.partitions.len()),
        };
        for PartitionRead {
            index,
            fetch_offset,
            max_bytes: partition_max_bytes,
            target,
        } in &t.partitions
        {
            let mut out = FetchPartition {
                partition_index: *index,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                // Kafka sends empty records, never null, with an error: librdkafka rejects null.
                records: Some(vec![]),
                ..Default::default()
            };
            match target {
                Target::Error(e) => {
                    out.error_code = e.code();
                    errors = true;
                }
                Target::Elsewhere(partition, replica) => {
                    out.high_watermark = partition.high_watermark();
                    out.last_stable_offset = out.high_watermark;
                    out.log_start_offset = partition.log().log_start_offset();
                    out.preferred_read_replica = Some(*replica);
                    // Answered at once: the consumer goes to that replica.
                    errors = true;
                }
                Target::Found(partition) if partition.is_offline() => {
                    out.error_code = ResponseError::KafkaStorageError.code();
                    errors = true;
                }
                Target::Found(partition) => {
                    // KIP-74: the first batch may exceed `max_bytes`; what is left is then 0, never negative.
                    let budget = (*partition_max_bytes).min(max_bytes.saturating_sub(total));
                    let read = (*fetch_offset, budget, total == 0, to_log_end);
                    match read_partition(partition, read, &mut out) {
                        Ok(bytes) => total += bytes,
                        Err(()) => errors = true,
                    }
                }
            }
            topic.partitions.push(out);
        }
        response.topics.push(topic);
    }
    (response, total, errors)
}

/// Reads `partition` from `fetch_offset`, up to `budget` bytes (at least one batch when
/// `min_one`), up to its high watermark or, for a follower, its log end, into `out`; the record
/// bytes read, or `Err` when `out` carries an error.
fn read_partition(
    partition: &Partition,
    (fetch_offset, budget, min_one, to_log_end): (i64, usize, bool, bool),
    out: &mut FetchPartition,
) -> Result<usize, ()> {
    let high_watermark = partition.high_watermark();
    let log = partition.log();
    out.high_watermark = high_watermark;
    out.last_stable_offset = high_watermark;
    out.log_start_offset = log.log_start_offset();
    let limit = match to_log_end {
        true => log.log_end_offset(),
        false => high_watermark,
    };
    match log.read(fetch_offset, limit, budget, min_one) {
        Ok(Some(bytes)) => {
            let len = bytes.len();
            out.records = Some(vec![bytes]);
            Ok(len)
        }
        Ok(None) => Ok(0),
        Err(ReadError::OutOfRange(e)) => {
            tracing::debug!(topic = partition.topic(), partition = partition.index(), error = %e, "fetch out of range");
            out.error_code = ResponseError::OffsetOutOfRange.code();
            Err(())
        }
        Err(ReadError::Storage(e)) => {
            partition.take_offline(&e);
            out.error_code = ResponseError::KafkaStorageError.code();
            Err(())
        }
    }
}

super::handler::api!(Fetch, 4..=12, FetchRequest, |ctx, request, meta| {
    Ok(super::Handled::Response(
        handle(&ctx, request, meta.version, meta.correlation_id).await,
    ))
});
