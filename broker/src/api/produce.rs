//! Produce: validate each partition's batch, append it, answer with its base offset.
//!
//! acks=1 answers once the batch is in the leader's log. acks=all refuses with
//! NOT_ENOUGH_REPLICAS while fewer replicas are in sync than the topic's `min.insync.replicas`,
//! and otherwise answers once the batch is below the high watermark (held by every in-sync
//! replica), as Kafka's delayed produce does, in a bounded purgatory. acks=0 gets no response.
//!
//! As in Kafka, a request's batches are keyed by topic-partition: a partition named twice is
//! appended once, with the last batch named for it, and answered once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quipu_protocol::record_batch::RecordBatchView;
use tokio::sync::oneshot;

use quipu_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use quipu_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use quipu_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use quipu_protocol::{ResponseError, StrBytes};

use super::append_error_code;
use crate::clock::now_ms;
use crate::metadata::is_internal;
use crate::partition::{LeaderAppendError, Partition};
use crate::request_context::RequestContext;
use quipu_storage::log::{check_batch, AppendError, AppendInfo, ProducePolicy};

/// A Produce request's place in its connection's order of appends. Handlers of one connection
/// run concurrently, and a compressed batch is checked off the runtime: without this, a later
/// request whose check finished first would append first, and a client's batches (an idempotent
/// producer's sequences) would land out of the order it sent them. Kafka reads one request of a
/// connection at a time; here the checks overlap and the appends keep request order.
pub struct AppendTurn {
    previous: Option<oneshot::Receiver<()>>,
    /// Dropped once this request's appends are done: the next one may go.
    _done: oneshot::Sender<()>,
}

impl AppendTurn {
    /// The turn after `previous` (the receiver of the connection's last Produce), and the
    /// receiver the next Produce waits on.
    pub fn after(previous: Option<oneshot::Receiver<()>>) -> (Self, oneshot::Receiver<()>) {
        let (done, next) = oneshot::channel();
        (
            Self {
                previous,
                _done: done,
            },
            next,
        )
    }

    /// Waits until the connection's earlier Produce requests have appended (once).
    async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error means the earlier request is gone: it has nothing left to append.
            let _ = previous.await;
        }
    }
}

pub async fn handle(
    ctx: &RequestContext,
    request: ProduceRequest,
    version: i16,
    mut turn: Option<AppendTurn>,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let mut response = ProduceResponse::default();
    // Partitions whose `flush.messages` came due: flushed before the response leaves.
    let mut to_flush = Vec::new();
    // acks=all: partitions whose batch must reach the high watermark before the answer.
    let mut to_replicate = Vec::new();
    for topic_data in one_batch_per_partition(request.topic_data) {
        let topic = ctx.metadata.topic(&topic_data.name);
        let policy = topic
            .as_ref()
            .map(|t| ProducePolicy::of(&t.config, now_ms()));
        let mut tr = TopicProduceResponse::default();
        tr.name = topic_data.name.clone();
        for pd in topic_data.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            let partition = ctx
                .replicas
                .leader_partition(&topic_data.name, pd.index, -1);
            let result = match admit(acks, &topic_data.name, &partition, pd.records, &topic) {
                Err(refusal) => Err(refusal),
                Ok((p, records)) => append(ctx, p, records, policy.expect("the topic exists"), &mut turn).await.inspect_err(|r| {
                    crate::warn_limited!(topic = ?topic_data.name.0, partition = pd.index, error = ?r.message, "produce refused");
                }),
            };
            let at = (response.responses.len(), tr.partition_responses.len());
            match result {
                Ok((info, epoch)) => {
                    pr.base_offset = info.base_offset;
                    pr.log_append_time_ms = info.log_append_time_ms;
                    if version >= 5 {
                        pr.log_start_offset = info.log_start_offset;
                    }
                    let p = partition.expect("appended to it");
                    if acks == -1 {
                        let min_isr = topic.as_ref().map_or(1, |t| t.config.min_insync_replicas);
                        to_replicate.push((at, p.clone(), (info.last_offset, epoch), min_isr));
                    }
                    if info.flush_due {
                        to_flush.push((at, p));
                    }
                }
                Err(refusal) => refusal.answer(&mut pr, version),
            }
            tr.partition_responses.push(pr);
        }
        response.responses.push(tr);
    }
    // Every append of this request is done: the connection's next Produce may append.
    drop(turn);
    flush_before_answer(ctx, to_flush, &mut response).await;
    wait_replicated(ctx, to_replicate, timeout, &mut response).await;
    (acks != 0).then_some(response)
}

