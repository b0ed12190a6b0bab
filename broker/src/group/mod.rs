//! The group coordinator (classic protocol): consumer groups, their rebalances and their committed
//! offsets, with every change that must survive a restart written to `__consumer_offsets` first.
//!
//! This broker leads every partition of `__consumer_offsets`, so it coordinates every group. Group
//! state lives in memory and is derived from that log: at start each partition is replayed
//! (committed offsets, and each group's last membership record), and tombstones delete. The topic
//! is compacted, so replay stays short.
//!
//! - [`offsets_topic`]: the record formats (Kafka's own), and which partition holds a group.
//! - [`state`]: one group's state machine, members and waiting requests.
//!
//! Invariants: an offset commit or a group's new membership is in the log before it is
//! acknowledged or takes effect; one lock covers all groups and is never held across an await;
//! a member that sends nothing for its session timeout (and has no request waiting) is removed.

pub mod offsets_topic;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quipu_config::BrokerConfig;
use quipu_protocol::record::{encode_batch, plain_record};
use quipu_protocol::records::{Compression, RecordBatchDecoder};
use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::controller::{Controller, Placement};
use crate::image::{Change, MetadataImage};
use crate::metadata::MetadataError;
use crate::partition::{LeaderAppendError, Partition};
use crate::publisher::MetadataSubscriber;
use crate::replica_manager::ReplicaManager;
use offsets_topic::{GroupValue, Key, OffsetValue};
use state::*;

