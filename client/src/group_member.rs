//! A consumer's membership of a group through the classic protocol: JoinGroup, SyncGroup (the
//! leader computes the assignment), heartbeats in a background task, LeaveGroup; and the
//! group's committed offsets (OffsetCommit, OffsetFetch).
//!
//! Invariants: a generation's assignment is used only after SyncGroup returned it; the heartbeat
//! task only ever raises the "rejoin" flag, which the consumer acts on in its next poll; offsets
//! are committed with the member's generation and id, so a member that was fenced by a rebalance
//! cannot overwrite its successor's commits (the coordinator answers ILLEGAL_GENERATION).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quipu_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use quipu_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use quipu_protocol::messages::leave_group_request::MemberIdentity;
use quipu_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use quipu_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use quipu_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use quipu_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
    TopicName,
};
use quipu_protocol::{Decodable, Encodable, Message, ResponseError, StrBytes};
use tokio::task::JoinHandle;

use crate::assignor;
use crate::cluster::{backoff, Cluster};
use crate::config::ConsumerConfig;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};

/// Highest OffsetFetch version used: v8 batches groups in another shape.
const MAX_OFFSET_FETCH_VERSION: i16 = 7;
/// Highest OffsetCommit version used: v9 is for the KIP-848 protocol.
const MAX_OFFSET_COMMIT_VERSION: i16 = 8;

/// A group member's identity in the current generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generation {
    /// The id the coordinator gave this member.
    pub member_id: String,
    /// The group's generation, which commits carry.
    pub generation_id: i32,
    /// The assignment strategy the group chose.
    pub protocol: String,
    /// Whether this member computed the group's assignment.
    pub leader: bool,
}

pub(crate) struct GroupMember {
    pub group_id: String,
    instance_id: Option<String>,
    pub generation: Option<Generation>,
    member_id: String,
    rejoin: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
}

impl GroupMember {
    pub fn new(group_id: String, instance_id: Option<String>) -> Self {
        Self {
            group_id,
            instance_id,
            generation: None,
            member_id: String::new(),
            rejoin: Arc::new(AtomicBool::new(true)),
            heartbeat: None,
        }
    }

    /// Whether the member must (re)join before it consumes: not joined yet, or the heartbeat
    /// learned of a rebalance.
    pub fn needs_rejoin(&self) -> bool {
        self.generation.is_none() || self.rejoin.load(Ordering::Acquire)
    }

