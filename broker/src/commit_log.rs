//! The interface the controller commits metadata batches through ([`MetadataLog`]), and why a
//! commit fails ([`CommitError`]). The Raft quorum (`quorum`, of one voter on a single node)
//! implements it; the controller knows only whether this node is the whole cluster.
//!
//! Invariant: a commit that returns `Ok` is durable (on a quorum, held by a majority) and applied
//! to this node's image; one that returns an error other than `NoController` changed nothing.

use crate::applier::ApplyFailure;
use crate::image::ApplyError;
use crate::metadata_log::record::MetadataRecord;

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The batch does not apply to the image the log's records give; nothing was committed.
    #[error("a change that does not apply: {0}")]
    Refused(#[from] ApplyError),
    #[error("metadata log: {0}")]
    Io(#[from] std::io::Error),
    /// No active controller could take the batch in time; it may or may not be committed.
    #[error("{0}")]
    NoController(String),
}

impl From<ApplyFailure> for CommitError {
    fn from(e: ApplyFailure) -> Self {
        match e {
            ApplyFailure::Refused(e) => Self::Refused(e),
            ApplyFailure::Io(e) => Self::Io(e),
        }
    }
}

/// Where committed metadata records go: in batches, each durable (and, in a cluster,
/// committed by the quorum) before it takes effect, in one order every node applies.
pub trait MetadataLog: Send + Sync {
    /// Commits the records of one change as a batch (after a crash, all of them or none) and
    /// returns once this node's image has them.
    fn commit(&self, records: &[MetadataRecord]) -> Result<(), CommitError>;

    /// Whether this node is the whole cluster: it hosts every replica, so the controller makes a
    /// new partition's log before committing it (all or nothing).
    fn is_single_node(&self) -> bool;

    /// How many entries the log has committed: the offset the next one takes.
    fn committed_end(&self) -> i64;
}
