//! A join in a task of its own: JoinGroup, then SyncGroup (the leader computing the group's
//! assignment in between), retried until they succeed; then the heartbeat of the generation
//! joined.
//!
//! Invariants: a generation's assignment is used only after SyncGroup returned it, and its
//! heartbeat starts only then; the member id the coordinator gave is kept across attempts
//! (KIP-394) and dropped when the coordinator no longer knows it; the leader's view of the
//! subscribed topics' partition counts (`assigned_with`) is the one its assignment used.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use quipu_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use quipu_protocol::messages::join_group_response::JoinGroupResponseMember;
use quipu_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use quipu_protocol::messages::{
    GroupId, JoinGroupRequest, JoinGroupResponse, MetadataResponse, SyncGroupRequest,
};
use quipu_protocol::{ResponseError, StrBytes};
use tokio::task::JoinHandle;

use crate::assignor::{self, MemberSubscription};
use crate::cluster::{backoff, Cluster};
use crate::config::ConsumerConfig;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::topic_partition::TopicPartition;

use super::consumer_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
};
use super::heartbeat::{heartbeat, Liveness};
use super::membership::{rejoin_error, Generation};

/// Join attempts on errors a retry or a rejoin may cure, before the join fails.
const JOIN_ATTEMPTS_MAX: u32 = 50;

/// What a join task hands back: the member id it ended with, and the generation it joined.
pub(super) struct JoinOutcome {
    pub member_id: String,
    pub result: Result<Joined>,
}

pub(super) struct Joined {
    pub generation: Generation,
    pub assigned: Vec<TopicPartition>,
    pub assigned_with: Option<BTreeMap<String, i32>>,
    pub heartbeat: JoinHandle<()>,
}

/// A join in a task of its own: JoinGroup, then SyncGroup, retried until they succeed.
pub(super) struct Joiner {
    pub group_id: String,
    pub instance_id: Option<String>,
    pub member_id: String,
    /// Partitions this member keeps through the rebalance (cooperative protocol), and the
    /// generation it got them in.
    pub owned: Vec<TopicPartition>,
    pub owned_generation: i32,
    pub assigned_with: Option<BTreeMap<String, i32>>,
    pub liveness: Liveness,
}

impl Joiner {
    pub(super) async fn run(
        mut self,
        cluster: Arc<Cluster>,
        config: ConsumerConfig,
        topics: Vec<String>,
    ) -> JoinOutcome {
        let mut attempt = 0;
        let result = loop {
            self.assigned_with = None;
            match self.join_once(&cluster, &config, &topics).await {
                Ok((generation, assigned)) => {
                    break Ok(self.joined(&cluster, &config, generation, assigned));
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
                    if attempt > JOIN_ATTEMPTS_MAX {
                        break Err(e);
                    }
                    backoff(config.client.retry_backoff_ms, attempt.min(4)).await;
                }
                Err(e) => break Err(e),
            }
        };
        JoinOutcome {
            member_id: self.member_id,
            result,
        }
    }

    /// In `generation` with `assigned`: the rejoin flag falls and the heartbeat starts.
    fn joined(
        &mut self,
        cluster: &Arc<Cluster>,
        config: &ConsumerConfig,
        generation: Generation,
        assigned: Vec<TopicPartition>,
    ) -> Joined {
        self.liveness.rejoin.store(false, Ordering::Release);
        // The join itself counts as a poll: the application is inside one.
        self.liveness.last_poll_ms.store(
            self.liveness.created.elapsed().as_millis() as u64,
            Ordering::Release,
        );
        let heartbeat = tokio::spawn(heartbeat(
            cluster.clone(),
            self.group_id.clone(),
            self.instance_id.clone(),
            generation.clone(),
            config.heartbeat_interval_ms.max(1),
            config.max_poll_interval_ms,
            self.liveness.clone(),
        ));
        Joined {
            generation,
            assigned,
            assigned_with: self.assigned_with.take(),
            heartbeat,
        }
    }