/// A JoinGroup as the coordinator needs it.
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member first gets a member id and must join again with it (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: the leader may be told to skip the assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

/// A group as DescribeGroups shows it.
pub struct DescribedGroup {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// One committed offset of an OffsetCommit.
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Records the coordinator appended to a `__consumer_offsets` partition as its leader: the last
/// offset and the leader epoch they went in under.
pub struct Appended {
    pub partition: Arc<Partition>,
    pub last_offset: i64,
    pub leader_epoch: i32,
}

impl Appended {
    /// Waits until the records are replicated (below the high watermark), for at most `timeout`;
    /// Kafka's coordinator errors otherwise: NOT_COORDINATOR when leadership moved,
    /// COORDINATOR_NOT_AVAILABLE with too few in-sync replicas, REQUEST_TIMED_OUT.
    pub async fn replicated(&self, min_insync_replicas: i32, timeout: std::time::Duration) -> i16 {
        let outcome = self
            .partition
            .wait_replicated(
                (self.last_offset, self.leader_epoch),
                min_insync_replicas,
                timeout,
            )
            .await;
        match outcome {
            Ok(()) => NONE,
            Err(quipu_protocol::ResponseError::NotLeaderOrFollower) => NOT_COORDINATOR,
            Err(quipu_protocol::ResponseError::RequestTimedOut) => {
                quipu_protocol::ResponseError::RequestTimedOut.code()
            }
            Err(_) => COORDINATOR_NOT_AVAILABLE,
        }
    }
}

pub struct GroupCoordinator {
    config: BrokerConfig,
    replicas: Arc<ReplicaManager>,
    groups: Mutex<HashMap<String, Group>>,
    /// The `__consumer_offsets` partitions whose groups this broker has loaded and coordinates.
    /// Taken after `groups` when both are held.
    owned: RwLock<Owned>,
}

/// The offsets topic's partition count and the partitions of it this broker coordinates.
#[derive(Default)]
struct Owned {
    partition_count: i32,
    partitions: BTreeMap<i32, Arc<Partition>>,
}

impl GroupCoordinator {
    /// A coordinator of no groups yet: it takes up the `__consumer_offsets` partitions this
    /// broker leads as the metadata publisher hands them over.
    pub fn new(config: &BrokerConfig, replicas: Arc<ReplicaManager>) -> Self {
        Self {
            config: config.clone(),
            replicas,
            groups: Mutex::new(HashMap::new()),
            owned: RwLock::new(Owned::default()),
        }
    }

    /// Takes up the groups of `__consumer_offsets` partition `index` of `partition_count`:
    /// replays the partition into them.
    fn elect(&self, index: i32, partition_count: i32) {
        if self.owned().partitions.contains_key(&index) {
            return;
        }
        let Some(partition) = self.replicas.partition(offsets_topic::TOPIC, index) else {
            return;
        };
        let (now, mut loaded) = (Instant::now(), HashMap::new());
        for (key, value) in read_records(&partition) {
            apply(&mut loaded, key, value, now);
        }
        loaded.retain(|_, g: &mut Group| !g.members.is_empty() || !g.offsets.is_empty());
        let count = loaded.len();
        let mut groups = self.lock();
        groups.extend(loaded);
        let mut owned = self.owned.write().expect("owned lock");
        owned.partition_count = partition_count;
        owned.partitions.insert(index, partition);
        if count > 0 {
            tracing::info!(
                partition = index,
                groups = count,
                "loaded consumer groups from __consumer_offsets"
            );
        }
    }

    /// Gives up the groups of partition `index`; their waiting requests end.
    fn resign(&self, index: i32) {
        let mut groups = self.lock();
        let mut owned = self.owned.write().expect("owned lock");
        if owned.partitions.remove(&index).is_some() {
            let count = owned.partition_count;
            groups.retain(|id, _| offsets_topic::partition_for(id, count) != index);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().expect("group coordinator lock poisoned")
    }

    fn owned(&self) -> std::sync::RwLockReadGuard<'_, Owned> {
        self.owned.read().expect("owned lock")
    }

    /// The `__consumer_offsets` partition that holds `group_id`, or NOT_COORDINATOR unless this
    /// broker has taken it up.
    fn partition(&self, group_id: &str) -> Result<Arc<Partition>, i16> {
        let owned = self.owned();
        if owned.partition_count == 0 {
            return Err(NOT_COORDINATOR);
        }
        let index = offsets_topic::partition_for(group_id, owned.partition_count);
        owned.partitions.get(&index).cloned().ok_or(NOT_COORDINATOR)
    }

    /// NOT_COORDINATOR unless this broker coordinates `group_id`.
    fn check_coordinator(&self, group_id: &str) -> Result<(), i16> {
        self.partition(group_id).map(|_| ())
    }

    /// Creates `__consumer_offsets` (compacted) unless it exists.
    pub fn create_offsets_topic(
        &self,
        controller: &Controller,
    ) -> Result<Arc<crate::metadata::Topic>, MetadataError> {
        if let Some(t) = controller.metadata().topic(offsets_topic::TOPIC) {
            return Ok(t);
        }
        let overrides: BTreeMap<String, String> = [
            ("cleanup.policy", "compact".to_string()),
            (
                "segment.bytes",
                self.config.offsets_topic_segment_bytes.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // A single node (no voters configured) has one broker to place replicas on.
        let replication_factor = match self.config.quorum_voters().is_empty() {
            true => 1,
            false => self.config.offsets_topic_replication_factor,
        };
        let placement =
            Placement::auto(self.config.offsets_topic_num_partitions, replication_factor);
        match controller.create_topic(offsets_topic::TOPIC, &placement, overrides) {
            Err(MetadataError::TopicExists(_)) => controller
                .metadata()
                .topic(offsets_topic::TOPIC)
                .ok_or(MetadataError::UnknownTopic(offsets_topic::TOPIC.into())),
            other => other,
        }
    }

    /// Appends records for one group to its partition; the change may take effect once this
    /// returns `Ok`.
    fn persist(&self, group_id: &str, records: Vec<(Key, Option<Bytes>)>) -> Result<(), i16> {
        self.persist_appended(group_id, records).map(drop)
    }

    /// As [`GroupCoordinator::persist`]; returns where the records went, for a caller that waits
    /// until they are replicated (below the high watermark) before it answers.
    fn persist_appended(
        &self,
        group_id: &str,
        records: Vec<(Key, Option<Bytes>)>,
    ) -> Result<Option<Appended>, i16> {
        if records.is_empty() {
            return Ok(None);
        }
        let partition = self.partition(group_id)?;
        let now = now_ms();
        let records: Vec<_> = records
            .into_iter()
            .enumerate()
            .map(|(i, (key, value))| plain_record(i as i64, now, Some(key.encode()), value))
            .collect();
        let batch = encode_batch(&records, Compression::None).map_err(|e| {
            tracing::error!(error = %e, "cannot encode a __consumer_offsets batch");
            COORDINATOR_NOT_AVAILABLE
        })?;
        match partition.append_checked_batch(&batch, now) {
            Ok((info, epoch)) => Ok(Some(Appended {
                partition,
                last_offset: info.last_offset,
                leader_epoch: epoch,
            })),
            Err(LeaderAppendError::NotLeader) => Err(NOT_COORDINATOR),
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "cannot write to __consumer_offsets");
                Err(COORDINATOR_NOT_AVAILABLE)
            }
        }
    }

    fn persist_group(&self, group: &Group) -> Result<(), i16> {
        let key = Key::Group {
            group: group.id.clone(),
        };
        self.persist(&group.id, vec![(key, Some(group.to_value().encode()))])
    }

    pub async fn join(&self, j: JoinRequest) -> JoinOutcome {
        let waiter = match self.start_join(j) {
            Ok(rx) => rx,
            Err(outcome) => return *outcome,
        };
        waiter
            .await
            .unwrap_or_else(|_| JoinOutcome::error(REBALANCE_IN_PROGRESS, ""))
    }

    fn start_join(
        &self,
        j: JoinRequest,
    ) -> Result<oneshot::Receiver<JoinOutcome>, Box<JoinOutcome>> {
        let fail = |code: i16| Err(Box::new(JoinOutcome::error(code, &j.member_id)));
        if let Err(code) = self.check_join(&j) {
            return fail(code);
        }
        let (now, now_ms) = (Instant::now(), now_ms());
        let mut groups = self.lock();
        if !groups.contains_key(&j.group_id) && !j.member_id.is_empty() {
            return fail(UNKNOWN_MEMBER_ID);
        }
        let group = groups
            .entry(j.group_id.clone())
            .or_insert_with(|| Group::new(&j.group_id, now_ms));
        if !group.supports(&j.protocol_type, &j.protocols) {
            return fail(INCONSISTENT_GROUP_PROTOCOL);
        }
        let (tx, rx) = oneshot::channel();
        let mut member_id = j.member_id.clone();
        let mut is_new = false;
        if member_id.is_empty() {
            let prefix = j.group_instance_id.as_deref().unwrap_or(&j.client_id);
            member_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
            if let Some(instance) = &j.group_instance_id {
                if let Some(old) = group.static_members.get(instance).cloned() {
                    return self.replace_static_member(
                        group,
                        &j,
                        (&old, &member_id),
                        (tx, rx),
                        now,
                        now_ms,
                    );
                }
            } else if j.require_known_member_id {
                return Err(Box::new(self.hand_out_member_id(group, &j, member_id, now)));
            }
            is_new = true;
        } else if group.pending_members.remove(&member_id).is_some() {
            is_new = true;
        } else if let Some(code) = group.validate_member(&member_id, j.group_instance_id.as_deref())
        {
            return fail(code);
        }
        if is_new {
            if let Err(code) = self.admit(group, &j, &member_id, now) {
                return fail(code);
            }
        } else if let Some(outcome) = update_member(group, &j, &member_id, now) {
            return Err(Box::new(outcome));
        }
        Ok(self.rejoin(group, &member_id, tx, now, now_ms, is_new, rx))
    }

    /// What a JoinGroup must carry whatever the group: an id, a session timeout within the
    /// broker's bounds, a protocol type and protocols.
    fn check_join(&self, j: &JoinRequest) -> Result<(), i16> {
        if j.group_id.is_empty() {
            return Err(INVALID_GROUP_ID);
        }
        self.check_coordinator(&j.group_id)?;
        if j.session_timeout_ms < self.config.group_min_session_timeout_ms
            || j.session_timeout_ms > self.config.group_max_session_timeout_ms
        {
            return Err(INVALID_SESSION_TIMEOUT);
        }
        if j.protocol_type.is_empty() || j.protocols.is_empty() {
            return Err(INCONSISTENT_GROUP_PROTOCOL);
        }
        Ok(())
    }

    /// KIP-394: a new dynamic member first gets an id to join with (MEMBER_ID_REQUIRED), held
    /// as pending for a session. Ids handed out count against the group's size, so a client that
    /// only ever asks for ids cannot grow the pending set without a bound.
    fn hand_out_member_id(
        &self,
        group: &mut Group,
        j: &JoinRequest,
        member_id: String,
        now: Instant,
    ) -> JoinOutcome {
        if group.members.len() + group.pending_members.len() >= self.config.group_max_size as usize
        {
            return JoinOutcome::error(GROUP_MAX_SIZE_REACHED, &j.member_id);
        }
        group.pending_members.insert(
            member_id.clone(),
            now + Duration::from_millis(j.session_timeout_ms as u64),
        );
        JoinOutcome::error(MEMBER_ID_REQUIRED, &member_id)
    }

    /// Adds a new member (a static one under its instance id), within `group.max.size`.
    fn admit(
        &self,
        group: &mut Group,
        j: &JoinRequest,
        member_id: &str,
        now: Instant,
    ) -> Result<(), i16> {
        // A pending member that rejoins was counted when its id was handed out.
        if group.members.len() + group.pending_members.len() >= self.config.group_max_size as usize
        {
            return Err(GROUP_MAX_SIZE_REACHED);
        }
        if group.members.is_empty() {
            group.protocol_type = Some(j.protocol_type.clone());
        }
        if let Some(instance) = &j.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), member_id.to_string());
        }
        group
            .members
            .insert(member_id.to_string(), new_member(j, member_id, now));
        Ok(())
    }

    /// A static member back with a new member id (Kafka's `replaceStaticMember`): it takes the
    /// old member's place and assignment, and the old id is fenced (its waiting requests get
    /// FENCED_INSTANCE_ID). A stable group whose selected protocol would not change does not
    /// rebalance: the change is written first, then the member gets the current generation.
    #[allow(clippy::too_many_arguments)]
    fn replace_static_member(
        &self,
        group: &mut Group,
        j: &JoinRequest,
        (old_id, new_id): (&str, &str),
        (tx, rx): (oneshot::Sender<JoinOutcome>, oneshot::Receiver<JoinOutcome>),
        now: Instant,
        now_ms: i64,
    ) -> Result<oneshot::Receiver<JoinOutcome>, Box<JoinOutcome>> {
        let old_leader = group.leader.clone();
        let was_leader = old_leader.as_deref() == Some(old_id);
        let previous = group
            .remove_member_with(old_id, FENCED_INSTANCE_ID)
            .expect("a static member is a member");
        let instance = j.group_instance_id.clone().expect("a static member");
        let mut member = new_member(j, new_id, now);
        member.assignment = previous.assignment.clone();
        group
            .static_members
            .insert(instance.clone(), new_id.to_string());
        group.members.insert(new_id.to_string(), member);
        if was_leader {
            group.leader = Some(new_id.to_string());
        }
        if group.state != GroupState::Stable || group.select_protocol() != group.protocol {
            return Ok(self.rejoin(group, new_id, tx, now, now_ms, false, rx));
        }
        if let Err(code) = self.persist_group(group) {
            // Undo: the old member is back (its fenced requests stay answered).
            group.members.remove(new_id);
            group.static_members.insert(instance, old_id.to_string());
            group.members.insert(old_id.to_string(), previous);
            group.leader = old_leader.clone();
            let mut out = current_join(group, "");
            out.error = code;
            out.members.clear();
            return Err(Box::new(out));
        }
        let mut out = current_join(group, new_id);
        if j.supports_skip_assignment {
            out.skip_assignment = was_leader;
        } else {
            // Before v9 a leader cannot skip the assignment, so it is told the old leader id and
            // acts as a follower.
            out.leader = old_leader.unwrap_or_default();
            out.members.clear();
        }
        Ok(ready(out))
    }

    /// Sets the member's join waiter, starting a rebalance if one is not under way, and ends the
    /// join phase if everyone is in.
    #[allow(clippy::too_many_arguments)]
    fn rejoin(
        &self,
        group: &mut Group,
        member_id: &str,
        tx: oneshot::Sender<JoinOutcome>,
        now: Instant,
        now_ms: i64,
        is_new: bool,
        rx: oneshot::Receiver<JoinOutcome>,
    ) -> oneshot::Receiver<JoinOutcome> {
        let member = group.members.get_mut(member_id).expect("member present");
        member.join_waiter = Some(tx);
        match group.state {
            GroupState::PreparingRebalance => {
                if is_new {
                    group.note_new_member();
                }
            }
            _ => group.prepare_rebalance(now, now_ms, self.config.group_initial_rebalance_delay_ms),
        }
        self.maybe_complete_join(group, now, now_ms);
        rx
    }

    fn maybe_complete_join(&self, group: &mut Group, now: Instant, now_ms: i64) {
        if group.join_complete(now) && group.complete_join(now, now_ms) {
            // The group emptied: its membership record says so. As in Kafka, a failed write is
            // logged and the group stays empty in memory; its last generation is then what a
            // restart replays, and members rejoining it start a new one either way.
            if let Err(code) = self.persist_group(group) {
                tracing::warn!(group = %group.id, error_code = code, "cannot record that the group is empty");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: HashMap<String, Bytes>,
    ) -> SyncOutcome {
        let fail = |error: i16| SyncOutcome {
            error,
            ..SyncOutcome::default()
        };
        if let Err(code) = self.check_coordinator(group_id) {
            return fail(code);
        }
        let rx = {
            let (now, now_ms) = (Instant::now(), now_ms());
            let mut groups = self.lock();
            let Some(group) = groups.get_mut(group_id) else {
                return fail(UNKNOWN_MEMBER_ID);
            };
            if let Some(code) = group.validate_member(member_id, group_instance_id) {
                return fail(code);
            }
            if generation != group.generation {
                return fail(ILLEGAL_GENERATION);
            }
            if protocol_type.is_some_and(|p| Some(p) != group.protocol_type.as_deref())
                || protocol_name.is_some_and(|p| Some(p) != group.protocol.as_deref())
            {
                return fail(INCONSISTENT_GROUP_PROTOCOL);
            }
            match group.state {
                GroupState::Empty => return fail(UNKNOWN_MEMBER_ID),
                GroupState::PreparingRebalance => return fail(REBALANCE_IN_PROGRESS),
                GroupState::Stable => {
                    let m = group.members.get_mut(member_id).expect("checked");
                    m.refresh(now);
                    return SyncOutcome {
                        error: NONE,
                        protocol_type: group.protocol_type.clone(),
                        protocol_name: group.protocol.clone(),
                        assignment: m.assignment.clone(),
                    };
                }
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            group
                .members
                .get_mut(member_id)
                .expect("checked")
                .sync_waiter = Some(tx);
            if group.leader.as_deref() == Some(member_id) {
                group.complete_sync(assignments, now, now_ms);
                if let Err(code) = self.persist_group(group) {
                    tracing::warn!(
                        group = group_id,
                        code,
                        "membership not written: rebalancing again"
                    );
                    group.prepare_rebalance(now, now_ms, 0);
                }
            }
            rx
        };
        rx.await.unwrap_or_else(|_| fail(REBALANCE_IN_PROGRESS))
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> i16 {
        if let Err(code) = self.check_coordinator(group_id) {
            return code;
        }
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if let Some(code) = group.validate_member(member_id, group_instance_id) {
            return code;
        }
        let state = group.state;
        let group_generation = group.generation;
        let member = group.members.get_mut(member_id).expect("validated");
        if generation != group_generation {
            return ILLEGAL_GENERATION;
        }
        member.refresh(Instant::now());
        match state {
            GroupState::Empty => UNKNOWN_MEMBER_ID,
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        }
    }

    /// LeaveGroup: each (member id, instance id) leaves; returns an error per member.
    pub fn leave(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, i16> {
        self.check_coordinator(group_id)?;
        let (now, now_ms) = (Instant::now(), now_ms());
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(UNKNOWN_MEMBER_ID);
        };
        let mut errors = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for (member_id, instance) in leaving {
            let target = match instance {
                Some(i) => match group.static_members.get(i) {
                    Some(m) if member_id.is_empty() || m == member_id => Some(m.clone()),
                    Some(_) => {
                        errors.push(FENCED_INSTANCE_ID);
                        continue;
                    }
                    None => None,
                },
                None => Some(member_id.clone()),
            };
            match target {
                Some(m) if group.remove_member(&m).is_some() => {
                    removed = true;
                    errors.push(NONE);
                }
                Some(m) if group.pending_members.remove(&m).is_some() => errors.push(NONE),
                _ => errors.push(UNKNOWN_MEMBER_ID),
            }
        }
        if removed {
            self.after_removal(group, now, now_ms);
        }
        Ok(errors)
    }

    /// After members left or expired: a settled group rebalances; a rebalancing one may be done.
    fn after_removal(&self, group: &mut Group, now: Instant, now_ms: i64) {
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                group.prepare_rebalance(now, now_ms, 0)
            }
            GroupState::PreparingRebalance | GroupState::Empty => {}
        }
        self.maybe_complete_join(group, now, now_ms);
    }

    /// OffsetCommit: returns a group-wide error, or commits every entry (each with its error),
    /// and where the commit was appended: the caller answers once it is replicated.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        entries: Vec<CommitEntry>,
        version: i16,
    ) -> (Vec<i16>, Option<Appended>) {
        let all = |code: i16| (vec![code; entries.len()], None);
        if group_id.is_empty() {
            return all(INVALID_GROUP_ID);
        }
        if let Err(code) = self.check_coordinator(group_id) {
            return all(code);
        }
        let now_ms = now_ms();
        let mut groups = self.lock();
        let group = match groups.get_mut(group_id) {
            None if generation < 0 => groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now_ms)),
            None if version >= 9 => return all(GROUP_ID_NOT_FOUND),
            None => return all(ILLEGAL_GENERATION),
            Some(g) => match commit_refusal(g, generation, member_id, group_instance_id) {
                Some(code) => return all(code),
                None => g,
            },
        };
        let max_metadata = self.config.offset_metadata_max_bytes.max(0) as usize;
        let mut errors = Vec::with_capacity(entries.len());
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for e in entries {
            let metadata = e.metadata.unwrap_or_default();
            if metadata.len() > max_metadata {
                errors.push(OFFSET_METADATA_TOO_LARGE);
                continue;
            }
            errors.push(NONE);
            let value = OffsetValue {
                offset: e.offset,
                leader_epoch: e.leader_epoch,
                metadata,
                commit_timestamp_ms: now_ms,
            };
            records.push((
                Key::Offset {
                    group: group_id.to_string(),
                    topic: e.topic.clone(),
                    partition: e.partition,
                },
                Some(value.encode()),
            ));
            accepted.push(((e.topic, e.partition), value));
        }
        let appended = match self.persist_appended(group_id, records) {
            Ok(appended) => appended,
            Err(code) => {
                let errors = errors.into_iter().map(|e| if e == NONE { code } else { e });
                return (errors.collect(), None);
            }
        };
        group.offsets.extend(accepted);
        if let Some(m) = group.members.get_mut(member_id) {
            m.refresh(Instant::now());
        }
        (errors, appended)
    }

    /// OffsetFetch: the committed offsets of `partitions`, or of every partition when `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<(String, i32, Option<OffsetValue>)>, i16> {
        self.check_coordinator(group_id)?;
        let groups = self.lock();
        let offsets = groups.get(group_id).map(|g| &g.offsets);
        Ok(match partitions {
            Some(wanted) => wanted
                .into_iter()
                .map(|(t, p)| {
                    let v = offsets.and_then(|o| o.get(&(t.clone(), p)).cloned());
                    (t, p, v)
                })
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|((t, p), v)| (t.clone(), *p, Some(v.clone())))
                .collect(),
        })
    }

    /// Every group as (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let groups = self.lock();
        let mut out: Vec<_> = groups
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The group as DescribeGroups shows it; `None` if it does not exist.
    pub fn describe(&self, group_id: &str) -> Result<Option<DescribedGroup>, i16> {
        self.check_coordinator(group_id)?;
        let groups = self.lock();
        let Some(g) = groups.get(group_id) else {
            return Ok(None);
        };
        let protocol = g.protocol.clone().unwrap_or_default();
        let value = g.to_value();
        Ok(Some(DescribedGroup {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol,
            members: value
                .members
                .into_iter()
                .map(|m| {
                    (
                        m.member_id,
                        m.group_instance_id,
                        m.client_id,
                        m.client_host,
                        m.subscription,
                        m.assignment,
                    )
                })
                .collect(),
        }))
    }

    /// DeleteGroups for one group: only an empty group may go; its offsets and membership get
    /// tombstones.
    pub fn delete(&self, group_id: &str) -> i16 {
        if let Err(code) = self.check_coordinator(group_id) {
            return code;
        }
        let mut groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return GROUP_ID_NOT_FOUND;
        };
        if group.state != GroupState::Empty {
            return NON_EMPTY_GROUP;
        }
        let mut records: Vec<(Key, Option<Bytes>)> = group
            .offsets
            .keys()
            .map(|(t, p)| offset_tombstone(group_id, t, *p))
            .collect();
        records.push((
            Key::Group {
                group: group_id.to_string(),
            },
            None,
        ));
        match self.persist(group_id, records) {
            Ok(()) => {
                groups.remove(group_id);
                NONE
            }
            Err(code) => code,
        }
    }

    /// OffsetDelete: removes committed offsets of partitions the group does not consume now.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        self.check_coordinator(group_id)?;
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(GROUP_ID_NOT_FOUND);
        };
        let subscribed = |topic: &str| {
            group.state != GroupState::Empty
                && group.members.values().any(|m| {
                    m.protocols
                        .iter()
                        .any(|(_, meta)| subscription_has(meta, topic))
                })
        };
        let mut errors = Vec::new();
        let mut records = Vec::new();
        for (t, p) in partitions {
            if subscribed(t) {
                errors.push(GROUP_SUBSCRIBED_TO_TOPIC);
                continue;
            }
            errors.push(NONE);
            if group.offsets.contains_key(&(t.clone(), *p)) {
                records.push(offset_tombstone(group_id, t, *p));
            }
        }
        self.persist(group_id, records)?;
        for ((t, p), e) in partitions.iter().zip(&errors) {
            if *e == NONE {
                group.offsets.remove(&(t.clone(), *p));
            }
        }
        Ok(errors)
    }

    /// Timers: members past their session timeout leave, pending member ids expire, and
    /// rebalances whose time is up complete.
    pub fn tick(&self) {
        let (now, now_ms) = (Instant::now(), now_ms());
        let mut groups = self.lock();
        for group in groups.values_mut() {
            group.pending_members.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| !m.is_waiting() && m.heartbeat_deadline <= now)
                .map(|m| m.member_id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %group.id, member = %id, "member session expired");
                group.remove_member(id);
            }
            if !expired.is_empty() {
                self.after_removal(group, now, now_ms);
            } else {
                self.maybe_complete_join(group, now, now_ms);
            }
        }
    }

    /// Offsets of empty groups older than `offsets.retention.minutes` get tombstones, and empty
    /// groups left without offsets are deleted.
    pub fn expire_offsets(&self, now_ms: i64) {
        let retention_ms = self.config.offsets_retention_minutes.saturating_mul(60_000);
        let mut groups = self.lock();
        let mut gone = Vec::new();
        for group in groups.values_mut() {
            if group.state != GroupState::Empty {
                continue;
            }
            let expired: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(_, v)| now_ms.saturating_sub(v.commit_timestamp_ms) > retention_ms)
                .map(|(k, _)| k.clone())
                .collect();
            let mut records: Vec<(Key, Option<Bytes>)> = expired
                .iter()
                .map(|(t, p)| offset_tombstone(&group.id, t, *p))
                .collect();
            let emptied = expired.len() == group.offsets.len();
            if emptied {
                records.push((
                    Key::Group {
                        group: group.id.clone(),
                    },
                    None,
                ));
            }
            if records.is_empty() || self.persist(&group.id, records).is_err() {
                continue;
            }
            for k in &expired {
                group.offsets.remove(k);
            }
            if !expired.is_empty() {
                tracing::info!(group = %group.id, offsets = expired.len(), "expired committed offsets");
            }
            if emptied {
                gone.push(group.id.clone());
            }
        }
        for id in gone {
            groups.remove(&id);
        }
    }
}

