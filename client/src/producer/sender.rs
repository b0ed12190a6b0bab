//! The producer's sender: a task that drains the accumulator, cuts each leader's batches into
//! produce requests, and hands them to one task per leader, which writes them to its connection
//! in drain order; a second task per leader reads the answers and completes, retries or fails
//! each batch.
//!
//! Invariants:
//! - Responses are matched in request order (the order the broker answers in), so a batch's
//!   failure is known before the answers of the batches sent after it.
//! - A request carries at most one batch per partition (a broker keeps one entry per partition)
//!   and stays within `max.request.size`, unless one batch alone is larger.
//! - A batch is sent again only after an error a retry may cure, within `retries` and
//!   `delivery.timeout.ms`; every other outcome completes it exactly once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quipu_protocol::batch_builder::ProducerFields;
use quipu_protocol::messages::{ProduceRequest, ProduceResponse};
use quipu_protocol::produce_request::{encode_produce_request, PartitionRecords, TopicRecords};
use quipu_protocol::ResponseError;
use tokio::sync::mpsc;

use crate::cluster::Cluster;
use crate::config::{Acks, ProducerConfig};
use crate::connection::Connection;
use crate::error::{Error, Result};

use super::accumulator::{Accumulator, Batch};
use super::delivery::BatchAck;
use super::idempotence::{restamp, ProducerIdentity};

/// Highest Produce version used: v13 names topics by id.
const MAX_PRODUCE_VERSION: i16 = 11;

/// A produce request handed to its connection: the response to come, and its batches.
type PendingProduce = (
    Pin<Box<dyn Future<Output = Result<ProduceResponse>> + Send>>,
    Vec<Batch>,
);

/// What the broker answered for one partition of a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionOutcome {
    error_code: i16,
    base_offset: i64,
    log_append_time_ms: i64,
    error_message: String,
}

struct Sender {
    config: ProducerConfig,
    cluster: Arc<Cluster>,
    accumulator: Arc<Accumulator>,
    identity: ProducerIdentity,
    refreshing: AtomicBool,
    /// One task per leader hands requests to its connection in drain order (sequence order).
    /// Unbounded, but what is queued is bounded by the in-flight batches per partition.
    leaders: Mutex<HashMap<i32, mpsc::UnboundedSender<Vec<Batch>>>>,
}

/// Starts the sender of `accumulator`'s batches; it ends once the accumulator is closed and
/// every batch is done.
pub(super) fn start(config: ProducerConfig, cluster: Arc<Cluster>, accumulator: Arc<Accumulator>) {
    let sender = Sender {
        config,
        cluster,
        accumulator,
        identity: ProducerIdentity::default(),
        refreshing: AtomicBool::new(false),
        leaders: Mutex::new(HashMap::new()),
    };
    tokio::spawn(run(Arc::new(sender)));
}

async fn run(s: Arc<Sender>) {
    loop {
        let metadata = |topic: &str| s.cluster.cached_topic(topic);
        let (drained, done) = s.accumulator.drain(Instant::now(), &s.identity, &metadata);
        s.fail_expired(drained.expired);
        if !drained.unknown_topics.is_empty() {
            refresh_metadata(&s, drained.unknown_topics);
        }
        for (leader, batches) in drained.by_leader {
            for request in requests(batches, s.config.max_request_size_bytes) {
                dispatch(&s, leader, request);
            }
        }
        if done {
            return;
        }
        let sleep = match drained.next_wakeup {
            Some(t) => tokio::time::sleep_until(t.into()),
            None => tokio::time::sleep(Duration::from_secs(1)),
        };
        tokio::select! {
            _ = s.accumulator.wake_sender.notified() => {}
            _ = sleep => {}
        }
    }
}

/// Asks for the metadata of `topics` (partitions without a known leader) in a task of its
/// own, unless a refresh is under way; the sender is woken when it is done.
fn refresh_metadata(s: &Arc<Sender>, topics: Vec<String>) {
    if s.refreshing.swap(true, Ordering::AcqRel) {
        return;
    }
    let s = s.clone();
    tokio::spawn(async move {
        if let Err(e) = s.cluster.refresh(&topics).await {
            tracing::debug!(%e, "metadata refresh failed");
        }
        s.refreshing.store(false, Ordering::Release);
        s.accumulator.wake_sender.notify_one();
    });
}