    async fn join_once(
        &mut self,
        cluster: &Arc<Cluster>,
        config: &ConsumerConfig,
        topics: &[String],
    ) -> Result<(Generation, Vec<TopicPartition>)> {
        let conn = cluster.coordinator(&self.group_id).await?;
        // JoinGroup and SyncGroup wait for the whole group: the rebalance timeout on top of the
        // request timeout, as the Java client allows.
        let group_timeout_ms = config.max_poll_interval_ms + config.client.request_timeout_ms;
        let request = self.join_request(config, topics)?;
        let response = self.join_group(&conn, &request, group_timeout_ms).await?;
        let protocol = response
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let leader = response.leader == response.member_id;
        let assignments = if leader && !response.skip_assignment {
            self.assign(cluster, &protocol, &response.members).await?
        } else {
            Vec::new()
        };
        let assigned = self
            .sync_group(&conn, &response, assignments, group_timeout_ms)
            .await?;
        let generation = Generation {
            member_id: self.member_id.clone(),
            generation_id: response.generation_id,
            protocol,
            leader,
        };
        tracing::debug!(group = %self.group_id, generation = response.generation_id, partitions = assigned.len(), "joined");
        Ok((generation, assigned))
    }

    /// JoinGroup offering every configured strategy with this member's subscription.
    fn join_request(&self, config: &ConsumerConfig, topics: &[String]) -> Result<JoinGroupRequest> {
        let subscription = encode_subscription(topics, &self.owned, self.owned_generation)?;
        let protocols = config
            .assignment_strategies
            .iter()
            .map(|s| {
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_string(s.clone()))
                    .with_metadata(subscription.clone())
            })
            .collect();
        Ok(JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group_id.clone())))
            .with_session_timeout_ms(config.session_timeout_ms as i32)
            .with_rebalance_timeout_ms(config.max_poll_interval_ms as i32)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_group_instance_id(self.instance_id.clone().map(StrBytes::from_string))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(protocols))
    }

    /// Sends JoinGroup; keeps the member id the coordinator answers with.
    async fn join_group(
        &mut self,
        conn: &Connection,
        request: &JoinGroupRequest,
        timeout_ms: u64,
    ) -> Result<JoinGroupResponse> {
        let response = conn.send_timeout(request, timeout_ms).await?;
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
        Ok(response)
    }

    /// As the leader: every member's assignment under `protocol`, for SyncGroup.
    async fn assign(
        &mut self,
        cluster: &Arc<Cluster>,
        protocol: &str,
        joined: &[JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let mut members: BTreeMap<String, MemberSubscription> = BTreeMap::new();
        for m in joined {
            members.insert(m.member_id.to_string(), decode_subscription(&m.metadata)?);
        }
        let all = subscribed_topics(&members);
        // Fresh counts: the assignment and the later checks against it use the same view.
        let partitions = if all.is_empty() {
            BTreeMap::new()
        } else {
            partition_counts(&cluster.refresh(&all).await?, &all)
        };
        for (t, _) in partitions.iter().filter(|(_, count)| **count == 0) {
            tracing::warn!(topic = %t, "subscribed topic does not exist (yet)");
        }
        self.assigned_with = Some(partitions.clone());
        let plan = assignor::assign(protocol, &members, &partitions);
        let mut out = Vec::new();
        for (member, tps) in plan {
            out.push(
                SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_assignment(encode_assignment(tps)?),
            );
        }
        Ok(out)
    }

    /// Sends SyncGroup for the generation `joined` opened; this member's assignment, sorted.
    async fn sync_group(
        &self,
        conn: &Connection,
        joined: &JoinGroupResponse,
        assignments: Vec<SyncGroupRequestAssignment>,
        timeout_ms: u64,
    ) -> Result<Vec<TopicPartition>> {
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group_id.clone())))
            .with_generation_id(joined.generation_id)
            .with_member_id(joined.member_id.clone())
            .with_group_instance_id(self.instance_id.clone().map(StrBytes::from_string))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(joined.protocol_name.clone())
            .with_assignments(assignments);
        let synced = conn.send_timeout(&sync, timeout_ms).await?;
        if let Some(e) = Error::broker(synced.error_code, format!("sync group {}", self.group_id)) {
            return Err(e);
        }
        let mut assigned = decode_assignment(&synced.assignment)?;
        assigned.sort();
        Ok(assigned)
    }
}

