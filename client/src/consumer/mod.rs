//! The consumer: fetches records of assigned partitions from their leaders, alone (`assign`) or
//! as a member of a consumer group (`subscribe`), and keeps a position per partition.
//!
//! Records are returned as zero-copy slices: a key or value is a [`bytes::Bytes`] view into the
//! fetch response (or, for a compressed batch, into its one decompressed buffer).
//!
//! [`Consumer`] holds the pieces and runs a poll through them: `subscription` (what is consumed,
//! each partition's position, the buffer of records fetched), `fetcher` (one fetch per leader),
//! `record` (fetched batches decoded), `offsets` (ListOffsets, committed offsets, the reset
//! policy) and `rebalance` (the listener, and what a cooperative rebalance hands over); the group
//! membership itself is `crate::group_member`.
//!
//! Invariants:
//! - A partition's position is the offset of the next record `poll` returns; it only moves
//!   forward by records returned, or by an explicit seek or reset.
//! - A poll returns at most `max.poll.records`; fetched records beyond those wait in a buffer.
//!   A partition's buffered records are exactly those from its position up to its `fetched_to`
//!   offset, in order; a seek, a pause or a rebalance drops them, and a partition with buffered
//!   records is not fetched again until they are returned.
//! - One fetch per leader is outstanding at a time; its result is used for a partition only if
//!   the partition is still assigned, not paused, and still at the offset the fetch asked for,
//!   so a seek, a pause or a rebalance while a fetch is out never yields stale records.
//! - Records below the position (a batch starting before it) are skipped; control batches move
//!   the position past them without returning anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::config::ConsumerConfig;
use crate::error::{Error, Result};
use crate::group_member::{Generation, GroupMember};

use self::fetcher::{FetchDone, Fetcher, Waited};
use self::rebalance::Handover;
use self::subscription::Subscription;

pub(crate) use self::offsets::list_offsets;
pub use self::offsets::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
pub use self::rebalance::RebalanceListener;
pub use self::record::ConsumerRecord;
pub use crate::topic_partition::TopicPartition;

mod fetcher;
mod offsets;
mod rebalance;
mod record;
mod subscription;

/// An asynchronous Kafka consumer.
///
/// ```no_run
/// # async fn demo() -> quipu_client::Result<()> {
/// use std::time::Duration;
/// use quipu_client::{Consumer, ConsumerConfig, OffsetReset};
/// let mut config = ConsumerConfig::new("localhost:9092").with_group("readers");
/// config.auto_offset_reset = OffsetReset::Earliest;
/// let mut consumer = Consumer::new(config)?;
/// consumer.subscribe(&["greetings"])?;
/// for record in consumer.poll(Duration::from_secs(1)).await? {
///     println!("{}-{}@{}: {:?}", record.topic, record.partition, record.offset, record.value);
/// }
/// consumer.close().await?;
/// # Ok(()) }
/// ```
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    subscription: Subscription,
    group: Option<GroupMember>,
    listener: Option<Box<dyn RebalanceListener>>,
    fetcher: Fetcher,
    last_commit: Instant,
}

impl Consumer {
    /// A consumer with `config`; connects on first use. Must be called within a tokio runtime.
    pub fn new(config: ConsumerConfig) -> Result<Self> {
        config.validate()?;
        let cluster = Cluster::new(config.client.clone(), 5)?;
        let group = config
            .group_id
            .clone()
            .map(|g| GroupMember::new(g, config.group_instance_id.clone()));
        Ok(Self {
            cluster,
            config,
            subscription: Subscription::default(),
            group,
            listener: None,
            fetcher: Fetcher::default(),
            last_commit: Instant::now(),
        })
    }

