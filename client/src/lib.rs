//! An asynchronous Kafka client on tokio, for Quipu and Apache Kafka alike.
//!
//! - [`Producer`]: batching (`batch.size`, `linger.ms`), the Java client's partitioning (murmur2
//!   for keys, sticky for records without one), every compression codec, acks 0/1/all, retries
//!   with backoff, idempotence, bounded in-flight requests and buffer memory, and a future per
//!   record that resolves to its partition and offset.
//! - [`Consumer`]: assigned partitions or a subscription through a consumer group (with
//!   rebalance callbacks); seek to an offset, the beginning, the end or a timestamp; automatic or
//!   manual commits; pause and resume; records whose keys and values are zero-copy [`bytes::Bytes`]
//!   slices of the fetch response.
//! - [`Admin`]: topics and partitions, configs, groups and their lag.
//!
//! Metadata is cached and refreshed when a broker says it is stale; requests that fail with a
//! retriable error (NOT_LEADER_OR_FOLLOWER, a lost connection…) are retried with backoff.
//!
//! ```no_run
//! use std::time::Duration;
//! use quipu_client::{Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord};
//!
//! # async fn demo() -> quipu_client::Result<()> {
//! let producer = Producer::new(ProducerConfig::new("localhost:9092"))?;
//! let written = producer
//!     .send(ProducerRecord::new("greetings", "hello").with_key("user-1"))
//!     .await? // queued in its partition's batch
//!     .await?; // acknowledged
//! println!("written at {}-{}@{}", written.topic, written.partition, written.offset);
//!
//! let mut config = ConsumerConfig::new("localhost:9092").with_group("greeters");
//! config.auto_offset_reset = OffsetReset::Earliest;
//! let mut consumer = Consumer::new(config)?;
//! consumer.subscribe(&["greetings"])?;
//! for record in consumer.poll(Duration::from_secs(5)).await? {
//!     println!("{:?} = {:?}", record.key, record.value);
//! }
//! consumer.close().await?;
//! producer.close().await
//! # }
//! ```
//!
//! Module map, each module importing only those before it: [`error`], [`config`] (settings),
//! `connection` (one pipelined connection), `cluster` (metadata and connections),
//! `topic_partition`, [`partitioner`], `assignor`, [`producer`] (`accumulator`, `sender`,
//! `idempotence`, `delivery`, `record`), `group_member` (`join`, `consumer_protocol`,
//! `heartbeat`, `commits`, `membership`), [`consumer`] (`subscription`, `fetcher`, `record`,
//! `offsets`, `rebalance`), [`admin`].

#![warn(missing_docs)]

pub mod admin;
mod assignor;
mod cluster;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod error;
mod group_member;
pub mod partitioner;
pub mod producer;
#[cfg(test)]
mod test_support;
mod topic_partition;

pub use admin::Admin;
pub use cluster::{PartitionMetadata, TopicMetadata};
pub use config::{Acks, ClientConfig, Compression, ConsumerConfig, OffsetReset, ProducerConfig};
pub use consumer::{Consumer, ConsumerRecord, RebalanceListener, TopicPartition};
pub use error::{Error, Result};
pub use group_member::Generation;
pub use producer::{DeliveryFuture, Producer, ProducerRecord, RecordMetadata};
pub use quipu_protocol::ResponseError;
