//! Followers' fetchers, as Kafka's ReplicaFetcherManager and ReplicaFetcherThread: for every
//! partition this broker follows, a fetcher of its leader (`num.replica.fetchers` per source
//! broker) copies the leader's log with Fetch (a replica id, up to `replica.fetch.max.bytes` a
//! partition and `replica.fetch.response.max.bytes` a response, waiting up to
//! `replica.fetch.wait.max.ms` at the leader) and takes its high watermark.
//!
//! Before it fetches in a leader epoch, a follower truncates its log where it diverges from the
//! leader's: it asks OffsetForLeaderEpoch for its latest epoch and cuts at the end the leader
//! gives (KIP-101), or, when the leader answers an older epoch, at the smaller of the two ends of
//! that epoch, asking again until both logs agree on their last epoch (KIP-279). It never cuts to
//! its high watermark alone, except when the leader knows no epoch at all. A follower whose log
//! ends past the leader's is cut to the leader's end; one whose log ends before the leader's
//! start starts over at it.
//!
//! Invariants: a follower writes only what its current leader sent at the epoch it follows, and
//! only at its own log end; a partition is fetched by at most one fetcher; errors delay a
//! partition by `replica.fetch.backoff.ms`, never the fetches of the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quipu_client::connection::{Connection, ConnectionConfig};
use quipu_config::BrokerConfig;
use quipu_protocol::messages::fetch_request::FetchPartition;
use quipu_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use quipu_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use quipu_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest, TopicName,
};
use quipu_protocol::{ResponseError, StrBytes};
use quipu_storage::log::AppendError;
use tokio::sync::{watch, Notify};

use crate::metadata::Metadata;
use crate::partition::Partition;
use crate::replica_manager::ReplicaManager;

/// The Fetch version followers send (replica id in the request; topics by name).
const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
const LIST_OFFSETS_VERSION: i16 = 4;
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

#[derive(Debug, Clone)]
struct FetcherConfig {
    node_id: i32,
    max_wait_ms: i32,
    response_max_bytes: i32,
    partition_max_bytes: i32,
    backoff: Duration,
    fetchers_per_source: u32,
}

impl FetcherConfig {
    fn of(config: &BrokerConfig) -> Self {
        Self {
            node_id: config.node_id,
            max_wait_ms: config.replica_fetch_wait_max_ms,
            response_max_bytes: config.replica_fetch_response_max_bytes,
            partition_max_bytes: config.replica_fetch_max_bytes,
            backoff: Duration::from_millis(config.replica_fetch_backoff_ms),
            fetchers_per_source: config.num_replica_fetchers,
        }
    }
}

/// A partition a fetcher follows, at the leader epoch it follows it in.
#[derive(Clone)]
struct Followed {
    partition: Arc<Partition>,
    leader_epoch: i32,
}

type FetcherKey = (i32, u32);
type PartitionKey = (Arc<str>, i32);

/// Starts and stops the fetchers as leadership moves: woken by every metadata change the
/// replica manager takes, and once a second.
pub struct ReplicaFetchers {
    config: FetcherConfig,
    replicas: Arc<ReplicaManager>,
    metadata: Arc<Metadata>,
    wake: Arc<Notify>,
}

impl ReplicaFetchers {
    pub fn new(
        config: &BrokerConfig,
        replicas: Arc<ReplicaManager>,
        metadata: Arc<Metadata>,
    ) -> Self {
        let wake = replicas.leadership_changes();
        Self {
            config: FetcherConfig::of(config),
            replicas,
            metadata,
            wake,
        }
    }