/// A known member joins again: a follower with the same subscription gets the current join
/// (no rebalance); otherwise its protocols and timeouts are updated for the rebalance.
fn update_member(
    group: &mut Group,
    j: &JoinRequest,
    member_id: &str,
    now: Instant,
) -> Option<JoinOutcome> {
    let m = group.members.get_mut(member_id).expect("validated above");
    let unchanged = m.protocols == j.protocols;
    let leader = group.leader.as_deref() == Some(member_id);
    if unchanged
        && (group.state == GroupState::CompletingRebalance
            || (group.state == GroupState::Stable && !leader))
    {
        m.refresh(now);
        return Some(current_join(group, member_id));
    }
    m.protocols = j.protocols.clone();
    m.session_timeout_ms = j.session_timeout_ms;
    m.rebalance_timeout_ms = j.rebalance_timeout_ms;
    None
}

/// The record that deletes a committed offset.
fn offset_tombstone(group: &str, topic: &str, partition: i32) -> (Key, Option<Bytes>) {
    let key = Key::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    };
    (key, None)
}

fn new_member(j: &JoinRequest, member_id: &str, now: Instant) -> Member {
    let mut m = Member {
        member_id: member_id.to_string(),
        group_instance_id: j.group_instance_id.clone(),
        client_id: j.client_id.clone(),
        client_host: j.client_host.clone(),
        session_timeout_ms: j.session_timeout_ms,
        rebalance_timeout_ms: j.rebalance_timeout_ms,
        protocol_type: j.protocol_type.clone(),
        protocols: j.protocols.clone(),
        assignment: Bytes::new(),
        join_waiter: None,
        sync_waiter: None,
        heartbeat_deadline: now,
    };
    m.refresh(now);
    m
}

