//! A consumer's membership of a group through the classic protocol, as the consumer sees it:
//! `GroupMember` starts a join and collects its assignment, keeps the flags the heartbeat
//! raises, commits, and leaves. The steps live beside it: `join` (JoinGroup and SyncGroup in a
//! task of their own; the leader computes the assignment), `consumer_protocol` (the
//! subscription and assignment bytes), `heartbeat`, `commits` (OffsetCommit, OffsetFetch) and
//! `membership` (the generation, the errors that end it, LeaveGroup).
//!
//! The member that computed the assignment watches the subscribed topics' partition counts
//! (every `metadata.max.age.ms`) and rejoins when they change, so new partitions (or a
//! subscribed topic created later) get consumed. A cooperative member sends the partitions it
//! owns with its subscription and keeps them, and its generation, while the group rebalances.
//!
//! Invariants: a generation's assignment is used only after SyncGroup returned it; the heartbeat
//! task only ever raises the "rejoin" and "lost" flags, which the consumer acts on in its next
//! poll; offsets are committed with the member's generation and id, so a member that was fenced
//! by a rebalance cannot overwrite its successor's commits (the coordinator answers
//! ILLEGAL_GENERATION); no commit is sent while the member rebalances.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quipu_protocol::ResponseError;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::config::ConsumerConfig;
use crate::error::{Error, Result};
use crate::topic_partition::TopicPartition;

use self::commits::{commit_request, send_commit};
use self::heartbeat::Liveness;
use self::join::{partition_counts, JoinOutcome, Joiner};
use self::membership::leave_group;

pub(crate) use self::commits::fetch_committed;
pub(crate) use self::consumer_protocol::decode_assignment;
pub use self::membership::Generation;

mod commits;
mod consumer_protocol;
mod heartbeat;
mod join;
mod membership;

pub(crate) struct GroupMember {
    pub group_id: String,
    instance_id: Option<String>,
    pub generation: Option<Generation>,
    member_id: String,
    rejoin: Arc<AtomicBool>,
    /// Raised when this member is out of its generation without a rebalance it took part in
    /// (fenced, or it left after a poll timeout): its partitions are lost, not revoked.
    lost: Arc<AtomicBool>,
    /// When the application last polled, in ms since `created`.
    last_poll_ms: Arc<AtomicU64>,
    created: Instant,
    heartbeat: Option<JoinHandle<()>>,
    /// A join under way: JoinGroup and SyncGroup wait for the whole group, and `poll` waits
    /// for them no longer than its own timeout.
    pending_join: Option<JoinHandle<JoinOutcome>>,
    /// Raised when the consumer is dropped: a heartbeat task started by a join that finished
    /// meanwhile stops on it.
    closed: Arc<AtomicBool>,
    /// The partition count of each subscribed topic (0: none) the assignment was computed
    /// with, when this member is the leader.
    assigned_with: Option<BTreeMap<String, i32>>,
    metadata_checked_at: Instant,
}

impl GroupMember {
    pub fn new(group_id: String, instance_id: Option<String>) -> Self {
        Self {
            group_id,
            instance_id,
            generation: None,
            member_id: String::new(),
            rejoin: Arc::new(AtomicBool::new(true)),
            lost: Arc::new(AtomicBool::new(false)),
            last_poll_ms: Arc::new(AtomicU64::new(0)),
            created: Instant::now(),
            heartbeat: None,
            pending_join: None,
            closed: Arc::new(AtomicBool::new(false)),
            assigned_with: None,
            metadata_checked_at: Instant::now(),
        }
    }

    fn liveness(&self) -> Liveness {
        Liveness {
            rejoin: self.rejoin.clone(),
            lost: self.lost.clone(),
            closed: self.closed.clone(),
            last_poll_ms: self.last_poll_ms.clone(),
            created: self.created,
        }
    }

