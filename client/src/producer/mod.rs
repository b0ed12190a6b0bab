//! The producer: records are appended to per-partition batches, and a background sender task
//! sends each batch to its partition's leader once it is full (`batch.size`) or old enough
//! (`linger.ms`), retries what a retry may cure, and resolves every record's future to its
//! partition and offset.
//!
//! [`Producer`] checks a record and hands it to the pieces: `accumulator` (batches under
//! `buffer.memory`), `sender` (requests per leader, answers in order, retries), `idempotence`
//! (producer id, epochs, sequences), `delivery` (a record's future) and `record`.
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

use std::sync::Arc;
use std::time::Duration;

use quipu_protocol::batch_builder::BatchBuilder;

use crate::cluster::Cluster;
use crate::config::ProducerConfig;
use crate::error::{Error, Result};

use self::accumulator::Accumulator;

pub use self::delivery::{DeliveryFuture, RecordMetadata};
pub use self::record::ProducerRecord;

mod accumulator;
mod delivery;
mod idempotence;
mod record;
mod sender;

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
    config: Arc<ProducerConfig>,
    cluster: Arc<Cluster>,
    accumulator: Arc<Accumulator>,
}

impl Producer {
    /// A producer with `config`; connects on first use. Must be called within a tokio runtime.
    pub fn new(config: ProducerConfig) -> Result<Self> {
        config.validate()?;
        let cluster = Cluster::new(
            config.client.clone(),
            config.max_in_flight_requests_per_connection,
        )?;
        let accumulator = Arc::new(Accumulator::new(config.clone()));
        sender::start(config.clone(), cluster.clone(), accumulator.clone());
        Ok(Self {
            config: Arc::new(config),
            cluster,
            accumulator,
        })
    }

    /// Appends `record` to its partition's batch and returns a future of its acknowledgement.
    /// Waits (at most `max.block.ms`) for the topic's metadata and for buffer memory.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let partitions = self.partitions_within_max_block(&record.topic).await?;
        let size = check_record(&record, partitions, self.config.max_request_size_bytes)?;
        self.accumulator.reserve(size).await?;
        self.accumulator.append(&record, partitions, size)
    }

    /// The partition count of `topic`, waiting at most `max.block.ms` for its metadata.
    async fn partitions_within_max_block(&self, topic: &str) -> Result<i32> {
        let max_block = Duration::from_millis(self.config.max_block_ms);
        let partitions = match self.cluster.cached_topic(topic) {
            Some(t) => t.partitions.len() as i32,
            None => tokio::time::timeout(max_block, self.cluster.topic(topic))
                .await
                .map_err(|_| Error::Timeout {
                    timeout_ms: self.config.max_block_ms,
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
        self.accumulator.flush().await;
    }

    /// Flushes, then stops the sender; later sends fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        self.flush().await;
        self.accumulator.close();
        Ok(())
    }

    /// The partitions of `topic`, from metadata.
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        Ok(self.cluster.topic(topic).await?.partitions.len() as i32)
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