/// A receiver that already holds its answer.
fn ready(outcome: JoinOutcome) -> oneshot::Receiver<JoinOutcome> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(outcome);
    rx
}

/// The answer for a member joining a group that needs no rebalance for it: the current
/// generation (and, for the leader, the members).
fn current_join(group: &Group, member_id: &str) -> JoinOutcome {
    let leader = group.leader.clone().unwrap_or_default();
    let protocol = group.protocol.clone().unwrap_or_default();
    JoinOutcome {
        error: NONE,
        generation: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        member_id: member_id.to_string(),
        members: if leader == member_id {
            group
                .members
                .values()
                .map(|m| {
                    let meta = m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    (m.member_id.clone(), m.group_instance_id.clone(), meta)
                })
                .collect()
        } else {
            Vec::new()
        },
        leader,
        skip_assignment: false,
    }
}

/// Whether a consumer protocol subscription (ConsumerProtocolSubscription) names `topic`.
fn subscription_has(metadata: &Bytes, topic: &str) -> bool {
    use quipu_protocol::messages::ConsumerProtocolSubscription;
    use quipu_protocol::Decodable;
    if metadata.len() < 2 {
        return false;
    }
    let version = i16::from_be_bytes([metadata[0], metadata[1]]).clamp(0, 3);
    let mut body = metadata.slice(2..);
    // The client's bytes: their counts are checked before the decoder reserves by them.
    let shape = &quipu_protocol::request_shape::schema::CONSUMER_PROTOCOL_SUBSCRIPTION;
    if quipu_protocol::request_shape::check(shape, version, &body).is_err() {
        return false;
    }
    ConsumerProtocolSubscription::decode(&mut body, version)
        .map(|s| s.topics.iter().any(|t| t.as_str() == topic))
        .unwrap_or(false)
}