    /// Joins (or rejoins) the group subscribed to `topics` and returns this member's
    /// assignment for the new generation.
    pub async fn join(
        &mut self,
        cluster: &Arc<Cluster>,
        config: &ConsumerConfig,
        topics: &[String],
    ) -> Result<Vec<TopicPartition>> {
        self.stop_heartbeat();
        self.generation = None;
        let mut attempt = 0;
        loop {
            match self.join_once(cluster, config, topics).await {
                Ok(assignment) => {
                    self.rejoin.store(false, Ordering::Release);
                    self.start_heartbeat(cluster.clone(), config);
                    return Ok(assignment);
                }
                Err(e) if e.is_retriable() || rejoin_error(&e) => {
                    if e.invalidates_metadata() {
                        cluster.invalidate_coordinator(&self.group_id);
                    }
                    if let Some(ResponseError::UnknownMemberId | ResponseError::IllegalGeneration) =
                        e.broker_error()
                    {
                        self.member_id.clear();
                    }
                    tracing::debug!(group = %self.group_id, %e, "rejoining");
                    attempt += 1;
                    if attempt > 50 {
                        return Err(e);
                    }
                    backoff(config.client.retry_backoff_ms, attempt.min(4)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn join_once(
        &mut self,
        cluster: &Arc<Cluster>,
        config: &ConsumerConfig,
        topics: &[String],
    ) -> Result<Vec<TopicPartition>> {
        let conn = cluster.coordinator(&self.group_id).await?;
        let subscription = encode_versioned(
            &ConsumerProtocolSubscription::default().with_topics(
                topics
                    .iter()
                    .map(|t| StrBytes::from_string(t.clone()))
                    .collect(),
            ),
            0,
        )?;
        let protocols = config
            .assignment_strategies
            .iter()
            .map(|s| {
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_string(s.clone()))
                    .with_metadata(subscription.clone())
            })
            .collect();
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group_id.clone())))
            .with_session_timeout_ms(config.session_timeout_ms as i32)
            .with_rebalance_timeout_ms(config.max_poll_interval_ms as i32)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_group_instance_id(self.instance_id.clone().map(StrBytes::from_string))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(protocols);
        // JoinGroup and SyncGroup wait for the whole group: the rebalance timeout on top of the
        // request timeout, as the Java client allows.
        let group_timeout_ms = config.max_poll_interval_ms + config.client.request_timeout_ms;
        let response = conn.send_timeout(&request, group_timeout_ms).await?;
        if response.error_code == ResponseError::MemberIdRequired.code() {
            // KIP-394: join again with the id the coordinator gave.
            self.member_id = response.member_id.to_string();
            return Err(Error::broker(response.error_code, "JoinGroup").expect("error"));
        }
        if let Some(e) = Error::broker(response.error_code, format!("join group {}", self.group_id))
        {
            return Err(e);
        }
        self.member_id = response.member_id.to_string();
        let protocol = response
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let leader = response.leader == response.member_id;
        let assignments = if leader && !response.skip_assignment {
            let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for m in &response.members {
                let sub: ConsumerProtocolSubscription = decode_versioned(&m.metadata)?;
                members.insert(
                    m.member_id.to_string(),
                    sub.topics.iter().map(|t| t.to_string()).collect(),
                );
            }
            let all: Vec<String> = {
                let mut v: Vec<String> = members.values().flatten().cloned().collect();
                v.sort();
                v.dedup();
                v
            };
            let mut partitions = BTreeMap::new();
            for t in &all {
                match cluster.topic(t).await {
                    Ok(meta) => {
                        partitions.insert(t.clone(), meta.partitions.len() as i32);
                    }
                    Err(e) => tracing::warn!(topic = %t, %e, "subscribed topic has no metadata"),
                }
            }
            let plan = assignor::assign(&protocol, &members, &partitions);
            let mut out = Vec::new();
            for (member, tps) in plan {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for tp in tps {
                    by_topic.entry(tp.topic).or_default().push(tp.partition);
                }
                let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
                    by_topic
                        .into_iter()
                        .map(|(t, ps)| {
                            AssignedTopic::default()
                                .with_topic(TopicName(StrBytes::from_string(t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
                out.push(
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(member))
                        .with_assignment(encode_versioned(&assignment, 0)?),
                );
            }
            out
        } else {
            Vec::new()
        };
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group_id.clone())))
            .with_generation_id(response.generation_id)
            .with_member_id(response.member_id.clone())
            .with_group_instance_id(self.instance_id.clone().map(StrBytes::from_string))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(response.protocol_name.clone())
            .with_assignments(assignments);
        let synced = conn.send_timeout(&sync, group_timeout_ms).await?;
        if let Some(e) = Error::broker(synced.error_code, format!("sync group {}", self.group_id)) {
            return Err(e);
        }
        let mut assigned = Vec::new();
        if !synced.assignment.is_empty() {
            let assignment: ConsumerProtocolAssignment = decode_versioned(&synced.assignment)?;
            for t in assignment.assigned_partitions {
                for p in t.partitions {
                    assigned.push(TopicPartition::new(t.topic.0.as_str(), p));
                }
            }
        }
        assigned.sort();
        self.generation = Some(Generation {
            member_id: self.member_id.clone(),
            generation_id: response.generation_id,
            protocol,
            leader,
        });
        tracing::debug!(group = %self.group_id, generation = response.generation_id, partitions = assigned.len(), "joined");
        Ok(assigned)
    }

    fn start_heartbeat(&mut self, cluster: Arc<Cluster>, config: &ConsumerConfig) {
        let Some(generation) = self.generation.clone() else {
            return;
        };
        let rejoin = self.rejoin.clone();
        let group_id = self.group_id.clone();
        let instance_id = self.instance_id.clone();
        let interval = Duration::from_millis(config.heartbeat_interval_ms.max(1));
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let request = HeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(group_id.clone())))
                    .with_generation_id(generation.generation_id)
                    .with_member_id(StrBytes::from_string(generation.member_id.clone()))
                    .with_group_instance_id(instance_id.clone().map(StrBytes::from_string));
                let result = match cluster.coordinator(&group_id).await {
                    Ok(conn) => conn
                        .send(&request)
                        .await
                        .and_then(|r| Error::broker(r.error_code, "heartbeat").map_or(Ok(()), Err)),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {}
                    Err(e) if rejoin_error(&e) => {
                        tracing::debug!(group = %group_id, %e, "rebalance: rejoin needed");
                        rejoin.store(true, Ordering::Release);
                        return;
                    }
                    Err(e) => {
                        if e.invalidates_metadata() {
                            cluster.invalidate_coordinator(&group_id);
                        }
                        tracing::debug!(group = %group_id, %e, "heartbeat failed; retrying");
                    }
                }
            }
        }));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// Leaves the group (dynamic members only: a static member keeps its place for
    /// `session.timeout.ms`, as in the Java client).
    pub async fn leave(&mut self, cluster: &Arc<Cluster>) -> Result<()> {
        self.stop_heartbeat();
        let had_generation = self.generation.take().is_some();
        if self.instance_id.is_some() || self.member_id.is_empty() || !had_generation {
            return Ok(());
        }
        let conn = cluster.coordinator(&self.group_id).await?;
        let version = conn.version_for::<LeaveGroupRequest>()?;
        let mut request = LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group_id.clone())));
        if version >= 3 {
            request.members = vec![MemberIdentity::default()
                .with_member_id(StrBytes::from_string(self.member_id.clone()))];
        } else {
            request.member_id = StrBytes::from_string(self.member_id.clone());
        }
        let response = conn.send_version(&request, version).await?;
        self.member_id.clear();
        if let Some(e) = Error::broker(response.error_code, "leave group") {
            return Err(e);
        }
        Ok(())
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
        let (generation_id, member_id) = match &self.generation {
            Some(g) => (g.generation_id, g.member_id.clone()),
            None => (-1, String::new()),
        };
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, offset) in offsets {
            by_topic.entry(&tp.topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group_id.clone())))
            .with_generation_id_or_member_epoch(generation_id)
            .with_member_id(StrBytes::from_string(member_id))
            .with_group_instance_id(self.instance_id.clone().map(StrBytes::from_string))
            .with_retention_time_ms(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let conn = cluster.coordinator(&self.group_id).await?;
        let version = conn
            .version_for::<OffsetCommitRequest>()?
            .min(MAX_OFFSET_COMMIT_VERSION);
        let response = conn.send_version(&request, version).await?;
        for t in &response.topics {
            for p in &t.partitions {
                if let Some(e) = Error::broker(
                    p.error_code,
                    format!("commit offset of {}-{}", t.name.0, p.partition_index),
                ) {
                    if rejoin_error(&e) {
                        self.rejoin.store(true, Ordering::Release);
                    }
                    if e.invalidates_metadata() {
                        cluster.invalidate_coordinator(&self.group_id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
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
        self.stop_heartbeat();
    }
}

/// Committed offsets of `group_id`: of `partitions`, or of every partition it has committed.
pub(crate) async fn fetch_committed(
    cluster: &Arc<Cluster>,
    group_id: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<Vec<(TopicPartition, Option<i64>)>> {
    let topics = partitions.map(|ps| {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in ps {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partition_indexes(ps)
            })
            .collect()
    });
    let mut attempt = 0;
    loop {
        let result: Result<_> = async {
            let conn = cluster.coordinator(group_id).await?;
            let version = conn
                .version_for::<OffsetFetchRequest>()?
                .min(MAX_OFFSET_FETCH_VERSION);
            let request = OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
                .with_topics(topics.clone());
            let response = conn.send_version(&request, version).await?;
            if let Some(e) =
                Error::broker(response.error_code, format!("offsets of group {group_id}"))
            {
                return Err(e);
            }
            let mut out = Vec::new();
            for t in &response.topics {
                for p in &t.partitions {
                    if let Some(e) = Error::broker(
                        p.error_code,
                        format!("offset of {}-{}", t.name.0, p.partition_index),
                    ) {
                        return Err(e);
                    }
                    out.push((
                        TopicPartition::new(t.name.0.as_str(), p.partition_index),
                        (p.committed_offset >= 0).then_some(p.committed_offset),
                    ));
                }
            }
            out.sort();
            Ok(out)
        }
        .await;
        match result {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retriable() && attempt < 10 => {
                if e.invalidates_metadata() {
                    cluster.invalidate_coordinator(group_id);
                }
                attempt += 1;
                backoff(cluster.config.retry_backoff_ms, attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Errors after which the member must join again.
fn rejoin_error(e: &Error) -> bool {
    matches!(
        e.broker_error(),
        Some(
            ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::MemberIdRequired
                | ResponseError::FencedInstanceId
        )
    )
}

/// The consumer protocol's embedded messages: an i16 version, then the message at that version.
pub(crate) fn encode_versioned<M: Encodable>(message: &M, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .map_err(|e| Error::Protocol(format!("cannot encode consumer protocol message: {e:#}")))?;
    Ok(buf.freeze())
}

/// Decodes an embedded message, reading a newer version than ours as our newest (the consumer
/// protocol only appends fields).
pub(crate) fn decode_versioned<M: Decodable + Message>(bytes: &Bytes) -> Result<M> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Err(Error::Protocol(
            "consumer protocol message without a version".into(),
        ));
    }
    let version = buf.get_i16().clamp(M::VERSIONS.min, M::VERSIONS.max);
    M::decode(&mut buf, version)
        .map_err(|e| Error::Protocol(format!("cannot decode consumer protocol message: {e:#}")))
}
