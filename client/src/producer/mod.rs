//! The producer: records are appended to per-partition batches, and a background sender task
//! sends each batch to its partition's leader once it is full (`batch.size`) or old enough
//! (`linger.ms`), retries what a retry may cure, and resolves every record's future to its
//! partition and offset.
//!
//! Invariants:
//! - Bytes of records not yet acknowledged stay within `buffer.memory`: `send` takes permits of
//!   a semaphore for each record before it is appended and the permits come back when its batch
//!   is acknowledged or fails; `send` waits at most `max.block.ms` for them.
//! - At most `max.in.flight.requests.per.connection` produce requests are outstanding per
//!   connection, and as many batches per partition.
//! - Idempotent producers: sequences are assigned when a batch is first sent, in the order of the
//!   partition's queue, and never change; a batch sent again keeps its bytes. After a retriable
//!   error the partition sends nothing until its in-flight batches have come back, and then sends
//!   the failed ones again in sequence order, so the broker sees no gap.
//! - A batch whose sequence was assigned and that fails for good leaves a gap the broker would
//!   refuse every later batch of its partition for (OUT_OF_ORDER_SEQUENCE_NUMBER). As in the Java
//!   producer (KIP-360), the producer then sends nothing until no batch is in flight, moves to the
//!   next epoch, where every partition starts again at sequence 0, and sends the batches still
//!   queued with new sequences (their headers stamped again).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quipu_protocol::batch_builder::{BatchBuilder, ProducerFields};
use quipu_protocol::messages::ProduceRequest;
use quipu_protocol::produce_request::{encode_produce_request, PartitionRecords, TopicRecords};
use quipu_protocol::ResponseError;
use tokio::sync::mpsc;

use crate::cluster::Cluster;
use crate::config::{Acks, ProducerConfig};
use crate::error::{Error, Result};

use self::accumulator::{Accumulator, Batch};
use self::delivery::BatchAck;
use self::idempotence::{restamp, ProducerIdentity};

pub use self::delivery::{DeliveryFuture, RecordMetadata};
pub use self::record::ProducerRecord;

mod accumulator;
mod delivery;
mod idempotence;
mod record;

/// Highest Produce version used: v13 names topics by id.
const MAX_PRODUCE_VERSION: i16 = 11;

struct ProducerState {
    config: ProducerConfig,
    cluster: Arc<Cluster>,
    accumulator: Accumulator,
    identity: ProducerIdentity,
    refreshing: AtomicBool,
    /// One task per leader hands requests to its connection in drain order (sequence order).
    /// Unbounded, but what is queued is bounded by the in-flight batches per partition.
    leaders: Mutex<HashMap<i32, mpsc::UnboundedSender<Vec<Batch>>>>,
}

/// An asynchronous Kafka producer; cheap to clone, every clone sends through the same batches.
///
/// ```no_run
/// # async fn demo() -> quipu_client::Result<()> {
/// use quipu_client::{Producer, ProducerConfig, ProducerRecord};
/// let producer = Producer::new(ProducerConfig::new("localhost:9092"))?;
/// let delivery = producer
///     .send(ProducerRecord::new("greetings", "hello").with_key("user-1"))
///     .await?;
/// let written = delivery.await?;
/// println!("partition {} offset {}", written.partition, written.offset);
/// producer.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    shared: Arc<ProducerState>,
}

impl Producer {
    /// A producer with `config`; connects on first use. Must be called within a tokio runtime.
    pub fn new(config: ProducerConfig) -> Result<Self> {
        config.validate()?;
        let cluster = Cluster::new(
            config.client.clone(),
            config.max_in_flight_requests_per_connection,
        )?;
        let shared = Arc::new(ProducerState {
            accumulator: Accumulator::new(config.clone()),
            config,
            cluster,
            identity: ProducerIdentity::default(),
            refreshing: AtomicBool::new(false),
            leaders: Mutex::new(HashMap::new()),
        });
        tokio::spawn(run_sender(shared.clone()));
        Ok(Self { shared })
    }