    /// Runs until dropped (its task aborted): dropping it ends every fetcher.
    pub async fn run(self) {
        let mut running: HashMap<FetcherKey, watch::Sender<Vec<Followed>>> = HashMap::new();
        loop {
            let mut desired = self.desired();
            running.retain(|key, _| desired.contains_key(key));
            for (key, followed) in desired.drain() {
                match running.get(&key) {
                    Some(sender) => {
                        sender.send_if_modified(|current| {
                            let changed = !same(current, &followed);
                            if changed {
                                *current = followed;
                            }
                            changed
                        });
                    }
                    None => {
                        let (sender, assigned) = watch::channel(followed);
                        let fetcher = Fetcher::new(
                            key.0,
                            self.config.clone(),
                            self.metadata.clone(),
                            assigned,
                        );
                        tokio::spawn(fetcher.run());
                        running.insert(key, sender);
                    }
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
        }
    }

    /// The partitions this broker follows, by fetcher: a live leader other than this broker.
    fn desired(&self) -> HashMap<FetcherKey, Vec<Followed>> {
        let mut desired: HashMap<FetcherKey, Vec<Followed>> = HashMap::new();
        for partition in self.replicas.all() {
            let leader = partition.leader();
            if leader < 0 || leader == self.config.node_id || partition.is_offline() {
                continue;
            }
            let spread = (partition.index() as u32) % self.config.fetchers_per_source;
            let leader_epoch = partition.leader_epoch();
            desired.entry((leader, spread)).or_default().push(Followed {
                partition,
                leader_epoch,
            });
        }
        desired
    }
}

fn same(a: &[Followed], b: &[Followed]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            Arc::ptr_eq(&x.partition, &y.partition) && x.leader_epoch == y.leader_epoch
        })
}

/// One partition's progress in a fetcher.
struct State {
    followed: Followed,
    /// The log agrees with the leader's up to its end: fetching may go on.
    truncated: bool,
    delayed_until: Option<Instant>,
}

/// Fetches the partitions one leader leads for this broker, until the manager drops its
/// assignment.
struct Fetcher {
    source: i32,
    config: FetcherConfig,
    metadata: Arc<Metadata>,
    assigned: watch::Receiver<Vec<Followed>>,
    states: BTreeMap<PartitionKey, State>,
}

impl Fetcher {
    fn new(
        source: i32,
        config: FetcherConfig,
        metadata: Arc<Metadata>,
        assigned: watch::Receiver<Vec<Followed>>,
    ) -> Self {
        Self {
            source,
            config,
            metadata,
            assigned,
            states: BTreeMap::new(),
        }
    }

    async fn run(mut self) {
        let mut connection: Option<Connection> = None;
        loop {
            if self.assigned.has_changed().is_err() {
                return;
            }
            self.take_assignment();
            let live = connection.as_ref().is_some_and(|c| !c.is_broken());
            if !live {
                connection = self.connect().await;
                if connection.is_none() {
                    tokio::time::sleep(self.config.backoff).await;
                    continue;
                }
            }
            let c = connection.as_ref().expect("connected");
            let done = match self.truncate_diverged(c).await {
                Ok(()) => self.fetch_once(c).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                crate::warn_limited!(leader = self.source, error = %e, "replica fetch failed");
                connection = None;
                tokio::time::sleep(self.config.backoff).await;
            }
        }
    }

    /// Takes the manager's latest list: a partition new to it, or followed at another epoch,
    /// starts with a truncation.
    fn take_assignment(&mut self) {
        let assigned = self.assigned.borrow_and_update().clone();
        let mut states = BTreeMap::new();
        for followed in assigned {
            let key: PartitionKey = (
                followed.partition.topic().into(),
                followed.partition.index(),
            );
            let kept = self.states.remove(&key).filter(|s| {
                s.followed.leader_epoch == followed.leader_epoch
                    && Arc::ptr_eq(&s.followed.partition, &followed.partition)
            });
            let state = kept.unwrap_or(State {
                followed,
                truncated: false,
                delayed_until: None,
            });
            states.insert(key, state);
        }
        self.states = states;
    }