/// Where a partition's answer is in the response: topic and partition indexes.
type AnswerAt = (usize, usize);

/// An acks=all batch to wait on: where its answer is, its partition, its last offset and leader
/// epoch, and the topic's `min.insync.replicas`.
type Replicating = (AnswerAt, Arc<Partition>, (i64, i32), i32);

/// fsync off the runtime; a failed flush fails the produce, as the data may not be durable.
async fn flush_before_answer(
    ctx: &RequestContext,
    to_flush: Vec<(AnswerAt, Arc<Partition>)>,
    response: &mut ProduceResponse,
) {
    for ((t, p), partition) in to_flush {
        let flushed = ctx.background.run(move || partition.flush(now_ms())).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::error!(?flushed, "flush before acknowledgement failed");
            let pr = &mut response.responses[t].partition_responses[p];
            pr.error_code = ResponseError::KafkaStorageError.code();
            pr.base_offset = -1;
        }
    }
}

/// acks=all: the delayed produce. Waits, holding one place of the bounded purgatory, until
/// every appended batch is below its partition's high watermark, or `timeout` runs out
/// (REQUEST_TIMED_OUT, also at once when every place is taken); a partition whose leadership
/// moved meanwhile answers NOT_LEADER_OR_FOLLOWER, and nothing written under the old epoch is
/// acknowledged.
async fn wait_replicated(
    ctx: &RequestContext,
    to_replicate: Vec<Replicating>,
    timeout: Duration,
    response: &mut ProduceResponse,
) {
    if to_replicate.is_empty() {
        return;
    }
    // A full purgatory answers at once: the batch is in the leader's log, but its
    // replication is not waited for (as when the wait times out).
    let permit = ctx.produce_purgatory.try_acquire();
    let admitted = permit.is_ok();
    if !admitted {
        crate::warn_limited!(
            limit = ctx.config.produce_purgatory_max_requests,
            "produce purgatory full: acks=all answered REQUEST_TIMED_OUT at once"
        );
    }
    let waits = to_replicate
        .iter()
        .map(|(_, p, appended, min_isr)| async move {
            match admitted {
                true => p.wait_replicated(*appended, *min_isr, timeout).await,
                false => Err(ResponseError::RequestTimedOut),
            }
        });
    let outcomes = futures_util::future::join_all(waits).await;
    drop(permit);
    for (((t, p), ..), outcome) in to_replicate.iter().zip(outcomes) {
        if let Err(e) = outcome {
            let pr = &mut response.responses[*t].partition_responses[*p];
            pr.error_code = e.code();
            if e != ResponseError::NotEnoughReplicasAfterAppend {
                pr.base_offset = -1;
            }
        }
    }
}

/// What refuses a partition's batch before it is looked at, as Kafka checks it: bad acks, a
/// partition that cannot be reached, an internal topic, no batch, too few in-sync replicas for
/// acks=all. Otherwise the partition and its batch.
fn admit<'a>(
    acks: i16,
    name: &TopicName,
    partition: &'a Result<Arc<Partition>, ResponseError>,
    records: Option<Bytes>,
    topic: &Option<Arc<crate::metadata::Topic>>,
) -> Result<(&'a Arc<Partition>, Bytes), Refusal> {
    if !matches!(acks, -1..=1) {
        return Err(Refusal::of(ResponseError::InvalidRequiredAcks));
    }
    let p = partition.as_ref().map_err(|e| Refusal::of(*e))?;
    // Only the broker writes its internal topics (Kafka: "Cannot append to internal topic").
    if is_internal(name) {
        return Err(Refusal {
            message: Some(format!("cannot append to internal topic {}", name.0)),
            ..Refusal::of(ResponseError::InvalidTopicException)
        });
    }
    let records = records.ok_or_else(|| Refusal {
        message: Some("no record batch".to_string()),
        ..Refusal::of(ResponseError::InvalidRecord)
    })?;
    if acks == -1
        && topic
            .as_ref()
            .is_some_and(|t| t.config.min_insync_replicas > p.isr_size())
    {
        return Err(Refusal::of(ResponseError::NotEnoughReplicas));
    }
    Ok((p, records))
}

