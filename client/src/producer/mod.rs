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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::FutureExt;
use quipu_protocol::batch_builder::{BatchBuilder, ProducerFields};
use quipu_protocol::messages::ProduceRequest;
use quipu_protocol::produce_request::{encode_produce_request, PartitionRecords, TopicRecords};
use quipu_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::cluster::Cluster;
use crate::config::{Acks, ProducerConfig};
use crate::error::{Error, Result};
use crate::partitioner::{partition_for_key, StickyPartitioner};

use self::delivery::{BatchAck, BatchOutcome};
use self::idempotence::{restamp, ProducerIdentity, Sequencing};

pub use self::delivery::{DeliveryFuture, RecordMetadata};
pub use self::record::ProducerRecord;

mod delivery;
mod idempotence;
mod record;

/// Highest Produce version used: v13 names topics by id.
const MAX_PRODUCE_VERSION: i16 = 11;

struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    memory_bytes: usize,
    reply: oneshot::Sender<Result<BatchAck>>,
    outcome: BatchOutcome,
}

/// A batch no longer taking records: queued, in flight, or queued again for a retry.
struct Batch {
    topic: Arc<str>,
    partition: i32,
    /// The records until the batch is first encoded (`encoded` then holds them).
    builder: Option<BatchBuilder>,
    record_count: i32,
    size_bytes: usize,
    encoded: Option<Bytes>,
    base_sequence: Option<i32>,
    created: Instant,
    memory_bytes: usize,
    attempts: u32,
    retry_after: Option<Instant>,
    reply: oneshot::Sender<Result<BatchAck>>,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<Batch>,
    in_flight: usize,
    /// The leader the in-flight batches went to: none go to another until they are back.
    in_flight_leader: i32,
    sequence: Sequencing,
    retrying: bool,
}

impl PartitionQueue {
    /// A new epoch: sequences start at 0 again, and queued batches get new ones when sent.
    fn restart_sequences(&mut self) {
        self.sequence.restart();
        self.retrying = false;
        for b in self.ready.iter_mut() {
            b.base_sequence = None;
        }
    }
}

#[derive(Default)]
struct Queues {
    topics: HashMap<Arc<str>, Vec<PartitionQueue>>,
    sticky: StickyPartitioner,
    flushing: usize,
    closed: bool,
    /// A sequenced batch failed for good: the epoch moves on once nothing is in flight.
    epoch_bump_pending: bool,
}

struct ProducerState {
    config: ProducerConfig,
    cluster: Arc<Cluster>,
    queues: Mutex<Queues>,
    memory: Semaphore,
    /// Batches appended to and not yet completed.
    outstanding: AtomicUsize,
    wake_sender: Notify,
    idle: Notify,
    identity: ProducerIdentity,
    refreshing: AtomicBool,
    /// One task per leader hands requests to its connection in drain order (sequence order).
    /// Unbounded, but what is queued is bounded by the in-flight batches per partition.
    leaders: Mutex<HashMap<i32, mpsc::UnboundedSender<Vec<Batch>>>>,
    /// Buffers of acknowledged uncompressed batches, reused for new batches: fresh large
    /// allocations cost page faults and zeroed pages. At most `MAX_POOLED_BUFFERS`.
    pool: Mutex<Vec<bytes::BytesMut>>,
}