    async fn connect(&self) -> Option<Connection> {
        let image = self.metadata.image();
        let broker = image.broker(self.source)?;
        let address = format!("{}:{}", broker.host, broker.port);
        let config = ConnectionConfig {
            client_id: format!("quipu-replica-fetcher-{}", self.config.node_id),
            connect_timeout_ms: 5_000,
            request_timeout_ms: self.config.max_wait_ms as u64 + 30_000,
            max_in_flight: 1,
            max_response_bytes: self.config.response_max_bytes as usize
                + self.config.partition_max_bytes as usize
                + (1 << 20),
        };
        match Connection::open(&address, &config).await {
            Ok(c) => Some(c),
            Err(e) => {
                crate::warn_limited!(leader = self.source, %address, error = %e, "cannot reach the leader to fetch from it");
                None
            }
        }
    }

    fn delay(&mut self, key: &PartitionKey) {
        if let Some(s) = self.states.get_mut(key) {
            s.delayed_until = Some(Instant::now() + self.config.backoff);
        }
    }

    fn ready(&self, s: &State) -> bool {
        s.delayed_until.is_none_or(|t| t <= Instant::now())
    }
}

/// Truncation (KIP-101, KIP-279) and the handling of an offset out of range.
impl Fetcher {
    async fn truncate_diverged(&mut self, c: &Connection) -> Result<(), quipu_client::Error> {
        let mut request = OffsetForLeaderEpochRequest::default();
        request.replica_id = BrokerId(self.config.node_id);
        let mut asked: Vec<(PartitionKey, i32)> = Vec::new();
        for (key, s) in self.states.iter_mut() {
            if s.truncated || s.delayed_until.is_some_and(|t| t > Instant::now()) {
                continue;
            }
            let first = {
                let log = s.followed.partition.log();
                let hw = s.followed.partition.high_watermark();
                first_step(&PartitionLog::of(&log, hw))
            };
            let latest = match first {
                FirstStep::Agreed => {
                    s.truncated = true;
                    continue;
                }
                FirstStep::CutTo(offset) => {
                    cut(&s.followed.partition, offset, None);
                    s.truncated = true;
                    continue;
                }
                FirstStep::Ask(latest) => latest,
            };
            let mut p = OffsetForLeaderPartition::default();
            p.partition = key.1;
            p.current_leader_epoch = s.followed.leader_epoch;
            p.leader_epoch = latest;
            push_partition(
                &mut request.topics,
                &key.0,
                p,
                |t| &mut t.topic,
                |t| &mut t.partitions,
            );
            asked.push((key.clone(), latest));
        }
        if asked.is_empty() {
            return Ok(());
        }
        let response = c
            .send_version(&request, OFFSET_FOR_LEADER_EPOCH_VERSION)
            .await?;
        for t in response.topics {
            for p in t.partitions {
                let key: PartitionKey = (t.topic.0.to_string().into(), p.partition);
                let Some(&(_, asked_epoch)) = asked.iter().find(|(k, _)| *k == key) else {
                    continue;
                };
                if p.error_code != 0 {
                    self.delay(&key);
                    continue;
                }
                let Some(s) = self.states.get_mut(&key) else {
                    continue;
                };
                s.truncated = truncate_to_leader(
                    &s.followed.partition,
                    asked_epoch,
                    (p.leader_epoch, p.end_offset),
                );
            }
        }
        Ok(())
    }

    /// The fetch offset was out of the leader's range: a log past the leader's end is cut to
    /// it; one before the leader's start starts over there.
    async fn reset_out_of_range(
        &mut self,
        c: &Connection,
        key: &PartitionKey,
    ) -> Result<(), quipu_client::Error> {
        let Some(s) = self.states.get(key) else {
            return Ok(());
        };
        let partition = s.followed.partition.clone();
        let epoch = s.followed.leader_epoch;
        let latest = self.leader_offset(c, key, epoch, LATEST).await?;
        let earliest = self.leader_offset(c, key, epoch, EARLIEST).await?;
        let (Some(latest), Some(earliest)) = (latest, earliest) else {
            self.delay(key);
            return Ok(());
        };
        let log_end_offset = partition.log().log_end_offset();
        if log_end_offset > latest {
            cut(&partition, latest, None);
        } else if log_end_offset < earliest {
            tracing::info!(topic = %key.0, partition = key.1, log_end_offset, leader_log_start_offset = earliest, "the leader's log starts past this one's end: starting over there");
            cut(&partition, earliest, Some(earliest));
        }
        Ok(())
    }