impl MetadataSubscriber for GroupCoordinator {
    /// Takes up the `__consumer_offsets` partitions this broker comes to lead and gives up
    /// those it stops leading or that are deleted.
    fn on_metadata(&self, image: &MetadataImage, changes: &[Change]) {
        for change in changes {
            match change {
                Change::TopicCreated(name) if name == offsets_topic::TOPIC => {
                    if let Some(t) = image.topic(name) {
                        for index in 0..t.partitions.len() as i32 {
                            self.follow_leadership(image, index);
                        }
                    }
                }
                Change::Partition {
                    topic, partition, ..
                } if topic == offsets_topic::TOPIC => self.follow_leadership(image, *partition),
                Change::TopicDeleted(gone) if &*gone.name == offsets_topic::TOPIC => {
                    for index in 0..gone.partitions.len() as i32 {
                        self.resign(index);
                    }
                }
                _ => {}
            }
        }
    }
}

impl GroupCoordinator {
    /// Once this broker's image has caught up: takes up every offsets partition it leads.
    pub fn take_up_after_catch_up(&self, image: &MetadataImage) {
        let Some(t) = image.topic(offsets_topic::TOPIC) else {
            return;
        };
        for index in 0..t.partitions.len() as i32 {
            self.follow_leadership(image, index);
        }
    }