    /// Appends `record` to its partition's batch and returns a future of its acknowledgement.
    /// Waits (at most `max.block.ms`) for the topic's metadata and for buffer memory.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let s = &*self.shared;
        let partitions = self.partitions_within_max_block(&record.topic).await?;
        let size = check_record(&record, partitions, s.config.max_request_size_bytes)?;
        s.accumulator.reserve(size).await?;
        s.accumulator.append(&record, partitions, size)
    }

    /// The partition count of `topic`, waiting at most `max.block.ms` for its metadata.
    async fn partitions_within_max_block(&self, topic: &str) -> Result<i32> {
        let s = &*self.shared;
        let max_block = Duration::from_millis(s.config.max_block_ms);
        let partitions = match s.cluster.cached_topic(topic) {
            Some(t) => t.partitions.len() as i32,
            None => tokio::time::timeout(max_block, s.cluster.topic(topic))
                .await
                .map_err(|_| Error::Timeout {
                    timeout_ms: s.config.max_block_ms,
                    what: format!("metadata of topic {topic}"),
                })??
                .partitions
                .len() as i32,
        };
        if partitions == 0 {
            return Err(Error::broker(5, format!("topic {topic}")).expect("error"));
        }
        Ok(partitions)
    }

    /// Sends every batch now, lingering or not, and waits until all records sent before the
    /// call are acknowledged or failed.
    pub async fn flush(&self) {
        self.shared.accumulator.flush().await;
    }

    /// Flushes, then stops the sender; later sends fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        self.flush().await;
        self.shared.accumulator.close();
        Ok(())
    }

    /// The partitions of `topic`, from metadata.
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        Ok(self.shared.cluster.topic(topic).await?.partitions.len() as i32)
    }
}

/// The buffer memory `record` takes (an upper bound of its bytes in a batch), checked against
/// `max.request.size`, and its partition, if it names one, against the topic's `partitions`.
fn check_record(
    record: &ProducerRecord,
    partitions: i32,
    max_request_size_bytes: usize,
) -> Result<usize> {
    if let Some(p) = record.partition {
        if p < 0 || p >= partitions {
            return Err(Error::InvalidArgument(format!(
                "partition {p} of topic {} (it has {partitions})",
                record.topic
            )));
        }
    }
    let size = BatchBuilder::record_size_upper_bound(
        record.key.as_deref(),
        record.value.as_deref(),
        &record.headers,
    );
    // 61 bytes of batch header: a record that does not fit in a request with one never can.
    if size + 61 > max_request_size_bytes {
        return Err(Error::InvalidArgument(format!(
            "a record of {size} bytes is larger than max.request.size ({max_request_size_bytes})"
        )));
    }
    Ok(size)
}

impl ProducerState {
    /// Whether `batch`'s sequence belongs to an epoch that is over or ending, so that the
    /// broker's OUT_OF_ORDER_SEQUENCE_NUMBER for it is cured by sending it again.
    fn epoch_moving_on(&self, batch: &Batch) -> bool {
        self.accumulator.epoch_bump_pending()
            || self
                .identity
                .stamped_in_another_epoch(batch.encoded.as_ref())
    }
}