/// A leader's batches as requests. Requests to a leader carry at most one batch per
/// partition (a broker keeps one entry per partition): the k-th batch of each partition goes
/// in the k-th request, and requests are split where they would pass max.request.size.
fn requests(batches: Vec<Batch>, max_request_size_bytes: usize) -> Vec<Vec<Batch>> {
    let mut rounds: Vec<Vec<Batch>> = Vec::new();
    let mut seen: HashMap<(Arc<str>, i32), usize> = HashMap::new();
    for b in batches {
        let k = seen.entry((b.topic.clone(), b.partition)).or_insert(0);
        if rounds.len() <= *k {
            rounds.push(Vec::new());
        }
        rounds[*k].push(b);
        *k += 1;
    }
    let mut out = Vec::new();
    for round in rounds {
        let mut request = Vec::new();
        let mut request_bytes = 0;
        for b in round {
            let size = b.size_bytes;
            if !request.is_empty() && request_bytes + size > max_request_size_bytes {
                out.push(std::mem::take(&mut request));
                request_bytes = 0;
            }
            request_bytes += size;
            request.push(b);
        }
        if !request.is_empty() {
            out.push(request);
        }
    }
    out
}

/// Queues a request for `leader`'s task, starting the task if there is none.
fn dispatch(s: &Arc<Sender>, leader: i32, batches: Vec<Batch>) {
    let mut leaders = s.leaders.lock().expect("leader tasks");
    let batches = match leaders.get(&leader) {
        Some(tx) => match tx.send(batches) {
            Ok(()) => return,
            Err(mpsc::error::SendError(b)) => b,
        },
        None => batches,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Batch>>();
    tx.send(batches).expect("receiver alive");
    leaders.insert(leader, tx);
    let s = s.clone();
    // Responses are handled in request order (the order the broker answers in), so a batch's
    // failure is known before the answers of the batches sent after it.
    let (responses_tx, mut responses) = mpsc::unbounded_channel::<PendingProduce>();
    let s2 = s.clone();
    tokio::spawn(async move {
        while let Some((response, batches)) = responses.recv().await {
            match response.await {
                Ok(r) => s2.handle_response(batches, r),
                Err(e) => s2.fail_or_retry(batches, &e),
            }
        }
    });
    tokio::spawn(async move {
        while let Some(batches) = rx.recv().await {
            send_request(&s, leader, &responses_tx, batches).await;
        }
    });
}

/// Encodes `batches` and hands their request to `leader`'s connection; the response is
/// handled by the leader's response task, in request order, so the next request can be handed
/// over at once.
///
/// An idempotent producer sends a batch whose partition has an earlier batch queued again back
/// to its queue instead, to follow that one. A batch sent while an earlier one is still failing
/// on a broken connection is refused by the broker (OUT_OF_ORDER_SEQUENCE_NUMBER), and the
/// answers are handled in request order, so it too is queued again behind the earlier one; until
/// the broker knows the producer, a partition has only one batch in flight.
async fn send_request(
    s: &Arc<Sender>,
    leader: i32,
    responses: &mpsc::UnboundedSender<PendingProduce>,
    mut batches: Vec<Batch>,
) {
    if let Err(e) = s.encode(&mut batches).await {
        return s.fail_or_retry(batches, &e);
    }
    let conn = match s.cluster.connection(leader).await {
        Ok(c) => c,
        Err(e) => return s.fail_or_retry(batches, &e),
    };
    if s.config.idempotent() {
        batches = s.bounce_retrying(&conn, batches);
        if batches.is_empty() {
            return;
        }
    }
    let version = match conn.version_for::<ProduceRequest>() {
        Ok(v) => v.min(MAX_PRODUCE_VERSION),
        Err(e) => return s.fail_or_retry(batches, &e),
    };
    let request = s.produce_request(version, &batches);
    if s.config.acks == Acks::None {
        return s
            .send_unacknowledged(&conn, request, version, batches)
            .await;
    }
    let response = match conn.start_chunks::<ProduceRequest>(request, version).await {
        Ok(r) => r,
        Err(e) => return s.fail_or_retry(batches, &e),
    };
    if let Err(mpsc::error::SendError((_, batches))) = responses.send((Box::pin(response), batches))
    {
        s.fail_or_retry(batches, &Error::Closed);
    }
}

impl Sender {
    /// Batches that waited past `delivery.timeout.ms` before their first send fail.
    fn fail_expired(&self, expired: Vec<Batch>) {
        for batch in expired {
            let e = Error::Timeout {
                timeout_ms: self.config.delivery_timeout_ms,
                what: format!(
                    "delivery of a batch to {}-{} (delivery.timeout.ms)",
                    batch.topic, batch.partition
                ),
            };
            self.accumulator.complete(batch, Err(e), false);
        }
    }

    /// Each batch's bytes with the producer's fields: finished on its first send, stamped
    /// again (if its epoch changed) on later ones.
    async fn encode(&self, batches: &mut [Batch]) -> Result<()> {
        let producer = if self.config.idempotent() {
            self.identity.fields(&self.cluster).await?
        } else {
            ProducerFields::NONE
        };
        for b in batches.iter_mut() {
            let fields = ProducerFields {
                base_sequence: b.base_sequence.unwrap_or(-1),
                ..producer
            };
            b.encoded = Some(match b.encoded.take() {
                None => {
                    let builder = b
                        .builder
                        .take()
                        .expect("a batch not yet encoded has its records");
                    builder
                        .finish(self.config.compression.codec(), fields)
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?
                }
                Some(bytes) => restamp(bytes, fields)?,
            });
        }
        Ok(())
    }

    /// The batches that may go now; those whose partition has an earlier batch queued again
    /// go back to follow it.
    fn bounce_retrying(&self, conn: &Connection, batches: Vec<Batch>) -> Vec<Batch> {
        let (bounced, kept): (Vec<Batch>, Vec<Batch>) = batches
            .into_iter()
            .partition(|b| self.accumulator.partition_retrying(b));
        if !bounced.is_empty() {
            let e = Error::Disconnected {
                addr: conn.addr.clone(),
                reason: "an earlier batch of the partition is being sent again".into(),
            };
            self.fail_or_retry(bounced, &e);
        }
        kept
    }

    /// The produce request of `batches` (encoded), as chunks that share their bytes.
    fn produce_request(&self, version: i16, batches: &[Batch]) -> Vec<bytes::Bytes> {
        let mut topics: Vec<TopicRecords<'_>> = Vec::new();
        for b in batches {
            let records = PartitionRecords {
                partition: b.partition,
                records: b.encoded.clone().expect("encoded above"),
            };
            match topics.iter_mut().find(|t| t.name == &*b.topic) {
                Some(t) => t.partitions.push(records),
                None => topics.push(TopicRecords {
                    name: &b.topic,
                    partitions: vec![records],
                }),
            }
        }
        let timeout_ms = self.config.client.request_timeout_ms.min(i32::MAX as u64) as i32;
        encode_produce_request(version, None, self.config.acks.code(), timeout_ms, &topics)
    }

    /// With `acks=0`: written is done; the broker says nothing, so no offset is known.
    async fn send_unacknowledged(
        &self,
        conn: &Connection,
        request: Vec<bytes::Bytes>,
        version: i16,
        batches: Vec<Batch>,
    ) {
        let sent = conn
            .send_chunks_no_response::<ProduceRequest>(request, version)
            .await;
        for b in batches {
            match &sent {
                Ok(()) => self.accumulator.complete(
                    b,
                    Ok(BatchAck {
                        base_offset: -1,
                        log_append_time_ms: -1,
                    }),
                    true,
                ),
                Err(e) => self.fail_or_retry(vec![b], e),
            }
        }
    }

    /// Completes or retries each batch after the broker's answer for its partition.
    fn handle_response(&self, batches: Vec<Batch>, response: ProduceResponse) {
        let results = partition_outcomes(&response);
        let outcomes: Vec<Option<PartitionOutcome>> = batches
            .iter()
            .map(|b| results.get(&(&*b.topic, b.partition)).cloned())
            .collect();
        drop(results);
        for (b, outcome) in batches.into_iter().zip(outcomes) {
            match outcome {
                None => {
                    let e = Error::Protocol(format!(
                        "produce response without partition {}-{}",
                        b.topic, b.partition
                    ));
                    self.accumulator.complete(b, Err(e), true);
                }
                Some(outcome) => self.settle(b, &outcome),
            }
        }
    }

    /// Completes `b` as the broker's `outcome` for it says, or retries it.
    fn settle(&self, b: Batch, outcome: &PartitionOutcome) {
        let ack = BatchAck {
            base_offset: outcome.base_offset,
            log_append_time_ms: outcome.log_append_time_ms,
        };
        let Some(error) = ResponseError::try_from_code(outcome.error_code) else {
            return self.accumulator.complete(b, Ok(ack), true);
        };
        if error == ResponseError::DuplicateSequenceNumber {
            // Written before: the broker already holds the batch.
            return self.accumulator.complete(b, Ok(ack), true);
        }
        let message = &outcome.error_message;
        let context = if message.is_empty() {
            format!("produce to {}-{}", b.topic, b.partition)
        } else {
            format!("produce to {}-{} ({message})", b.topic, b.partition)
        };
        let e = Error::Broker { error, context };
        self.fail_or_retry(vec![b], &e);
    }

    fn fail_or_retry(&self, batches: Vec<Batch>, error: &Error) {
        if error.invalidates_metadata() {
            for b in &batches {
                self.cluster.invalidate(&b.topic);
            }
        }
        let delivery_timeout = Duration::from_millis(self.config.delivery_timeout_ms);
        for b in batches {
            let out_of_order =
                error.broker_error() == Some(ResponseError::OutOfOrderSequenceNumber);
            let retriable = error.is_retriable()
                || (out_of_order
                    && (self.accumulator.partition_retrying(&b) || self.epoch_moving_on(&b)));
            if retriable
                && b.attempts < self.config.retries
                && b.created.elapsed() < delivery_timeout
            {
                self.accumulator.requeue(b, error);
            } else {
                self.accumulator.complete(b, Err(error.clone()), true);
            }
        }
    }

    /// Whether `batch`'s sequence belongs to an epoch that is over or ending, so that the
    /// broker's OUT_OF_ORDER_SEQUENCE_NUMBER for it is cured by sending it again.
    fn epoch_moving_on(&self, batch: &Batch) -> bool {
        self.accumulator.epoch_bump_pending()
            || self
                .identity
                .stamped_in_another_epoch(batch.encoded.as_ref())
    }
}

/// The broker's answer for each partition of a produce response.
fn partition_outcomes(response: &ProduceResponse) -> HashMap<(&str, i32), PartitionOutcome> {
    let mut results = HashMap::new();
    for t in &response.responses {
        for p in &t.partition_responses {
            results.insert(
                (t.name.0.as_str(), p.index),
                PartitionOutcome {
                    error_code: p.error_code,
                    base_offset: p.base_offset,
                    log_append_time_ms: p.log_append_time_ms,
                    error_message: p
                        .error_message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                },
            );
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use quipu_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use quipu_protocol::messages::TopicName;
    use quipu_protocol::StrBytes;

    use super::*;

    /// Each request as `partition:bytes` of its batches.
    fn shapes(requests: &[Vec<Batch>]) -> Vec<Vec<(i32, usize)>> {
        requests
            .iter()
            .map(|r| r.iter().map(|b| (b.partition, b.size_bytes)).collect())
            .collect()
    }

    #[test]
    fn a_request_carries_one_batch_per_partition_within_max_request_size() {
        let batches = vec![
            Batch::for_test("t", 0, 100),
            Batch::for_test("t", 0, 101),
            Batch::for_test("t", 1, 100),
            Batch::for_test("t", 1, 101),
            Batch::for_test("t", 2, 100),
        ];
        assert_eq!(
            shapes(&requests(batches, 250)),
            [
                vec![(0, 100), (1, 100)],
                vec![(2, 100)],
                vec![(0, 101), (1, 101)],
            ]
        );
    }

    #[test]
    fn a_batch_larger_than_max_request_size_goes_alone_and_topics_are_told_apart() {
        let batches = vec![
            Batch::for_test("a", 0, 500),
            Batch::for_test("b", 0, 10),
            Batch::for_test("b", 1, 10),
        ];
        assert_eq!(
            shapes(&requests(batches, 250)),
            [vec![(0, 500)], vec![(0, 10), (1, 10)]]
        );
    }

    #[test]
    fn a_produce_answer_is_read_per_topic_and_partition() {
        let response =
            ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_responses(vec![
                    PartitionProduceResponse::default()
                        .with_index(0)
                        .with_base_offset(40)
                        .with_log_append_time_ms(-1),
                    PartitionProduceResponse::default()
                        .with_index(1)
                        .with_error_code(ResponseError::NotLeaderOrFollower.code())
                        .with_error_message(Some(StrBytes::from_static_str("moved"))),
                ])]);
        let outcomes = partition_outcomes(&response);
        assert_eq!(outcomes.len(), 2);
        assert_eq!(
            outcomes[&("t", 0)],
            PartitionOutcome {
                error_code: 0,
                base_offset: 40,
                log_append_time_ms: -1,
                error_message: String::new(),
            }
        );
        let refused = &outcomes[&("t", 1)];
        assert_eq!(
            refused.error_code,
            ResponseError::NotLeaderOrFollower.code()
        );
        assert_eq!(refused.error_message, "moved");
    }
}