/// Batch buffers kept for reuse.
const MAX_POOLED_BUFFERS: usize = 32;

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
            memory: Semaphore::new(config.buffer_memory_bytes),
            config,
            cluster,
            queues: Mutex::new(Queues::default()),
            outstanding: AtomicUsize::new(0),
            wake_sender: Notify::new(),
            idle: Notify::new(),
            identity: ProducerIdentity::default(),
            refreshing: AtomicBool::new(false),
            leaders: Mutex::new(HashMap::new()),
            pool: Mutex::new(Vec::new()),
        });
        tokio::spawn(run_sender(shared.clone()));
        Ok(Self { shared })
    }

    /// Appends `record` to its partition's batch and returns a future of its acknowledgement.
    /// Waits (at most `max.block.ms`) for the topic's metadata and for buffer memory.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let s = &*self.shared;
        let max_block = Duration::from_millis(s.config.max_block_ms);
        let partitions = match s.cluster.cached_topic(&record.topic) {
            Some(t) => t.partitions.len() as i32,
            None => tokio::time::timeout(max_block, s.cluster.topic(&record.topic))
                .await
                .map_err(|_| Error::Timeout {
                    timeout_ms: s.config.max_block_ms,
                    what: format!("metadata of topic {}", record.topic),
                })??
                .partitions
                .len() as i32,
        };
        if partitions == 0 {
            return Err(Error::broker(5, format!("topic {}", record.topic)).expect("error"));
        }
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
        if size + 61 > s.config.max_request_size_bytes {
            return Err(Error::InvalidArgument(format!(
                "a record of {size} bytes is larger than max.request.size ({})",
                s.config.max_request_size_bytes
            )));
        }
        let permits = u32::try_from(size).expect("bounded by max.request.size");
        match s.memory.try_acquire_many(permits) {
            Ok(permit) => permit.forget(),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Error::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                tokio::time::timeout(max_block, s.memory.acquire_many(permits))
                    .await
                    .map_err(|_| Error::Timeout {
                        timeout_ms: s.config.max_block_ms,
                        what: "buffer memory (buffer.memory is full)".into(),
                    })?
                    .map_err(|_| Error::Closed)?
                    .forget();
            }
        }
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let mut wake = false;
        let mut q = s.queues.lock().expect("producer queues");
        if q.closed {
            drop(q);
            s.memory.add_permits(size);
            return Err(Error::Closed);
        }
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => q.sticky.partition(&record.topic, partitions),
        };
        let Queues { topics, sticky, .. } = &mut *q;
        let (topic_arc, queues) = match topics.get_key_value(record.topic.as_str()) {
            Some((k, _)) => {
                let k = k.clone();
                (k.clone(), topics.get_mut(&k).expect("present"))
            }
            None => {
                let k: Arc<str> = Arc::from(record.topic.as_str());
                (k.clone(), topics.entry(k).or_default())
            }
        };
        if queues.len() < partitions as usize {
            queues.resize_with(partitions as usize, PartitionQueue::default);
        }
        let pq = &mut queues[partition as usize];
        let full = pq.open.as_ref().is_some_and(|b| {
            b.builder.record_count() > 0
                && b.builder.size_bytes() + size > s.config.batch_size_bytes
        });
        if full {
            let open = pq.open.take().expect("checked");
            pq.ready.push_back(close(open, &topic_arc, partition));
            if record.key.is_none() && record.partition.is_none() {
                sticky.batch_full(&record.topic, partition, partitions);
            }
            wake = true;
        }
        let open = pq.open.get_or_insert_with(|| {
            let (reply, rx) = oneshot::channel();
            s.outstanding.fetch_add(1, Ordering::AcqRel);
            wake = true;
            OpenBatch {
                // Room for a whole batch up front: no reallocation while it fills.
                builder: match s.pool.lock().expect("buffer pool").pop() {
                    Some(buffer) => BatchBuilder::with_buffer(buffer),
                    None => BatchBuilder::new(s.config.batch_size_bytes + 64),
                },
                created: Instant::now(),
                memory_bytes: 0,
                reply,
                outcome: rx.shared(),
            }
        });
        let offset_delta = open.builder.record_count();
        open.builder.append(
            timestamp_ms,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        open.memory_bytes += size;
        let future = DeliveryFuture::new(
            open.outcome.clone(),
            topic_arc,
            partition,
            offset_delta,
            timestamp_ms,
        );
        if open.builder.size_bytes() >= s.config.batch_size_bytes {
            let open = pq.open.take().expect("present");
            let topic = future.topic().clone();
            pq.ready.push_back(close(open, &topic, partition));
            if record.key.is_none() && record.partition.is_none() {
                sticky.batch_full(&record.topic, partition, partitions);
            }
            wake = true;
        }
        drop(q);
        if wake {
            s.wake_sender.notify_one();
        }
        Ok(future)
    }

    /// Sends every batch now, lingering or not, and waits until all records sent before the
    /// call are acknowledged or failed.
    pub async fn flush(&self) {
        let s = &*self.shared;
        s.queues.lock().expect("producer queues").flushing += 1;
        s.wake_sender.notify_one();
        loop {
            let idle = s.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if s.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            idle.await;
        }
        s.queues.lock().expect("producer queues").flushing -= 1;
    }

    /// Flushes, then stops the sender; later sends fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        self.flush().await;
        self.shared.queues.lock().expect("producer queues").closed = true;
        self.shared.wake_sender.notify_one();
        Ok(())
    }

    /// The partitions of `topic`, from metadata.
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        Ok(self.shared.cluster.topic(topic).await?.partitions.len() as i32)
    }
}