    /// Consumes exactly `partitions`, without group membership (commits still go to `group.id`
    /// when one is set). Replaces any earlier assignment or subscription.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        self.subscription.assign(partitions);
    }

    /// Joins `group.id` subscribed to `topics`; partitions come from the group's assignment in
    /// the next `poll`.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        if self.group.is_none() {
            return Err(Error::InvalidArgument(
                "subscribe needs a group.id (ConsumerConfig::group_id)".into(),
            ));
        }
        self.subscription.subscribe(topics);
        if let Some(g) = &mut self.group {
            g.resubscribe();
        }
        Ok(())
    }

    /// Receives rebalance callbacks from now on.
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// The group generation this consumer is a member of, once it has joined.
    pub fn group_generation(&self) -> Option<Generation> {
        self.group.as_ref().and_then(|g| g.generation.clone())
    }

    /// The number of partitions of `topic`, from metadata.
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        Ok(self.cluster.topic(topic).await?.partitions.len() as i32)
    }

    /// The partitions currently assigned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.subscription.assignment()
    }

    /// The offset of the next record `poll` returns for `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.subscription.position(tp)
    }

    /// The high watermark of `tp` as of the last fetch (for lag).
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        self.subscription.high_watermark(tp)
    }

    /// The next `poll` returns `tp`'s records from `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        self.subscription.seek(tp, offset)
    }

    /// Seeks `partitions` to their first offset.
    pub async fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_to_listed(partitions, EARLIEST_TIMESTAMP).await
    }

    /// Seeks `partitions` to their end: only records written after this are returned.
    pub async fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_to_listed(partitions, LATEST_TIMESTAMP).await
    }

    /// Seeks `partitions` to the first record whose timestamp is at or after `timestamp_ms`
    /// (to the end where there is none).
    pub async fn seek_to_timestamp(
        &mut self,
        partitions: &[TopicPartition],
        timestamp_ms: i64,
    ) -> Result<()> {
        if timestamp_ms < 0 {
            return Err(Error::InvalidArgument(format!(
                "timestamp {timestamp_ms} is negative"
            )));
        }
        self.seek_to_listed(partitions, timestamp_ms).await
    }

    async fn seek_to_listed(
        &mut self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<()> {
        offsets::seek_to_listed(&self.cluster, &mut self.subscription, partitions, timestamp).await
    }

    /// For each partition, the first offset whose record timestamp is at or after the given
    /// one (`None`: no such record).
    pub async fn offsets_for_times(
        &self,
        queries: &[(TopicPartition, i64)],
    ) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        list_offsets(&self.cluster, queries).await
    }

    /// First offsets of `partitions`.
    pub async fn beginning_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>> {
        offsets::listed(&self.cluster, partitions, EARLIEST_TIMESTAMP).await
    }

    /// End offsets (high watermarks) of `partitions`.
    pub async fn end_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>> {
        offsets::listed(&self.cluster, partitions, LATEST_TIMESTAMP).await
    }

    /// Stops returning records of `partitions` until they are resumed; group membership and
    /// positions are kept.
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.subscription.pause(partitions)
    }

    /// Returns records of `partitions` again.
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.subscription.resume(partitions)
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.subscription.paused()
    }

    /// Commits the current position of every assigned partition to `group.id`.
    pub async fn commit(&mut self) -> Result<()> {
        let offsets = self.subscription.positions();
        self.commit_offsets(&offsets).await
    }

    /// Commits `offsets` (each the next offset to read) to `group.id`. While a cooperative
    /// rebalance is under way this fails with REBALANCE_IN_PROGRESS, as in the Java client:
    /// commit again after a later poll.
    pub async fn commit_offsets(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let group = offsets::needs_group(self.group.as_ref(), "commits")?;
        group.commit(&self.cluster, offsets).await?;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// The offsets `group.id` has committed for `partitions`.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        let group = offsets::needs_group(self.group.as_ref(), "committed offsets")?;
        group.committed(&self.cluster, partitions).await
    }

    /// Records of the assigned, unpaused partitions: waits up to `timeout` for some, and returns
    /// an empty list if none came. Joins or rejoins the group first when needed and commits
    /// automatically every `auto.commit.interval.ms` when enabled.
    ///
    /// A group member must poll at least every `max.poll.interval.ms`: otherwise it leaves the
    /// group, its partitions go to the other members, and the next poll joins again.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(g) = &self.group {
                g.polled();
            }
            if !self.maintain_group(deadline).await? {
                return Ok(Vec::new()); // still rebalancing: the next poll goes on waiting
            }
            self.maybe_auto_commit().await;
            self.resolve_positions().await?;
            if self.subscription.has_buffered() {
                return Ok(self.take_and_fetch_ahead().await);
            }
            self.fetcher
                .start(&self.cluster, &self.config, &self.subscription)
                .await;
            let now = Instant::now();
            if self.fetcher.is_idle() {
                if now >= deadline {
                    return Ok(Vec::new());
                }
                // Nothing to fetch (nothing assigned, all paused, or no leader): wait a little.
                tokio::time::sleep((deadline - now).min(Duration::from_millis(100))).await;
                continue;
            }
            let wait = deadline.saturating_duration_since(now);
            match self.fetcher.next(wait).await {
                Waited::Nothing => return Ok(Vec::new()),
                Waited::Lost => continue,
                Waited::Done(done) => self.read_fetch(done).await?,
            }
            if self.subscription.has_buffered() {
                return Ok(self.take_and_fetch_ahead().await);
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Up to `max.poll.records` buffered records, having started fetches for the partitions
    /// with nothing buffered: they fetch ahead while the caller works on these.
    async fn take_and_fetch_ahead(&mut self) -> Vec<ConsumerRecord> {
        let records = self
            .subscription
            .take_buffered(self.config.max_poll_records);
        self.fetcher
            .start(&self.cluster, &self.config, &self.subscription)
            .await;
        records
    }

    /// Takes a fetch's answer: its records into the buffer, and partitions out of range reset.
    /// A failed fetch makes its topics' metadata stale and waits `retry.backoff.ms`.
    async fn read_fetch(&mut self, done: FetchDone) -> Result<()> {
        match done.response {
            Ok(r) => {
                let out_of_range =
                    self.fetcher
                        .read(&self.cluster, &mut self.subscription, &done.asked, r)?;
                if !out_of_range.is_empty() {
                    tracing::debug!(?out_of_range, "offset out of range: resetting");
                    self.reset(&out_of_range).await?;
                }
            }
            Err(e) => {
                tracing::debug!(leader = done.leader, %e, "fetch failed");
                for (tp, _) in &done.asked {
                    self.cluster.invalidate(&tp.topic);
                }
                tokio::time::sleep(Duration::from_millis(self.config.client.retry_backoff_ms))
                    .await;
            }
        }
        Ok(())
    }

    /// Keeps the group membership current: rejoins when the heartbeat or the metadata check
    /// asks for it, and waits for a join under way until `deadline`. Returns whether the
    /// consumer holds an assignment to fetch for (false while the group is rebalancing).
    ///
    /// Eager protocol: everything is revoked before the join. Cooperative protocol (every
    /// strategy offered is `cooperative-sticky`): the member keeps consuming what it owns while
    /// the group rebalances, then revokes only what the new assignment takes away and rejoins
    /// so those partitions can move.
    async fn maintain_group(&mut self, deadline: Instant) -> Result<bool> {
        let Some(topics) = self.subscription.topics().map(<[String]>::to_vec) else {
            return Ok(true);
        };
        let Some(group) = self.group.as_ref() else {
            return Ok(true);
        };
        if !group.joining() {
            if !self.rebalance_due().await {
                return Ok(true);
            }
            self.start_rebalance(&topics).await;
        }
        self.finish_rebalance(deadline).await
    }

    /// Whether the member must join again: the heartbeat asked for it, or (the leader, every
    /// `metadata.max.age.ms`) a subscribed topic's partition count changed.
    async fn rebalance_due(&mut self) -> bool {
        let group = member(&mut self.group);
        if !group.needs_rejoin() {
            if let Err(e) = group.check_metadata(&self.cluster).await {
                tracing::debug!(%e, "metadata check of subscribed topics failed");
            }
        }
        group.needs_rejoin()
    }

    /// Starts the join: eagerly (or when the partitions were lost) after giving every partition
    /// up; cooperatively keeping them, and consuming them meanwhile.
    async fn start_rebalance(&mut self, topics: &[String]) {
        let lost = member(&mut self.group).partitions_lost();
        let owned = self.assignment();
        let keep = self.config.cooperative() && !lost;
        if !keep {
            self.give_up_all(&owned, lost).await;
        }
        let kept = if keep { owned } else { Vec::new() };
        member(&mut self.group).start_join(&self.cluster, &self.config, topics, kept);
    }

    /// Gives up `owned` before a join: committed first (unless `lost`: others may own them
    /// already), the listener told, their fetches and buffered records dropped.
    async fn give_up_all(&mut self, owned: &[TopicPartition], lost: bool) {
        if !lost && self.config.enable_auto_commit && !owned.is_empty() {
            if let Err(e) = self.commit().await {
                tracing::debug!(%e, "commit before rebalance failed");
            }
        }
        rebalance::given_up(self.listener.as_deref_mut(), owned, lost);
        self.fetcher.abort();
        self.subscription.revoke_all();
    }

    /// Waits until `deadline` for the join under way (cooperatively, with partitions still
    /// consumed, not at all) and takes its assignment. Returns whether the consumer holds an
    /// assignment to fetch for.
    async fn finish_rebalance(&mut self, deadline: Instant) -> Result<bool> {
        let cooperative = self.config.cooperative();
        // Cooperatively, owned partitions are fetched while the group rebalances: look at the
        // join without waiting.
        let keeps_consuming = cooperative && !self.subscription.is_empty();
        let wait_until = if keeps_consuming {
            Instant::now()
        } else {
            deadline
        };
        let Some(assigned) = member(&mut self.group)
            .finish_join(wait_until.into())
            .await?
        else {
            return Ok(keeps_consuming);
        };
        if cooperative {
            self.hand_over(assigned).await;
        } else {
            self.subscription.set_assignment(assigned.clone());
            if let Some(l) = &mut self.listener {
                l.on_partitions_assigned(&assigned);
            }
        }
        Ok(true)
    }

    /// Cooperatively, moves to `assigned`: revokes (after committing them) only the partitions
    /// it takes away, and rejoins so those can move; announces only the partitions added.
    async fn hand_over(&mut self, assigned: Vec<TopicPartition>) {
        let handover = Handover::between(&self.subscription.assignment(), &assigned);
        if !handover.revoked.is_empty() {
            if self.config.enable_auto_commit {
                let offsets = self.subscription.positions_of(&handover.revoked);
                if let Err(e) = self.commit_offsets(&offsets).await {
                    tracing::debug!(%e, "commit of revoked partitions failed");
                }
            }
            if let Some(l) = &mut self.listener {
                l.on_partitions_revoked(&handover.revoked);
            }
            // What was given up moves to its new owner in the next rebalance.
            member(&mut self.group).request_rejoin();
        }
        self.subscription.set_assignment(assigned);
        if let Some(l) = &mut self.listener {
            l.on_partitions_assigned(&handover.added);
        }
    }

    async fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit
            || self.group.as_ref().is_none_or(|g| g.joining())
            || self.last_commit.elapsed()
                < Duration::from_millis(self.config.auto_commit_interval_ms)
        {
            return;
        }
        if let Err(e) = self.commit().await {
            tracing::debug!(%e, "auto commit failed");
            self.last_commit = Instant::now();
        }
    }

    /// Positions for partitions that have none: the committed offset, else the reset policy.
    async fn resolve_positions(&mut self) -> Result<()> {
        let policy = self.config.auto_offset_reset;
        let group = self.group.as_ref();
        offsets::resolve_positions(&self.cluster, &mut self.subscription, group, policy).await
    }

    async fn reset(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let policy = self.config.auto_offset_reset;
        offsets::reset(&self.cluster, &mut self.subscription, partitions, policy).await
    }

    /// Commits (when automatic commits are on) and leaves the group.
    pub async fn close(mut self) -> Result<()> {
        self.fetcher.abort();
        if self.config.enable_auto_commit && self.group.is_some() {
            if let Err(e) = self.commit().await {
                tracing::debug!(%e, "final commit failed");
            }
        }
        if let Some(g) = &mut self.group {
            g.leave(&self.cluster).await?;
        }
        Ok(())
    }
}

/// The group member of a subscribed consumer.
fn member(group: &mut Option<GroupMember>) -> &mut GroupMember {
    group.as_mut().expect("subscribed consumers have a group")
}