    /// Records that the application polled (for `max.poll.interval.ms`).
    pub fn polled(&self) {
        self.last_poll_ms
            .store(self.created.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// Whether the partitions of the last generation were lost rather than revoked: the member
    /// was fenced or left the group on a poll timeout, so its commits would be refused.
    pub fn partitions_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// As the leader, every `metadata.max.age.ms`: whether a subscribed topic's partition count
    /// changed since the assignment was computed; if so, the member rejoins at the next poll.
    pub async fn check_metadata(&mut self, cluster: &Arc<Cluster>) -> Result<()> {
        let Some(assigned_with) = &self.assigned_with else {
            return Ok(());
        };
        if self.metadata_checked_at.elapsed()
            < Duration::from_millis(cluster.config.metadata_max_age_ms)
        {
            return Ok(());
        }
        self.metadata_checked_at = Instant::now();
        let topics: Vec<String> = assigned_with.keys().cloned().collect();
        if topics.is_empty() {
            return Ok(());
        }
        let now = partition_counts(&cluster.refresh(&topics).await?, &topics);
        if &now != assigned_with {
            tracing::info!(group = %self.group_id, before = ?assigned_with, ?now, "subscribed topics changed: rejoining");
            self.rejoin.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Whether the member must (re)join before it consumes: not joined yet, or the heartbeat
    /// learned of a rebalance.
    pub fn needs_rejoin(&self) -> bool {
        self.generation.is_none() || self.rejoin.load(Ordering::Acquire)
    }

    /// Asks for a rebalance at the next poll (a cooperative member that gave partitions up).
    pub fn request_rejoin(&self) {
        self.rejoin.store(true, Ordering::Release);
    }

    /// Whether a join is under way.
    pub fn joining(&self) -> bool {
        self.pending_join.is_some()
    }

    /// Starts joining (or rejoining) the group subscribed to `topics`, in a task of its own;
    /// `finish_join` collects the assignment.
    pub fn start_join(
        &mut self,
        cluster: &Arc<Cluster>,
        config: &ConsumerConfig,
        topics: &[String],
        owned: Vec<TopicPartition>,
    ) {
        assert!(self.pending_join.is_none(), "one join at a time");
        self.stop_heartbeat();
        let owned_generation = self.generation.as_ref().map_or(-1, |g| g.generation_id);
        // A cooperative member that keeps partitions stays in its generation meanwhile.
        if owned.is_empty() {
            self.generation = None;
        }
        self.assigned_with = None;
        if self.lost.swap(false, Ordering::AcqRel) {
            // Out of the group (fenced, or left on a poll timeout): join as a new member.
            self.member_id.clear();
        }
        let joiner = Joiner {
            group_id: self.group_id.clone(),
            instance_id: self.instance_id.clone(),
            member_id: self.member_id.clone(),
            owned,
            owned_generation,
            assigned_with: None,
            liveness: self.liveness(),
        };
        self.pending_join = Some(tokio::spawn(joiner.run(
            cluster.clone(),
            config.clone(),
            topics.to_vec(),
        )));
    }

    /// Waits until `deadline` for the join `start_join` began: this member's assignment for the
    /// new generation, or `None` while the group is still rebalancing.
    pub async fn finish_join(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Vec<TopicPartition>>> {
        let Some(pending) = self.pending_join.as_mut() else {
            return Ok(None);
        };
        let Ok(finished) = tokio::time::timeout_at(deadline, pending).await else {
            return Ok(None);
        };
        self.pending_join = None;
        let outcome =
            finished.map_err(|e| Error::Protocol(format!("the group join task failed: {e}")))?;
        self.member_id = outcome.member_id;
        let joined = outcome.result?;
        self.generation = Some(joined.generation);
        self.assigned_with = joined.assigned_with;
        self.metadata_checked_at = Instant::now();
        self.heartbeat = Some(joined.heartbeat);
        Ok(Some(joined.assigned))
    }

    /// The subscription changed: the next poll joins again with it (a join under way for the
    /// old one is given up).
    pub fn resubscribe(&mut self) {
        self.stop_join();
        self.generation = None;
    }

    fn stop_join(&mut self) {
        if let Some(j) = self.pending_join.take() {
            j.abort();
        }
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// Leaves the group (dynamic members only: a static member keeps its place for
    /// `session.timeout.ms`, as in the Java client).
    pub async fn leave(&mut self, cluster: &Arc<Cluster>) -> Result<()> {
        self.stop_join();
        self.stop_heartbeat();
        let had_generation = self.generation.take().is_some();
        if self.lost.load(Ordering::Acquire) {
            // Already out of the group: fenced, or left on a poll timeout.
            self.member_id.clear();
            return Ok(());
        }
        if self.instance_id.is_some() || self.member_id.is_empty() || !had_generation {
            return Ok(());
        }
        let result = leave_group(cluster, &self.group_id, &self.member_id).await;
        self.member_id.clear();
        result
    }

    /// Commits `offsets` (next offset to read, per partition) for this group.
    pub async fn commit(
        &self,
        cluster: &Arc<Cluster>,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        if self.pending_join.is_some() && self.generation.is_some() {
            // As the Java client: no commit while the group rebalances (the coordinator would
            // refuse it between JoinGroup and SyncGroup, and that refusal asks for yet another
            // rebalance). Commit again once the poll has finished the rebalance.
            return Err(Error::Broker {
                error: ResponseError::RebalanceInProgress,
                context: format!("commit to group {} while it rebalances", self.group_id),
            });
        }
        let request = commit_request(
            &self.group_id,
            self.instance_id.as_deref(),
            self.generation.as_ref(),
            offsets,
        );
        send_commit(cluster, &self.group_id, &request, &self.rejoin).await
    }

    /// The committed offsets of `partitions` (`None`: nothing committed).
    pub async fn committed(
        &self,
        cluster: &Arc<Cluster>,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        fetch_committed(cluster, &self.group_id, Some(partitions)).await
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.stop_join();
        self.stop_heartbeat();
    }
}