    async fn leader_offset(
        &self,
        c: &Connection,
        key: &PartitionKey,
        epoch: i32,
        timestamp: i64,
    ) -> Result<Option<i64>, quipu_client::Error> {
        let mut p = ListOffsetsPartition::default();
        p.partition_index = key.1;
        p.current_leader_epoch = epoch;
        p.timestamp = timestamp;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(key.0.to_string()));
        t.partitions.push(p);
        let mut request = ListOffsetsRequest::default();
        request.replica_id = BrokerId(self.config.node_id);
        request.topics.push(t);
        let response = c.send_version(&request, LIST_OFFSETS_VERSION).await?;
        let answer = response.topics.first().and_then(|t| t.partitions.first());
        Ok(answer.filter(|p| p.error_code == 0).map(|p| p.offset))
    }
}

/// Fetching.
impl Fetcher {
    async fn fetch_once(&mut self, c: &Connection) -> Result<(), quipu_client::Error> {
        let Some(request) = self.fetch_request() else {
            // Nothing to fetch now (all delayed, or waiting to truncate): wait a little or for
            // a new assignment.
            let pause = self.config.backoff.min(Duration::from_millis(100));
            let _ = tokio::time::timeout(pause, self.assigned.changed()).await;
            return Ok(());
        };
        let response = c.send_version(&request, FETCH_VERSION).await?;
        if response.error_code != 0 {
            return Err(quipu_client::Error::Protocol(format!(
                "the leader refused the fetch: error {}",
                response.error_code
            )));
        }
        let now_ms = crate::clock::now_ms();
        for t in response.responses {
            for p in t.partitions {
                let key: PartitionKey = (t.topic.0.to_string().into(), p.partition_index);
                match ResponseError::try_from_code(p.error_code) {
                    None => self.take_records(
                        &key,
                        p.records.as_deref().unwrap_or(&[]),
                        (p.high_watermark, p.log_start_offset),
                        now_ms,
                    ),
                    Some(ResponseError::OffsetOutOfRange) => {
                        self.reset_out_of_range(c, &key).await?
                    }
                    Some(e) => {
                        tracing::debug!(topic = %key.0, partition = key.1, error = ?e, "replica fetch: partition refused");
                        self.delay(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn fetch_request(&self) -> Option<FetchRequest> {
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(self.config.node_id);
        request.max_wait_ms = self.config.max_wait_ms;
        request.min_bytes = 1;
        request.max_bytes = self.config.response_max_bytes;
        request.session_epoch = -1;
        for (key, s) in &self.states {
            if !s.truncated || !self.ready(s) {
                continue;
            }
            let log = s.followed.partition.log();
            let mut p = FetchPartition::default();
            p.partition = key.1;
            p.current_leader_epoch = s.followed.leader_epoch;
            p.fetch_offset = log.log_end_offset();
            p.log_start_offset = log.log_start_offset();
            p.last_fetched_epoch = -1;
            p.partition_max_bytes = self.config.partition_max_bytes;
            push_partition(
                &mut request.topics,
                &key.0,
                p,
                |t| &mut t.topic,
                |t| &mut t.partitions,
            );
        }
        (!request.topics.is_empty()).then_some(request)
    }

    /// Appends what the leader sent and takes its high watermark and log start.
    fn take_records(
        &mut self,
        key: &PartitionKey,
        records: &[u8],
        (high_watermark, log_start_offset): (i64, i64),
        now_ms: i64,
    ) {
        let Some(s) = self.states.get_mut(key) else {
            return;
        };
        let partition = s.followed.partition.clone();
        match partition.append_as_follower(records, s.followed.leader_epoch, now_ms) {
            Ok(_) => {}
            Err(AppendError::InvalidRecord(e)) => {
                // Not at this log's end: the logs diverged again; truncate before going on.
                tracing::warn!(topic = %key.0, partition = key.1, error = %e, "replicated batch does not fit the log: truncating again");
                s.truncated = false;
                return;
            }
            Err(e) => {
                crate::warn_limited!(topic = %key.0, partition = key.1, error = %e, "cannot append replicated records");
                self.delay(key);
                return;
            }
        }
        partition.follow_high_watermark(high_watermark);
        if log_start_offset > partition.log().log_start_offset() {
            let limit = partition.high_watermark();
            if log_start_offset <= limit {
                let _ = partition
                    .log()
                    .advance_log_start_offset(log_start_offset, limit);
            }
        }
    }
}

/// Cuts `partition` at the end the leader gave for the epoch asked (`asked_epoch`, the log's
/// latest): returns whether the logs now agree on their last epoch.
fn truncate_to_leader(partition: &Partition, asked_epoch: i32, leader_answer: (i32, i64)) -> bool {
    let (offset, agreed) = {
        let log = partition.log();
        let local = PartitionLog::of(&log, partition.high_watermark());
        truncation_point(asked_epoch, leader_answer, &local)
    };
    cut(partition, offset, None);
    agreed
}

/// What the truncation decisions read of a follower's log: pure, so that the replication
/// simulation decides with the same code over its own logs.
pub(crate) trait LocalLog {
    fn log_start_offset(&self) -> i64;
    fn log_end_offset(&self) -> i64;
    fn high_watermark(&self) -> i64;
    fn latest_epoch(&self) -> Option<i32>;
    /// The largest epoch at or below `epoch` this log holds and where it ends here.
    fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)>;
}

/// A partition's log and high watermark, as the decisions read them.
struct PartitionLog<'a> {
    log: &'a quipu_storage::log::Log,
    high_watermark: i64,
}

impl<'a> PartitionLog<'a> {
    fn of(log: &'a quipu_storage::log::Log, high_watermark: i64) -> Self {
        Self {
            log,
            high_watermark,
        }
    }
}

impl LocalLog for PartitionLog<'_> {
    fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }
    fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }
    fn high_watermark(&self) -> i64 {
        self.high_watermark
    }
    fn latest_epoch(&self) -> Option<i32> {
        self.log.epoch_entries().last().map(|e| e.epoch)
    }
    fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.log.end_offset_for_epoch(epoch)
    }
}