fn close(open: OpenBatch, topic: &Arc<str>, partition: i32) -> Batch {
    Batch {
        topic: topic.clone(),
        partition,
        record_count: open.builder.record_count(),
        size_bytes: open.builder.size_bytes(),
        builder: Some(open.builder),
        encoded: None,
        base_sequence: None,
        created: open.created,
        memory_bytes: open.memory_bytes,
        attempts: 0,
        retry_after: None,
        reply: open.reply,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Batches to send, grouped by leader, and when to look again.
struct Drained {
    by_leader: HashMap<i32, Vec<Batch>>,
    next_wakeup: Option<Instant>,
    unknown_topics: Vec<String>,
    expired: Vec<Batch>,
}

impl ProducerState {
    fn drain(&self, now: Instant) -> (Drained, bool) {
        let linger = Duration::from_millis(self.config.linger_ms);
        let delivery_timeout = Duration::from_millis(self.config.delivery_timeout_ms);
        let max_in_flight = self.config.max_in_flight_requests_per_connection;
        let idempotent = self.config.idempotent();
        let mut out = Drained {
            by_leader: HashMap::new(),
            next_wakeup: None,
            unknown_topics: Vec::new(),
            expired: Vec::new(),
        };
        let mut q = self.queues.lock().expect("producer queues");
        if q.epoch_bump_pending {
            let in_flight: usize = q.topics.values().flatten().map(|pq| pq.in_flight).sum();
            if in_flight == 0 {
                self.bump_epoch(&mut q);
            }
        }
        // Waiting for the in-flight batches before a new epoch: nothing is sent meanwhile.
        let hold = q.epoch_bump_pending;
        let flush = q.flushing > 0 || q.closed;
        let closed = q.closed;
        let wake_at = |t: Instant, out: &mut Drained| {
            out.next_wakeup = Some(out.next_wakeup.map_or(t, |w: Instant| w.min(t)));
        };
        for (topic, partitions) in q.topics.iter_mut() {
            let meta = self.cluster.cached_topic(topic);
            for (index, pq) in partitions.iter_mut().enumerate() {
                if let Some(open) = &pq.open {
                    let due = open.created + linger;
                    if flush || due <= now {
                        let open = pq.open.take().expect("checked");
                        pq.ready.push_back(close(open, topic, index as i32));
                    } else {
                        wake_at(due, &mut out);
                    }
                }
                // Batches that waited past delivery.timeout.ms fail (unless already sent once).
                while pq.ready.front().is_some_and(|b| {
                    b.attempts == 0 && now.duration_since(b.created) > delivery_timeout
                }) {
                    out.expired.push(pq.ready.pop_front().expect("checked"));
                }
                if pq.ready.is_empty() || hold {
                    continue;
                }
                let leader = meta
                    .as_ref()
                    .and_then(|m| m.partitions.get(index))
                    .map(|p| p.leader)
                    .filter(|l| *l >= 0);
                let Some(leader) = leader else {
                    out.unknown_topics.push(topic.to_string());
                    wake_at(
                        now + Duration::from_millis(self.config.client.retry_backoff_ms),
                        &mut out,
                    );
                    continue;
                };
                if pq.in_flight > 0 && (pq.retrying || pq.in_flight_leader != leader) {
                    continue;
                }
                let limit = pq.sequence.in_flight_limit(idempotent, max_in_flight);
                while pq.in_flight < limit {
                    let Some(head) = pq.ready.front() else { break };
                    if let Some(t) = head.retry_after {
                        if t > now {
                            wake_at(t, &mut out);
                            break;
                        }
                    }
                    let mut batch = pq.ready.pop_front().expect("checked");
                    if idempotent && batch.base_sequence.is_none() {
                        batch.base_sequence = Some(pq.sequence.assign(batch.record_count));
                    }
                    pq.retrying = false;
                    pq.in_flight += 1;
                    pq.in_flight_leader = leader;
                    out.by_leader.entry(leader).or_default().push(batch);
                }
            }
        }
        out.unknown_topics.sort();
        out.unknown_topics.dedup();
        let done = closed
            && q.topics
                .values()
                .flatten()
                .all(|pq| pq.open.is_none() && pq.ready.is_empty() && pq.in_flight == 0);
        (out, done)
    }

    /// Moves an idempotent producer to its next epoch (a new producer id once the epochs run
    /// out), every partition starting again at sequence 0. Called with nothing in flight.
    fn bump_epoch(&self, q: &mut Queues) {
        self.identity.next_epoch();
        for pq in q.topics.values_mut().flatten() {
            assert_eq!(pq.in_flight, 0, "an epoch changes with nothing in flight");
            pq.restart_sequences();
        }
        q.epoch_bump_pending = false;
    }

    /// Whether `batch`'s sequence belongs to an epoch that is over or ending, so that the
    /// broker's OUT_OF_ORDER_SEQUENCE_NUMBER for it is cured by sending it again.
    fn epoch_moving_on(&self, batch: &Batch) -> bool {
        if self
            .queues
            .lock()
            .expect("producer queues")
            .epoch_bump_pending
        {
            return true;
        }
        self.identity
            .stamped_in_another_epoch(batch.encoded.as_ref())
    }

    /// A batch is finished (acknowledged or failed for good).
    fn complete(&self, batch: Batch, result: Result<BatchAck>, was_in_flight: bool) {
        let lost_sequence = result.is_err() && batch.base_sequence.is_some();
        if was_in_flight || lost_sequence {
            let mut q = self.queues.lock().expect("producer queues");
            if let Some(pq) = q
                .topics
                .get_mut(&batch.topic)
                .and_then(|p| p.get_mut(batch.partition as usize))
            {
                if was_in_flight {
                    pq.in_flight -= 1;
                }
                pq.sequence.batch_done(result.is_ok());
            }
            if lost_sequence {
                q.epoch_bump_pending = true;
            }
        }
        let _ = batch.reply.send(result);
        self.memory.add_permits(batch.memory_bytes);
        if let Some(Ok(buffer)) = batch.encoded.map(Bytes::try_into_mut) {
            if buffer.capacity() >= self.config.batch_size_bytes {
                let mut pool = self.pool.lock().expect("buffer pool");
                if pool.len() < MAX_POOLED_BUFFERS {
                    pool.push(buffer);
                }
            }
        }
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
        self.wake_sender.notify_one();
    }

    /// A sent batch failed in a way a retry may cure: queue it again in sequence order.
    fn requeue(&self, mut batch: Batch, error: &Error) {
        batch.attempts += 1;
        batch.retry_after = Some(
            Instant::now()
                + Duration::from_millis(
                    self.config
                        .client
                        .retry_backoff_ms
                        .saturating_mul(1 << batch.attempts.min(4))
                        .min(1_000),
                ),
        );
        tracing::debug!(topic = %batch.topic, partition = batch.partition, attempts = batch.attempts, %error, "retrying a batch");
        let mut q = self.queues.lock().expect("producer queues");
        let pq = q
            .topics
            .get_mut(&batch.topic)
            .and_then(|p| p.get_mut(batch.partition as usize))
            .expect("a sent batch's partition stays queued");
        pq.in_flight -= 1;
        pq.retrying = true;
        let at = pq
            .ready
            .iter()
            .position(|b| match (b.base_sequence, batch.base_sequence) {
                (Some(other), Some(mine)) => other > mine,
                (None, _) => true,
                (Some(_), None) => false,
            })
            .unwrap_or(pq.ready.len());
        pq.ready.insert(at, batch);
        drop(q);
        self.wake_sender.notify_one();
    }
}

async fn run_sender(s: Arc<ProducerState>) {
    loop {
        let (drained, done) = s.drain(Instant::now());
        for batch in drained.expired {
            let e = Error::Timeout {
                timeout_ms: s.config.delivery_timeout_ms,
                what: format!(
                    "delivery of a batch to {}-{} (delivery.timeout.ms)",
                    batch.topic, batch.partition
                ),
            };
            s.complete(batch, Err(e), false);
        }
        if !drained.unknown_topics.is_empty() && !s.refreshing.swap(true, Ordering::AcqRel) {
            let s2 = s.clone();
            let topics = drained.unknown_topics;
            tokio::spawn(async move {
                if let Err(e) = s2.cluster.refresh(&topics).await {
                    tracing::debug!(%e, "metadata refresh failed");
                }
                s2.refreshing.store(false, Ordering::Release);
                s2.wake_sender.notify_one();
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
            _ = s.wake_sender.notified() => {}
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
        let (bounced, kept): (Vec<Batch>, Vec<Batch>) =
            batches.into_iter().partition(|b| partition_retrying(s, b));
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
                Ok(()) => s.complete(
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
                s.complete(b, Err(e), true);
            }
            Some((0, base_offset, log_append_time_ms, _)) => s.complete(
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
                    s.complete(
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
            || (out_of_order && (partition_retrying(s, &b) || s.epoch_moving_on(&b)));
        if retriable && b.attempts < s.config.retries && b.created.elapsed() < delivery_timeout {
            s.requeue(b, error);
        } else {
            s.complete(b, Err(error.clone()), true);
        }
    }
}

fn partition_retrying(s: &ProducerState, b: &Batch) -> bool {
    let q = s.queues.lock().expect("producer queues");
    q.topics
        .get(&b.topic)
        .and_then(|p| p.get(b.partition as usize))
        .is_some_and(|pq| pq.retrying)
}
