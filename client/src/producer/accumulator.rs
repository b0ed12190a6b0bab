//! The producer's batches: records appended to an open batch per partition under
//! `buffer.memory`, batches sealed when full (`batch.size`) or old enough (`linger.ms`), queued
//! per partition, drained for sending by leader, queued again for a retry, and completed.
//!
//! Invariants:
//! - Bytes of records not yet acknowledged stay within `buffer.memory`: `reserve` takes permits
//!   of a semaphore for each record before it is appended (waiting at most `max.block.ms`), and
//!   they come back when its batch is acknowledged or fails.
//! - A partition's batches leave in queue order; at most `max.in.flight.requests.per.connection`
//!   of them are in flight, all to one leader, and after a retriable failure none is sent until
//!   the in-flight ones are back and the failed one goes first again (in sequence order).
//! - Nothing is sent while an epoch bump waits for the batches in flight; the bump happens with
//!   nothing in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::FutureExt;
use quipu_protocol::batch_builder::BatchBuilder;
use tokio::sync::{oneshot, Notify, Semaphore};

use crate::cluster::TopicMetadata;
use crate::config::ProducerConfig;
use crate::error::{Error, Result};
use crate::partitioner::{partition_for_key, StickyPartitioner};

use super::delivery::{BatchAck, BatchOutcome, DeliveryFuture};
use super::idempotence::{ProducerIdentity, Sequencing};
use super::record::ProducerRecord;

/// Batch buffers kept for reuse.
const MAX_POOLED_BUFFERS: usize = 32;

struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    memory_bytes: usize,
    reply: oneshot::Sender<Result<BatchAck>>,
    outcome: BatchOutcome,
}

impl OpenBatch {
    /// Appends `record` (`size_bytes` of buffer memory), stamped `timestamp_ms`.
    fn append(
        &mut self,
        record: &ProducerRecord,
        timestamp_ms: i64,
        size_bytes: usize,
        topic: &Arc<str>,
        partition: i32,
    ) -> DeliveryFuture {
        let offset_delta = self.builder.record_count();
        self.builder.append(
            timestamp_ms,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        self.memory_bytes += size_bytes;
        DeliveryFuture::new(
            self.outcome.clone(),
            topic.clone(),
            partition,
            offset_delta,
            timestamp_ms,
        )
    }

    /// The batch, taking no more records.
    fn close(self, topic: &Arc<str>, partition: i32) -> Batch {
        Batch {
            topic: topic.clone(),
            partition,
            record_count: self.builder.record_count(),
            size_bytes: self.builder.size_bytes(),
            builder: Some(self.builder),
            encoded: None,
            base_sequence: None,
            created: self.created,
            memory_bytes: self.memory_bytes,
            attempts: 0,
            retry_after: None,
            reply: self.reply,
        }
    }
}

/// A batch no longer taking records: queued, in flight, or queued again for a retry.
pub(super) struct Batch {
    pub topic: Arc<str>,
    pub partition: i32,
    /// The records until the batch is first encoded (`encoded` then holds them).
    pub builder: Option<BatchBuilder>,
    pub record_count: i32,
    pub size_bytes: usize,
    pub encoded: Option<Bytes>,
    pub base_sequence: Option<i32>,
    pub created: Instant,
    memory_bytes: usize,
    pub attempts: u32,
    retry_after: Option<Instant>,
    reply: oneshot::Sender<Result<BatchAck>>,
}

#[cfg(test)]
impl Batch {
    /// A batch of `size_bytes` bytes of `topic`'s `partition` that was never appended to, for
    /// the tests of what is done with batches.
    pub(super) fn for_test(topic: &str, partition: i32, size_bytes: usize) -> Self {
        Batch {
            topic: Arc::from(topic),
            partition,
            builder: None,
            record_count: 1,
            size_bytes,
            encoded: None,
            base_sequence: None,
            created: Instant::now(),
            memory_bytes: 0,
            attempts: 0,
            retry_after: None,
            reply: oneshot::channel().0,
        }
    }
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