/// Checks a batch's records and recompresses it if the topic asks for another codec (off the
/// network runtime when that means decompressing or compressing), then appends it. The policy
/// comes from the topic's config, not the log's, so the check takes no lock; should the topic
/// become compacted meanwhile, the append checks the keys again.
async fn append(
    ctx: &RequestContext,
    partition: &Arc<Partition>,
    records: Bytes,
    policy: ProducePolicy,
    turn: &mut Option<AppendTurn>,
) -> Result<(AppendInfo, i32), Refusal> {
    let heavy = RecordBatchView::parse(&records)
        .is_ok_and(|b| b.compression_codec() != 0 || policy.recompression(0).is_some());
    let checked = if heavy {
        let bytes = records.clone();
        ctx.off_runtime(move || check_batch(&bytes, policy))
            .await
            .map_err(|e| Refusal::append(AppendError::Io(std::io::Error::other(e.to_string()))))?
    } else {
        check_batch(&records, policy)
    }
    .map_err(Refusal::append)?;
    if let Some(turn) = turn {
        turn.wait().await;
    }
    let batch = checked.recompressed.as_deref().unwrap_or(&records);
    partition
        .append_checked(batch, checked.checked, now_ms())
        .map_err(|e| match e {
            LeaderAppendError::NotLeader => Refusal::of(ResponseError::NotLeaderOrFollower),
            LeaderAppendError::Append(e) => Refusal::append(e),
        })
}

/// Why a partition's batch was refused: its error code, and from Produce v8 on an error message
/// and the record at fault where there is one (KIP-467).
struct Refusal {
    code: ResponseError,
    message: Option<String>,
    records: Vec<(i32, String)>,
}

impl Refusal {
    fn of(code: ResponseError) -> Self {
        Self {
            code,
            message: None,
            records: Vec::new(),
        }
    }

    fn append(e: AppendError) -> Self {
        let code = append_error_code(&e);
        let message = Some(e.to_string());
        let records = match e {
            AppendError::RecordsRefused(records) | AppendError::TimestampsRefused(records) => {
                records
            }
            _ => Vec::new(),
        };
        Self {
            code,
            message,
            records,
        }
    }

    fn answer(self, pr: &mut PartitionProduceResponse, version: i16) {
        pr.error_code = self.code.code();
        if version < 8 {
            return;
        }
        pr.error_message = self.message.map(StrBytes::from_string);
        pr.record_errors = self
            .records
            .into_iter()
            .map(|(index, message)| {
                let mut record = BatchIndexAndErrorMessage::default();
                record.batch_index = index;
                record.batch_index_error_message = Some(StrBytes::from_string(message));
                record
            })
            .collect();
    }
}

/// Merges the entries of a topic named more than once and keeps the last batch of a partition
/// named more than once (at the place it was first named), as Kafka's map of batches does.
fn one_batch_per_partition(topic_data: Vec<TopicProduceData>) -> Vec<TopicProduceData> {
    let duplicated = match topic_data.as_slice() {
        [] => false,
        [only] => {
            let mut seen = std::collections::HashSet::new();
            only.partition_data.len() > 1
                && !only.partition_data.iter().all(|p| seen.insert(p.index))
        }
        _ => true,
    };
    if !duplicated {
        return topic_data;
    }
    let mut topics: Vec<TopicProduceData> = Vec::with_capacity(topic_data.len());
    let mut topic_at = HashMap::with_capacity(topic_data.len());
    for td in topic_data {
        match topic_at.get(&td.name) {
            Some(&at) => {
                let merged: &mut TopicProduceData = &mut topics[at];
                merged.partition_data.extend(td.partition_data);
            }
            None => {
                topic_at.insert(td.name.clone(), topics.len());
                topics.push(td);
            }
        }
    }
    for topic in &mut topics {
        let named = std::mem::take(&mut topic.partition_data);
        let mut kept: Vec<PartitionProduceData> = Vec::with_capacity(named.len());
        let mut partition_at = HashMap::with_capacity(named.len());
        for pd in named {
            match partition_at.get(&pd.index) {
                Some(&at) => kept[at] = pd,
                None => {
                    partition_at.insert(pd.index, kept.len());
                    kept.push(pd);
                }
            }
        }
        topic.partition_data = kept;
    }
    topics
}

super::handler::api!(Produce, 3..=11, ProduceRequest, |ctx, request, meta| {
    match handle(&ctx, request, meta.version, meta.append_turn.take()).await {
        Some(response) => meta.reply(&response),
        None => Ok(super::Handled::NoResponse),
    }
});
