//! The Quipu broker: a Kafka-protocol server over an append-only log.
//!
//! - The storage engine is the `quipu-storage` crate (`quipu_storage::log`).
//! - [`partition`]: a partition's log with its high watermark and the waiters on it.
//! - [`controller`]: turns admin changes into metadata records and commits them through a
//!   [`commit_log::MetadataLog`]: the Raft [`quorum`] (of one voter on a single node, which
//!   upgrades a [`metadata_log`] file of an earlier release); [`applier`]: the one path from a committed
//!   batch to the image; [`image`]: what the records add up to; [`snapshot`]: an image as
//!   records, and its digest; [`publisher`]: hands committed batches to [`metadata`] (the served
//!   topics and the [`replica_manager`]) and to the group coordinator.
//! - [`retention`]: deletes segments that retention no longer keeps; [`flusher`]: the flush
//!   policy and recovery points; [`log_cleaner`]: compaction of compacted topics;
//!   checkpoint files (`quipu_storage::checkpoint`).
//! - [`group`]: the group coordinator: consumer groups and committed offsets, kept in
//!   `__consumer_offsets`.
//! - [`broker`]: the broker's state; [`request_context`]: the part of it handlers reach.
//! - [`lifecycle`]: open, run the background tasks, serve, close.
//! - [`server`]: connections, framing, dispatch, responses in request order.
//! - [`api`]: one handler per Kafka API.

pub mod alter_partition_manager;
pub mod api;
pub mod applier;
pub mod broker;
pub mod clock;
pub mod commit_log;
pub mod controller;
pub mod election;
pub mod flusher;
pub mod group;
pub mod image;
pub mod lifecycle;
pub mod log_cleaner;
pub mod log_output;
pub mod metadata;
pub mod metadata_log;
pub mod partition;
pub mod publisher;
pub mod quorum;
pub mod reassignment;
pub mod replica_fetcher;
pub mod replica_manager;
pub mod replica_set;
pub mod request_context;
pub mod retention;
pub mod server;
#[cfg(test)]
mod simulation;
pub mod snapshot;
pub mod work_pool;