    /// Queues the open batch for sending.
    fn seal(&mut self, topic: &Arc<str>, partition: i32) {
        let open = self.open.take().expect("an open batch");
        self.ready.push_back(open.close(topic, partition));
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

/// Batches to send, grouped by leader, and when to look again.
#[derive(Default)]
pub(super) struct Drained {
    pub by_leader: HashMap<i32, Vec<Batch>>,
    pub next_wakeup: Option<Instant>,
    pub unknown_topics: Vec<String>,
    pub expired: Vec<Batch>,
}

impl Drained {
    fn wake_at(&mut self, t: Instant) {
        self.next_wakeup = Some(self.next_wakeup.map_or(t, |w: Instant| w.min(t)));
    }
}

pub(super) struct Accumulator {
    config: ProducerConfig,
    queues: Mutex<Queues>,
    memory: Semaphore,
    /// Batches appended to and not yet completed.
    outstanding: AtomicUsize,
    /// Woken when there may be something to send.
    pub wake_sender: Notify,
    idle: Notify,
    /// Buffers of acknowledged uncompressed batches, reused for new batches: fresh large
    /// allocations cost page faults and zeroed pages. At most `MAX_POOLED_BUFFERS`.
    pool: Mutex<Vec<BytesMut>>,
}

impl Accumulator {
    pub fn new(config: ProducerConfig) -> Self {
        Self {
            memory: Semaphore::new(config.buffer_memory_bytes),
            config,
            queues: Mutex::new(Queues::default()),
            outstanding: AtomicUsize::new(0),
            wake_sender: Notify::new(),
            idle: Notify::new(),
            pool: Mutex::new(Vec::new()),
        }
    }

    /// Takes `size_bytes` of buffer memory for a record, waiting at most `max.block.ms`.
    pub async fn reserve(&self, size_bytes: usize) -> Result<()> {
        let max_block = Duration::from_millis(self.config.max_block_ms);
        let permits = u32::try_from(size_bytes).expect("bounded by max.request.size");
        match self.memory.try_acquire_many(permits) {
            Ok(permit) => permit.forget(),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Error::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                tokio::time::timeout(max_block, self.memory.acquire_many(permits))
                    .await
                    .map_err(|_| Error::Timeout {
                        timeout_ms: self.config.max_block_ms,
                        what: "buffer memory (buffer.memory is full)".into(),
                    })?
                    .map_err(|_| Error::Closed)?
                    .forget();
            }
        }
        Ok(())
    }

    /// Appends `record`, for which `size_bytes` were reserved, to its partition's batch (of a
    /// topic of `partitions` partitions); gives the memory back if the producer is closed.
    pub fn append(
        &self,
        record: &ProducerRecord,
        partitions: i32,
        size_bytes: usize,
    ) -> Result<DeliveryFuture> {
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let mut q = self.queues.lock().expect("producer queues");
        if q.closed {
            drop(q);
            self.memory.add_permits(size_bytes);
            return Err(Error::Closed);
        }
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => q.sticky.partition(&record.topic, partitions),
        };
        let sticky_record = record.key.is_none() && record.partition.is_none();
        let Queues { topics, sticky, .. } = &mut *q;
        let (topic, pq) = partition_queue(topics, &record.topic, partitions, partition);
        let batch_size = self.config.batch_size_bytes;
        let mut wake = false;
        let full = pq.open.as_ref().is_some_and(|b| {
            b.builder.record_count() > 0 && b.builder.size_bytes() + size_bytes > batch_size
        });
        if full {
            pq.seal(&topic, partition);
            if sticky_record {
                sticky.batch_full(&record.topic, partition, partitions);
            }
            wake = true;
        }
        if pq.open.is_none() {
            pq.open = Some(self.open_batch());
            wake = true;
        }
        let open = pq.open.as_mut().expect("opened above");
        let future = open.append(record, timestamp_ms, size_bytes, &topic, partition);
        if open.builder.size_bytes() >= batch_size {
            pq.seal(&topic, partition);
            if sticky_record {
                sticky.batch_full(&record.topic, partition, partitions);
            }
            wake = true;
        }
        drop(q);
        if wake {
            self.wake_sender.notify_one();
        }
        Ok(future)
    }