/// What a follower does before it fetches in a new leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstStep {
    /// An empty log has nothing to cut.
    Agreed,
    /// Records with no epoch known: only the high watermark is known committed.
    CutTo(i64),
    /// Ask the leader OffsetForLeaderEpoch for this epoch, the log's latest.
    Ask(i32),
}

pub(crate) fn first_step(local: &impl LocalLog) -> FirstStep {
    if local.log_end_offset() == local.log_start_offset() {
        return FirstStep::Agreed;
    }
    match local.latest_epoch() {
        None => FirstStep::CutTo(local.high_watermark()),
        Some(latest) => FirstStep::Ask(latest),
    }
}

/// Where a follower cuts its log given the leader's OffsetForLeaderEpoch answer `(leader_epoch,
/// leader_end)` for `asked_epoch` (KIP-101, KIP-279), and whether the logs then agree on their
/// last epoch (`false`: cut there and ask again). A cut at or past the log end cuts nothing.
pub(crate) fn truncation_point(
    asked_epoch: i32,
    (leader_epoch, leader_end): (i32, i64),
    local: &impl LocalLog,
) -> (i64, bool) {
    if leader_epoch < 0 || leader_end < 0 {
        // The leader knows no epoch at or below ours: only our high watermark is known good.
        return (local.high_watermark(), true);
    }
    let log_end_offset = local.log_end_offset();
    if leader_epoch == asked_epoch {
        return (leader_end.min(log_end_offset), true);
    }
    // The leader's log has an older last epoch at or below ours (KIP-279): cut at the end of
    // that epoch here, or, if this log never had it, at the end of the epoch before, and ask
    // again.
    match local.end_offset_for_epoch(leader_epoch) {
        Some((epoch, end)) if epoch == leader_epoch => (leader_end.min(end), true),
        Some((_, end)) => (end.min(leader_end), false),
        None => (local.log_start_offset(), true),
    }
}

