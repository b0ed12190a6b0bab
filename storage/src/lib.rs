//! Quipu's storage engine: a partition's log on disk, in Kafka's layout.
//!
//! - [`log`]: the partition `Log` (validate, append, read, roll, flush, retention, truncate,
//!   recovery) and its parts: segments, offset and time indexes, the leader-epoch cache,
//!   producer state, and the cleaner that compacts one log.
//! - [`checkpoint`]: Kafka's offset checkpoint files.
//! - [`log_manager`]: the data directory and every log in it: the lock, opening and recovering
//!   the live partitions' logs, making and removing partition directories, the checkpoints and
//!   the clean-shutdown marker.
//! - [`parallel`]: blocking per-partition work over a few scoped threads.
//!
//! Invariant: the crate depends on no network, runtime or replication code (it has no tokio
//! and no broker dependency), so the compiler keeps storage apart from the layers above it.

pub mod checkpoint;
pub mod log;
pub mod log_manager;
pub mod parallel;