async fn run_sender(s: Arc<ProducerState>) {
    loop {
        let metadata = |topic: &str| s.cluster.cached_topic(topic);
        let (drained, done) = s.accumulator.drain(Instant::now(), &s.identity, &metadata);
        for batch in drained.expired {
            let e = Error::Timeout {
                timeout_ms: s.config.delivery_timeout_ms,
                what: format!(
                    "delivery of a batch to {}-{} (delivery.timeout.ms)",
                    batch.topic, batch.partition
                ),
            };
            s.accumulator.complete(batch, Err(e), false);
        }
        if !drained.unknown_topics.is_empty() && !s.refreshing.swap(true, Ordering::AcqRel) {
            let s2 = s.clone();
            let topics = drained.unknown_topics;
            tokio::spawn(async move {
                if let Err(e) = s2.cluster.refresh(&topics).await {
                    tracing::debug!(%e, "metadata refresh failed");
                }
                s2.refreshing.store(false, Ordering::Release);
                s2.accumulator.wake_sender.notify_one();
            });
        }
        for (leader, batches) in drained.by_leader {
            // Requests to a leader carry at most one batch per partition (a broker keeps one
            // entry per partition): the k-th batch of each partition goes in the k-th request,
            // and requests are split where they would pass max.request.size.
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
            for round in rounds {
                let mut request = Vec::new();
                let mut request_bytes = 0;
                for b in round {
                    let size = b.size_bytes;
                    if !request.is_empty() && request_bytes + size > s.config.max_request_size_bytes
                    {
                        dispatch(&s, leader, std::mem::take(&mut request));
                        request_bytes = 0;
                    }
                    request_bytes += size;
                    request.push(b);
                }
                if !request.is_empty() {
                    dispatch(&s, leader, request);
                }
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

/// A produce request handed to its connection: the response to come, and its batches.
type PendingProduce = (
    Pin<Box<dyn Future<Output = Result<quipu_protocol::messages::ProduceResponse>> + Send>>,
    Vec<Batch>,
);

/// Queues a request for `leader`'s task, starting the task if there is none.
fn dispatch(s: &Arc<ProducerState>, leader: i32, batches: Vec<Batch>) {
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
                Ok(r) => handle_response(&s2, batches, r),
                Err(e) => fail_or_retry(&s2, batches, &e),
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
    s: &Arc<ProducerState>,
    leader: i32,
    responses: &mpsc::UnboundedSender<PendingProduce>,
    mut batches: Vec<Batch>,
) {
    let prepared: Result<()> = async {
        let producer = if s.config.idempotent() {
            s.identity.fields(&s.cluster).await?
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
                        .finish(s.config.compression.codec(), fields)
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?
                }
                Some(bytes) => restamp(bytes, fields)?,
            });
        }
        Ok(())
    }
    .await;
    if let Err(e) = prepared {
        return fail_or_retry(s, batches, &e);
    }
    let conn = match s.cluster.connection(leader).await {
        Ok(c) => c,
        Err(e) => return fail_or_retry(s, batches, &e),
    };
    if s.config.idempotent() {
        // A batch whose partition has an earlier batch queued again must follow it.
        let (bounced, kept): (Vec<Batch>, Vec<Batch>) = batches
            .into_iter()
            .partition(|b| s.accumulator.partition_retrying(b));
        if !bounced.is_empty() {
            let e = Error::Disconnected {
                addr: conn.addr.clone(),
                reason: "an earlier batch of the partition is being sent again".into(),
            };
            fail_or_retry(s, bounced, &e);
        }
        batches = kept;
        if batches.is_empty() {
            return;
        }
    }
    let version = match conn.version_for::<ProduceRequest>() {
        Ok(v) => v.min(MAX_PRODUCE_VERSION),
        Err(e) => return fail_or_retry(s, batches, &e),
    };
    let mut topics: Vec<TopicRecords<'_>> = Vec::new();
    for b in &batches {
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
    let timeout_ms = s.config.client.request_timeout_ms.min(i32::MAX as u64) as i32;
    let request = encode_produce_request(version, None, s.config.acks.code(), timeout_ms, &topics);
    drop(topics);
    if s.config.acks == Acks::None {
        let sent = conn
            .send_chunks_no_response::<ProduceRequest>(request, version)
            .await;
        for b in batches {
            match &sent {
                Ok(()) => s.accumulator.complete(
                    b,
                    Ok(BatchAck {
                        base_offset: -1,
                        log_append_time_ms: -1,
                    }),
                    true,
                ),
                Err(e) => fail_or_retry(s, vec![b], e),
            }
        }
        return;
    }
    let response = match conn.start_chunks::<ProduceRequest>(request, version).await {
        Ok(r) => r,
        Err(e) => return fail_or_retry(s, batches, &e),
    };
    if let Err(mpsc::error::SendError((_, batches))) = responses.send((Box::pin(response), batches))
    {
        fail_or_retry(s, batches, &Error::Closed);
    }
}

/// Completes or retries each batch after the broker's answer for its partition.
fn handle_response(
    s: &Arc<ProducerState>,
    batches: Vec<Batch>,
    response: quipu_protocol::messages::ProduceResponse,
) {
    let mut results: HashMap<(&str, i32), (i16, i64, i64, String)> = HashMap::new();
    for t in &response.responses {
        for p in &t.partition_responses {
            results.insert(
                (t.name.0.as_str(), p.index),
                (
                    p.error_code,
                    p.base_offset,
                    p.log_append_time_ms,
                    p.error_message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                ),
            );
        }
    }
    let mut outcomes = Vec::with_capacity(batches.len());
    for b in &batches {
        outcomes.push(results.get(&(&*b.topic, b.partition)).cloned());
    }
    drop(results);
    for (b, outcome) in batches.into_iter().zip(outcomes) {
        match outcome {
            None => {
                let e = Error::Protocol(format!(
                    "produce response without partition {}-{}",
                    b.topic, b.partition
                ));
                s.accumulator.complete(b, Err(e), true);
            }
            Some((0, base_offset, log_append_time_ms, _)) => s.accumulator.complete(
                b,
                Ok(BatchAck {
                    base_offset,
                    log_append_time_ms,
                }),
                true,
            ),
            Some((code, base_offset, log_append_time_ms, message)) => {
                let error = ResponseError::try_from_code(code).expect("non-zero");
                if error == ResponseError::DuplicateSequenceNumber {
                    // Written before: the broker already holds the batch.
                    s.accumulator.complete(
                        b,
                        Ok(BatchAck {
                            base_offset,
                            log_append_time_ms,
                        }),
                        true,
                    );
                    continue;
                }
                let context = if message.is_empty() {
                    format!("produce to {}-{}", b.topic, b.partition)
                } else {
                    format!("produce to {}-{} ({message})", b.topic, b.partition)
                };
                let e = Error::Broker { error, context };
                fail_or_retry(s, vec![b], &e);
            }
        }
    }
}

fn fail_or_retry(s: &Arc<ProducerState>, batches: Vec<Batch>, error: &Error) {
    if error.invalidates_metadata() {
        for b in &batches {
            s.cluster.invalidate(&b.topic);
        }
    }
    let delivery_timeout = Duration::from_millis(s.config.delivery_timeout_ms);
    for b in batches {
        let out_of_order = error.broker_error() == Some(ResponseError::OutOfOrderSequenceNumber);
        let retriable = error.is_retriable()
            || (out_of_order && (s.accumulator.partition_retrying(&b) || s.epoch_moving_on(&b)));
        if retriable && b.attempts < s.config.retries && b.created.elapsed() < delivery_timeout {
            s.accumulator.requeue(b, error);
        } else {
            s.accumulator.complete(b, Err(error.clone()), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_must_name_an_existing_partition_and_fit_in_a_request() {
        let fits = ProducerRecord::new("t", vec![0u8; 100]).with_partition(2);
        let size = check_record(&fits, 3, 1_000).unwrap();
        assert!(size >= 100, "an upper bound of the record's bytes: {size}");
        let no_partition = ProducerRecord::new("t", "v").with_partition(3);
        assert!(matches!(
            check_record(&no_partition, 3, 1_000),
            Err(Error::InvalidArgument(_))
        ));
        let negative = ProducerRecord::new("t", "v").with_partition(-1);
        assert!(check_record(&negative, 3, 1_000).is_err());
        let large = ProducerRecord::new("t", vec![0u8; 1_000]);
        let e = check_record(&large, 3, 1_000).unwrap_err();
        assert!(e.to_string().contains("max.request.size"), "{e}");
    }
}