fn cut(partition: &Partition, offset: i64, start_over_at: Option<i64>) {
    let log_end_offset = partition.log().log_end_offset();
    if start_over_at.is_none() && offset >= log_end_offset {
        return;
    }
    tracing::info!(topic = %partition.topic(), partition = partition.index(), log_end_offset, offset, "truncating the follower's log to its leader's");
    // A truncation may copy and fsync a segment a reader holds: not on the runtime's time.
    let truncated = tokio::task::block_in_place(|| partition.truncate(offset, start_over_at));
    if let Err(e) = truncated {
        partition.take_offline(&e);
    }
}

/// Adds a partition entry under its topic's entry, making the topic's entry if it is new.
fn push_partition<T: Default, P>(
    topics: &mut Vec<T>,
    name: &str,
    partition: P,
    topic_name: impl Fn(&mut T) -> &mut TopicName,
    partitions: impl Fn(&mut T) -> &mut Vec<P>,
) {
    let at = topics
        .iter_mut()
        .position(|t| topic_name(t).0.as_str() == name);
    let at = at.unwrap_or_else(|| {
        let mut t = T::default();
        *topic_name(&mut t) = TopicName(StrBytes::from_string(name.to_string()));
        topics.push(t);
        topics.len() - 1
    });
    partitions(&mut topics[at]).push(partition);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of `(epoch, start_offset)` entries ending at `end`, with a high watermark.
    struct Fake {
        epochs: Vec<(i32, i64)>,
        end: i64,
        hw: i64,
    }

    impl LocalLog for Fake {
        fn log_start_offset(&self) -> i64 {
            0
        }
        fn log_end_offset(&self) -> i64 {
            self.end
        }
        fn high_watermark(&self) -> i64 {
            self.hw
        }
        fn latest_epoch(&self) -> Option<i32> {
            self.epochs.last().map(|e| e.0)
        }
        fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
            let i = self.epochs.iter().rposition(|e| e.0 <= epoch)?;
            let end = self.epochs.get(i + 1).map_or(self.end, |next| next.1);
            Some((self.epochs[i].0, end))
        }
    }

    #[test]
    fn a_follower_cuts_where_the_epochs_say_never_at_its_high_watermark() {
        let log = Fake {
            epochs: vec![(1, 0), (3, 10), (5, 20)],
            end: 30,
            hw: 12,
        };
        assert_eq!(first_step(&log), FirstStep::Ask(5));
        // The leader has epoch 5 up to 25: cut there.
        assert_eq!(truncation_point(5, (5, 25), &log), (25, true));
        // Up to past our end: nothing to cut.
        assert_eq!(truncation_point(5, (5, 40), &log), (30, true));
        // The leader's last epoch at or below 5 is 3, ending at 15: cut there (KIP-279).
        assert_eq!(truncation_point(5, (3, 15), &log), (15, true));
        // Epoch 4, which this log never had: cut at the end of 3 here and ask again.
        assert_eq!(truncation_point(5, (4, 22), &log), (20, false));
        // The leader knows no epoch at or below ours: only the high watermark is known.
        assert_eq!(truncation_point(5, (-1, -1), &log), (12, true));
        let empty = Fake {
            epochs: Vec::new(),
            end: 0,
            hw: 0,
        };
        assert_eq!(first_step(&empty), FirstStep::Agreed);
        let no_epochs = Fake {
            epochs: Vec::new(),
            end: 8,
            hw: 3,
        };
        assert_eq!(first_step(&no_epochs), FirstStep::CutTo(3));
    }
}