/// Every topic some member subscribes to, sorted, once each.
fn subscribed_topics(members: &BTreeMap<String, MemberSubscription>) -> Vec<String> {
    let mut v: Vec<String> = members
        .values()
        .flat_map(|s| s.topics.iter())
        .cloned()
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The partition count of each of `topics` in `metadata` (0 for a topic that does not exist).
pub(super) fn partition_counts(
    metadata: &MetadataResponse,
    topics: &[String],
) -> BTreeMap<String, i32> {
    let mut counts: BTreeMap<String, i32> = topics.iter().map(|t| (t.clone(), 0)).collect();
    for t in &metadata.topics {
        let Some(name) = &t.name else { continue };
        if let Some(count) = counts.get_mut(name.as_str()) {
            if t.error_code == 0 {
                *count = t.partitions.len() as i32;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use quipu_protocol::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };
    use quipu_protocol::messages::TopicName;

    use super::*;

    fn joiner(owned: Vec<TopicPartition>, owned_generation: i32) -> Joiner {
        Joiner {
            group_id: "g".into(),
            instance_id: Some("static-1".into()),
            member_id: "m-1".into(),
            owned,
            owned_generation,
            assigned_with: None,
            liveness: Liveness {
                rejoin: Arc::default(),
                lost: Arc::default(),
                closed: Arc::default(),
                last_poll_ms: Arc::default(),
                created: Instant::now(),
            },
        }
    }

    #[test]
    fn a_join_offers_every_strategy_with_the_owned_partitions_and_their_generation() {
        let mut config = ConsumerConfig::new("localhost:9092");
        config.assignment_strategies = vec!["cooperative-sticky".into(), "range".into()];
        let owned = vec![TopicPartition::new("t", 1), TopicPartition::new("t", 4)];
        let request = joiner(owned.clone(), 3)
            .join_request(&config, &["t".to_string(), "u".to_string()])
            .unwrap();
        assert_eq!(request.member_id.as_str(), "m-1");
        assert_eq!(request.group_instance_id.as_deref(), Some("static-1"));
        assert_eq!(request.protocol_type.as_str(), "consumer");
        assert_eq!(request.session_timeout_ms as u64, config.session_timeout_ms);
        assert_eq!(
            request.rebalance_timeout_ms as u64,
            config.max_poll_interval_ms
        );
        let names: Vec<&str> = request.protocols.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["cooperative-sticky", "range"]);
        for p in &request.protocols {
            let sub = decode_subscription(&p.metadata).unwrap();
            assert_eq!(sub.topics, ["t", "u"]);
            assert_eq!(sub.owned, owned);
            assert_eq!(sub.generation, 3);
        }
    }

    #[test]
    fn the_leader_asks_metadata_of_each_subscribed_topic_once() {
        let member = |topics: &[&str]| MemberSubscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: Vec::new(),
            generation: -1,
        };
        let members: BTreeMap<String, MemberSubscription> = [
            ("a".to_string(), member(&["y", "x"])),
            ("b".to_string(), member(&["x", "z"])),
        ]
        .into();
        assert_eq!(subscribed_topics(&members), ["x", "y", "z"]);
    }

    #[test]
    fn a_topic_missing_or_failed_in_metadata_counts_zero_partitions() {
        let topic = |name: &str, partitions: usize, error_code: i16| {
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
                .with_error_code(error_code)
                .with_partitions(vec![MetadataResponsePartition::default(); partitions])
        };
        let metadata = MetadataResponse::default().with_topics(vec![
            topic("a", 3, 0),
            topic("b", 2, ResponseError::UnknownTopicOrPartition.code()),
            topic("not-asked", 5, 0),
        ]);
        let asked = ["a".to_string(), "b".to_string(), "gone".to_string()];
        let counts = partition_counts(&metadata, &asked);
        let expected: BTreeMap<String, i32> = [
            ("a".to_string(), 3),
            ("b".to_string(), 0),
            ("gone".to_string(), 0),
        ]
        .into();
        assert_eq!(counts, expected);
    }
}