    /// Elects or resigns for offsets partition `index` as the image's leadership says.
    fn follow_leadership(&self, image: &MetadataImage, index: i32) {
        let Some(t) = image.topic(offsets_topic::TOPIC) else {
            return;
        };
        // A restarted broker's image may be stale until it has caught up: it coordinates
        // nothing before then (see `take_up_after_catch_up`).
        let leads = self.replicas.is_caught_up()
            && t.partitions
                .get(index as usize)
                .is_some_and(|p| p.leader == self.replicas.node_id());
        if leads {
            self.elect(index, t.partitions.len() as i32);
        } else {
            self.resign(index);
        }
    }
}

/// Every record of a `__consumer_offsets` partition, in offset order.
fn read_records(partition: &Partition) -> Vec<(Key, Option<Bytes>)> {
    let mut out = Vec::new();
    let log = partition.log();
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    while offset < end {
        let Ok(Some(mut bytes)) = log.read(offset, end, 1 << 20, true) else {
            break;
        };
        let sets = match RecordBatchDecoder::decode_all(&mut bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(partition = partition.index(), offset, error = %e, "cannot decode __consumer_offsets: stopping its replay");
                break;
            }
        };
        let before = offset;
        for set in sets {
            for r in set.records {
                offset = offset.max(r.offset + 1);
                let Some(k) = r.key.as_ref() else { continue };
                match Key::decode(k) {
                    Ok(key) => out.push((key, r.value)),
                    Err(e) => {
                        tracing::warn!(offset = r.offset, error = %e, "skipping an unreadable __consumer_offsets key")
                    }
                }
            }
        }
        if offset == before {
            break;
        }
    }
    out
}