    fn open_batch(&self) -> OpenBatch {
        let (reply, rx) = oneshot::channel();
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        OpenBatch {
            // Room for a whole batch up front: no reallocation while it fills.
            builder: match self.pool.lock().expect("buffer pool").pop() {
                Some(buffer) => BatchBuilder::with_buffer(buffer),
                None => BatchBuilder::new(self.config.batch_size_bytes + 64),
            },
            created: Instant::now(),
            memory_bytes: 0,
            reply,
            outcome: rx.shared(),
        }
    }

    /// Sends every batch now, lingering or not, and waits until all records appended before
    /// the call are acknowledged or failed.
    pub async fn flush(&self) {
        self.queues.lock().expect("producer queues").flushing += 1;
        self.wake_sender.notify_one();
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            idle.await;
        }
        self.queues.lock().expect("producer queues").flushing -= 1;
    }

    /// Takes no more records; the sender stops once everything queued is done.
    pub fn close(&self) {
        self.queues.lock().expect("producer queues").closed = true;
        self.wake_sender.notify_one();
    }

    /// The batches to send now, by leader (`metadata` gives a topic's cached leaders), and
    /// whether the producer is closed with nothing left to send.
    pub fn drain(
        &self,
        now: Instant,
        identity: &ProducerIdentity,
        metadata: &dyn Fn(&str) -> Option<Arc<TopicMetadata>>,
    ) -> (Drained, bool) {
        let mut out = Drained::default();
        let mut q = self.queues.lock().expect("producer queues");
        if q.epoch_bump_pending {
            let in_flight: usize = q.topics.values().flatten().map(|pq| pq.in_flight).sum();
            if in_flight == 0 {
                bump_epoch(&mut q, identity);
            }
        }
        // Waiting for the in-flight batches before a new epoch: nothing is sent meanwhile.
        let hold = q.epoch_bump_pending;
        let flush = q.flushing > 0 || q.closed;
        for (topic, partitions) in q.topics.iter_mut() {
            let meta = metadata(topic);
            for (index, pq) in partitions.iter_mut().enumerate() {
                self.seal_lingering(pq, topic, index as i32, flush, now, &mut out);
                self.expire(pq, now, &mut out);
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
                    out.wake_at(now + Duration::from_millis(self.config.client.retry_backoff_ms));
                    continue;
                };
                self.take_ready(pq, leader, now, &mut out);
            }
        }
        out.unknown_topics.sort();
        out.unknown_topics.dedup();
        let done = q.closed
            && q.topics
                .values()
                .flatten()
                .all(|pq| pq.open.is_none() && pq.ready.is_empty() && pq.in_flight == 0);
        (out, done)
    }

    /// Queues the open batch once it lingered `linger.ms` (at once when flushing).
    fn seal_lingering(
        &self,
        pq: &mut PartitionQueue,
        topic: &Arc<str>,
        partition: i32,
        flush: bool,
        now: Instant,
        out: &mut Drained,
    ) {
        let Some(open) = &pq.open else { return };
        let due = open.created + Duration::from_millis(self.config.linger_ms);
        if flush || due <= now {
            pq.seal(topic, partition);
        } else {
            out.wake_at(due);
        }
    }

    /// Batches that waited past delivery.timeout.ms fail (unless already sent once).
    fn expire(&self, pq: &mut PartitionQueue, now: Instant, out: &mut Drained) {
        let delivery_timeout = Duration::from_millis(self.config.delivery_timeout_ms);
        while pq
            .ready
            .front()
            .is_some_and(|b| b.attempts == 0 && now.duration_since(b.created) > delivery_timeout)
        {
            out.expired.push(pq.ready.pop_front().expect("checked"));
        }
    }

    /// Moves the batches `pq` may send now to `leader`'s list, assigning sequences to those
    /// sent for the first time.
    fn take_ready(&self, pq: &mut PartitionQueue, leader: i32, now: Instant, out: &mut Drained) {
        if pq.in_flight > 0 && (pq.retrying || pq.in_flight_leader != leader) {
            return;
        }
        let idempotent = self.config.idempotent();
        let limit = pq.sequence.in_flight_limit(
            idempotent,
            self.config.max_in_flight_requests_per_connection,
        );
        while pq.in_flight < limit {
            let Some(head) = pq.ready.front() else { break };
            if let Some(t) = head.retry_after {
                if t > now {
                    out.wake_at(t);
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

    /// Whether an epoch bump waits for the batches in flight.
    pub fn epoch_bump_pending(&self) -> bool {
        self.queues
            .lock()
            .expect("producer queues")
            .epoch_bump_pending
    }

    /// Whether `b`'s partition has a batch queued again after a failure.
    pub fn partition_retrying(&self, b: &Batch) -> bool {
        let q = self.queues.lock().expect("producer queues");
        q.topics
            .get(&b.topic)
            .and_then(|p| p.get(b.partition as usize))
            .is_some_and(|pq| pq.retrying)
    }

    /// A batch is finished (acknowledged or failed for good).
    pub fn complete(&self, batch: Batch, result: Result<BatchAck>, was_in_flight: bool) {
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
    pub fn requeue(&self, mut batch: Batch, error: &Error) {
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

/// Moves an idempotent producer to its next epoch (a new producer id once the epochs run
/// out), every partition starting again at sequence 0. Called with nothing in flight.
fn bump_epoch(q: &mut Queues, identity: &ProducerIdentity) {
    identity.next_epoch();
    for pq in q.topics.values_mut().flatten() {
        assert_eq!(pq.in_flight, 0, "an epoch changes with nothing in flight");
        pq.restart_sequences();
    }
    q.epoch_bump_pending = false;
}

/// The queue of `topic`'s partition `partition`, made (with the topic's others, up to
/// `partitions`) on first use, and the topic's shared name.
fn partition_queue<'q>(
    topics: &'q mut HashMap<Arc<str>, Vec<PartitionQueue>>,
    topic: &str,
    partitions: i32,
    partition: i32,
) -> (Arc<str>, &'q mut PartitionQueue) {
    let (topic_arc, queues) = match topics.get_key_value(topic) {
        Some((k, _)) => {
            let k = k.clone();
            (k.clone(), topics.get_mut(&k).expect("present"))
        }
        None => {
            let k: Arc<str> = Arc::from(topic);
            (k.clone(), topics.entry(k).or_default())
        }
    };
    if queues.len() < partitions as usize {
        queues.resize_with(partitions as usize, PartitionQueue::default);
    }
    (topic_arc, &mut queues[partition as usize])
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use crate::cluster::PartitionMetadata;
    use crate::config::Acks;

    use super::*;

    /// A producer config with `batch.size` of `batch_size_bytes` and `buffer.memory` of
    /// `buffer_memory_bytes`, lingering an hour (batches leave when full or flushed).
    fn config(batch_size_bytes: usize, buffer_memory_bytes: usize) -> ProducerConfig {
        let mut config = ProducerConfig::new("localhost:1");
        config.batch_size_bytes = batch_size_bytes;
        config.buffer_memory_bytes = buffer_memory_bytes;
        config.max_request_size_bytes = buffer_memory_bytes;
        config.linger_ms = 3_600_000;
        config.max_block_ms = 50;
        config.enable_idempotence = Some(false);
        config
    }

    fn idempotent(mut config: ProducerConfig) -> ProducerConfig {
        config.enable_idempotence = Some(true);
        config.acks = Acks::All;
        config
    }

    /// Topic `t` with `partitions` partitions, all led by broker 1.
    fn led_by_1(partitions: i32) -> impl Fn(&str) -> Option<Arc<TopicMetadata>> {
        move |topic: &str| {
            Some(Arc::new(TopicMetadata {
                name: topic.to_string(),
                is_internal: false,
                error_code: 0,
                partitions: (0..partitions)
                    .map(|partition| PartitionMetadata {
                        partition,
                        leader: 1,
                        leader_epoch: 0,
                        replicas: vec![1],
                        isr: vec![1],
                        error_code: 0,
                    })
                    .collect(),
            }))
        }
    }

    fn record(value_bytes: usize) -> ProducerRecord {
        ProducerRecord::new("t", vec![b'v'; value_bytes]).with_partition(0)
    }

    /// Reserves and appends `record(value_bytes)`, as `Producer::send` does.
    async fn send(a: &Accumulator, value_bytes: usize) -> Result<DeliveryFuture> {
        let r = record(value_bytes);
        let size =
            BatchBuilder::record_size_upper_bound(r.key.as_deref(), r.value.as_deref(), &r.headers);
        a.reserve(size).await?;
        a.append(&r, 1, size)
    }

    fn ack() -> Result<BatchAck> {
        Ok(BatchAck {
            base_offset: 0,
            log_append_time_ms: -1,
        })
    }

    fn drained(a: &Accumulator, identity: &ProducerIdentity) -> Vec<Batch> {
        let (mut out, _) = a.drain(Instant::now(), identity, &led_by_1(1));
        out.by_leader.remove(&1).unwrap_or_default()
    }

    #[tokio::test]
    async fn records_fill_a_batch_to_batch_size_and_a_full_batch_leaves_without_lingering() {
        let a = Accumulator::new(config(1_000, 100_000));
        let identity = ProducerIdentity::default();
        for _ in 0..25 {
            let _delivery = send(&a, 100).await.unwrap();
        }
        let batches = drained(&a, &identity);
        assert!(batches.len() >= 2, "{} batches", batches.len());
        for b in &batches {
            assert!(b.size_bytes <= 1_000, "a batch of {} bytes", b.size_bytes);
            assert!(b.record_count > 1);
        }
        let sent: i32 = batches.iter().map(|b| b.record_count).sum();
        assert!(sent < 25, "the last batch lingers");
        let (out, _) = a.drain(Instant::now(), &identity, &led_by_1(1));
        assert!(out.by_leader.is_empty());
        assert!(
            out.next_wakeup.is_some(),
            "woken when the open batch is due"
        );
    }

    #[tokio::test]
    async fn unacknowledged_bytes_stay_within_buffer_memory_until_their_batch_completes() {
        let a = Accumulator::new(config(1_000, 2_000));
        let identity = ProducerIdentity::default();
        let first = send(&a, 1_200).await.unwrap();
        let refused = send(&a, 1_200).await;
        assert!(
            matches!(&refused, Err(Error::Timeout { what, .. }) if what.contains("buffer.memory")),
            "{:?}",
            refused.as_ref().err()
        );
        a.close(); // flushes the open batch out of the drain
        let batches = drained(&a, &identity);
        assert_eq!(batches.len(), 1);
        for b in batches {
            a.complete(b, ack(), true);
        }
        assert_eq!(a.memory.available_permits(), 2_000, "all memory back");
        assert_eq!(first.await.unwrap().offset, 0);
    }

    #[tokio::test]
    async fn a_closed_accumulator_refuses_records_and_keeps_no_memory_for_them() {
        let a = Accumulator::new(config(1_000, 2_000));
        a.close();
        assert!(matches!(send(&a, 10).await, Err(Error::Closed)));
        assert_eq!(a.memory.available_permits(), 2_000);
        let (out, done) = a.drain(Instant::now(), &ProducerIdentity::default(), &led_by_1(1));
        assert!(out.by_leader.is_empty() && done, "closed with nothing left");
    }

    #[tokio::test]
    async fn an_idempotent_partition_sends_one_batch_until_acked_then_sequences_follow_the_queue() {
        let a = Accumulator::new(idempotent(config(300, 100_000)));
        let identity = ProducerIdentity::default();
        for _ in 0..6 {
            let _delivery = send(&a, 200).await.unwrap(); // one record a batch
        }
        a.close();
        let first = drained(&a, &identity);
        assert_eq!(
            first.len(),
            1,
            "one in flight before the first acknowledgement"
        );
        assert_eq!(first[0].base_sequence, Some(0));
        assert!(drained(&a, &identity).is_empty(), "still in flight");
        for b in first {
            a.complete(b, ack(), true);
        }
        let next = drained(&a, &identity);
        let sequences: Vec<Option<i32>> = next.iter().map(|b| b.base_sequence).collect();
        assert_eq!(sequences, [Some(1), Some(2), Some(3), Some(4), Some(5)]);
    }

    #[tokio::test]
    async fn failed_batches_go_out_again_in_sequence_order_once_none_is_in_flight() {
        let a = Accumulator::new(idempotent(config(300, 100_000)));
        let identity = ProducerIdentity::default();
        for _ in 0..3 {
            let _delivery = send(&a, 200).await.unwrap();
        }
        a.close();
        for b in drained(&a, &identity) {
            a.complete(b, ack(), true);
        }
        let mut in_flight = drained(&a, &identity);
        assert_eq!(in_flight.len(), 2);
        let second = in_flight.pop().unwrap();
        let first = in_flight.pop().unwrap();
        assert_eq!(
            (first.base_sequence, second.base_sequence),
            (Some(1), Some(2))
        );
        // The later batch fails first: nothing goes out while the earlier one is in flight.
        a.requeue(second, &Error::Closed);
        assert!(a.partition_retrying(&first));
        let later = Instant::now() + Duration::from_secs(5);
        let (out, _) = a.drain(later, &identity, &led_by_1(1));
        assert!(out.by_leader.is_empty(), "not while batch 1 is in flight");
        a.requeue(first, &Error::Closed);
        let (mut out, _) = a.drain(later, &identity, &led_by_1(1));
        let again: Vec<Option<i32>> = out
            .by_leader
            .remove(&1)
            .unwrap()
            .iter()
            .map(|b| b.base_sequence)
            .collect();
        assert_eq!(
            again,
            [Some(1), Some(2)],
            "again in sequence order, same sequences"
        );
    }

    #[tokio::test]
    async fn a_partition_without_a_leader_waits_for_metadata() {
        let a = Accumulator::new(config(1_000, 100_000));
        let _delivery = send(&a, 10).await.unwrap();
        a.close();
        let (out, done) = a.drain(Instant::now(), &ProducerIdentity::default(), &|_| None);
        assert!(out.by_leader.is_empty() && !done);
        assert_eq!(out.unknown_topics, ["t"]);
        assert!(
            out.next_wakeup.is_some(),
            "looks again after retry.backoff.ms"
        );
    }

    #[tokio::test]
    async fn a_batch_never_sent_expires_after_delivery_timeout() {
        let mut c = config(1_000, 100_000);
        c.delivery_timeout_ms = 100;
        let a = Accumulator::new(c);
        let _delivery = send(&a, 10).await.unwrap();
        a.close();
        let later = Instant::now() + Duration::from_secs(1);
        let (out, _) = a.drain(later, &ProducerIdentity::default(), &led_by_1(1));
        assert!(out.by_leader.is_empty());
        assert_eq!(out.expired.len(), 1);
    }
}