/// Replays one record into the groups.
fn apply(groups: &mut HashMap<String, Group>, key: Key, value: Option<Bytes>, now: Instant) {
    match key {
        Key::Offset {
            group,
            topic,
            partition,
        } => match value.map(|v| OffsetValue::decode(&v)) {
            Some(Ok(v)) => {
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, v.commit_timestamp_ms))
                    .offsets
                    .insert((topic, partition), v);
            }
            Some(Err(e)) => {
                tracing::warn!(group, error = %e, "skipping an unreadable offset record")
            }
            None => {
                if let Some(g) = groups.get_mut(&group) {
                    g.offsets.remove(&(topic, partition));
                }
            }
        },
        Key::Group { group } => match value.map(|v| GroupValue::decode(&v)) {
            Some(Ok(v)) => {
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, v.state_timestamp_ms))
                    .restore(v, now);
            }
            Some(Err(e)) => {
                tracing::warn!(group, error = %e, "skipping an unreadable group record")
            }
            None => {
                groups.remove(&group);
            }
        },
    }
}

/// Why a commit to an existing group is refused, in Kafka's order (GroupCoordinator's
/// validateOffsetCommit): the member (its instance id first), then its generation, and only then
/// a rebalance waiting for SyncGroup. A commit during PreparingRebalance with the current
/// generation is taken: the generation moves only when the join completes.
fn commit_refusal(
    group: &Group,
    generation: i32,
    member_id: &str,
    group_instance_id: Option<&str>,
) -> Option<i16> {
    if generation < 0 && group.state == GroupState::Empty {
        return None; // an admin or simple commit
    }
    if generation >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
        if let Some(code) = group.validate_member(member_id, group_instance_id) {
            return Some(code);
        }
        if generation != group.generation {
            return Some(ILLEGAL_GENERATION);
        }
    } else {
        return Some(UNKNOWN_MEMBER_ID); // an admin commit to a group with members
    }
    (group.state == GroupState::CompletingRebalance).then_some(REBALANCE_IN_PROGRESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Broker, TestBroker};

    fn broker(dir: &std::path::Path) -> TestBroker {
        let config = BrokerConfig {
            log_dirs: dir.to_path_buf(),
            offsets_topic_num_partitions: 3,
            ..BrokerConfig::default()
        };
        coordinating(TestBroker::open(config))
    }

    /// `b` with `__consumer_offsets` made, as the first FindCoordinator makes it.
    fn coordinating(b: TestBroker) -> TestBroker {
        let ctx = &b.requests;
        ctx.groups.create_offsets_topic(&ctx.controller).unwrap();
        b
    }

    fn commit(b: &Broker, group: &str, offset: i64) -> Vec<i16> {
        b.requests
            .groups
            .commit(
                group,
                -1,
                "",
                None,
                vec![CommitEntry {
                    topic: "t".into(),
                    partition: 0,
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                }],
                9,
            )
            .0
    }

    fn offset(b: &Broker, group: &str) -> Option<i64> {
        b.requests
            .groups
            .fetch_offsets(group, Some(vec![("t".into(), 0)]))
            .unwrap()[0]
            .2
            .as_ref()
            .map(|v| v.offset)
    }

    #[test]
    fn offsets_survive_reopening_and_expire_after_retention() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = broker(dir.path());
            assert_eq!(commit(&b, "kept", 5), vec![NONE]);
            assert_eq!(commit(&b, "kept", 7), vec![NONE]);
            assert_eq!(commit(&b, "old", 3), vec![NONE]);
            assert!(b.logs.close(crate::clock::now_ms()));
        }
        let b = broker(dir.path());
        assert_eq!(
            offset(&b, "kept"),
            Some(7),
            "replayed from __consumer_offsets"
        );
        assert_eq!(offset(&b, "old"), Some(3));
        // Past the retention, the empty groups' offsets go, with tombstones in the log.
        let later = now_ms() + b.config().offsets_retention_minutes * 60_000 + 1;
        b.requests.groups.expire_offsets(later);
        assert_eq!(offset(&b, "old"), None);
        assert!(
            b.requests.groups.list().is_empty(),
            "empty groups without offsets are deleted"
        );
        assert!(b.logs.close(crate::clock::now_ms()));
        drop(b);
        let b = broker(dir.path());
        assert_eq!(offset(&b, "kept"), None, "the tombstones replay too");
        assert!(b.requests.groups.list().is_empty());
    }

    /// The image with partition `index` of `__consumer_offsets` led by `leader`, and the
    /// change that says so, as the publisher hands them over.
    fn led_by(b: &Broker, index: i32, leader: i32) -> (MetadataImage, Vec<Change>) {
        let mut image = (*b.requests.metadata.image()).clone();
        let current = image.topic(offsets_topic::TOPIC).unwrap().partitions[index as usize].clone();
        let record = crate::metadata_log::record::MetadataRecord::Partition(
            crate::metadata_log::record::PartitionRecord {
                leader,
                leader_epoch: current.leader_epoch + 1,
                partition_epoch: current.partition_epoch + 1,
                ..crate::metadata_log::record::PartitionRecord::on_one_node(
                    offsets_topic::TOPIC,
                    index,
                    0,
                )
            },
        );
        let change = image.apply(&record).unwrap();
        (image, vec![change])
    }

    #[test]
    fn groups_go_with_leadership_of_their_offsets_partition_and_come_back_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let groups = &b.requests.groups;
        assert_eq!(commit(&b, "moving", 11), vec![NONE]);
        let index = offsets_topic::partition_for("moving", 3);
        // Another broker leads the partition now: its groups are no longer ours.
        let (image, changes) = led_by(&b, index, 2);
        groups.on_metadata(&image, &changes);
        assert_eq!(commit(&b, "moving", 12), vec![NOT_COORDINATOR]);
        assert_eq!(
            groups.fetch_offsets("moving", None).err(),
            Some(NOT_COORDINATOR)
        );
        assert!(groups.list().iter().all(|(id, _, _)| id != "moving"));
        // A group on another partition is untouched.
        let other = (0..)
            .map(|n| format!("other-{n}"))
            .find(|g| offsets_topic::partition_for(g, 3) != index)
            .unwrap();
        assert_eq!(commit(&b, &other, 5), vec![NONE]);
        // Leadership back: the partition is replayed, and the commit made before is there.
        let (image, changes) = led_by(&b, index, 0);
        groups.on_metadata(&image, &changes);
        assert_eq!(offset(&b, "moving"), Some(11));
        assert_eq!(commit(&b, "moving", 13), vec![NONE]);
        assert_eq!(offset(&b, "moving"), Some(13));
        assert_eq!(offset(&b, &other), Some(5));
    }

    #[test]
    fn a_group_is_bounded_by_group_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            log_dirs: dir.path().to_path_buf(),
            offsets_topic_num_partitions: 1,
            group_max_size: 2,
            group_initial_rebalance_delay_ms: 0,
            ..BrokerConfig::default()
        };
        let b = coordinating(TestBroker::open(config));
        let join = |member: &str| JoinRequest {
            group_id: "bounded".into(),
            member_id: member.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 100,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::new())],
            require_known_member_id: false,
            supports_skip_assignment: true,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let first = b.requests.groups.join(join("")).await;
            assert_eq!((first.error, first.generation), (NONE, 1));
            // The second join waits for the first member to rejoin; run both.
            let (second, again) = tokio::join!(
                b.requests.groups.join(join("")),
                b.requests.groups.join(join(&first.member_id))
            );
            assert_eq!((second.error, again.error), (NONE, NONE));
            assert_eq!(second.generation, 2);
            let third = b.requests.groups.join(join("")).await;
            assert_eq!(third.error, GROUP_MAX_SIZE_REACHED);
            // Ids handed out by the KIP-394 round count too.
            let mut asks = join("");
            asks.require_known_member_id = true;
            let refused = b.requests.groups.join(asks).await;
            assert_eq!(refused.error, GROUP_MAX_SIZE_REACHED);
        });
    }
}
