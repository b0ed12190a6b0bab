//! What the client knows of the cluster: brokers, topics, partition leaders and group
//! coordinators, and one connection per broker.
//!
//! Metadata is fetched from any reachable broker (the bootstrap list first) and replaced whole
//! for the topics asked about; callers refresh it when a response says it is stale
//! (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, a lost connection…). Connections are made
//! on first use and replaced when they break.
//!
//! Invariants: a cached leader is always a broker of the same metadata response; a broken
//! connection is never handed out; at most one connection attempt per broker runs at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quipu_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use quipu_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use quipu_protocol::messages::{MetadataResponse, TopicName};
use quipu_protocol::StrBytes;

use crate::config::ClientConfig;
use crate::connection::{Connection, ConnectionConfig};
use crate::error::{Error, Result};

/// A partition as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: i32,
    /// The leader's broker id, or -1 when there is none.
    pub leader: i32,
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// Broker ids of the replicas.
    pub replicas: Vec<i32>,
    /// Broker ids of the in-sync replicas.
    pub isr: Vec<i32>,
    /// Kafka error code for this partition (0: none).
    pub error_code: i16,
}

/// A topic as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Whether the topic is internal (`__consumer_offsets`).
    pub is_internal: bool,
    /// Kafka error code for this topic (0: none).
    pub error_code: i16,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
}

#[derive(Default)]
struct State {
    brokers: HashMap<i32, String>,
    /// Each topic with when its metadata was fetched: a refresh of some topics leaves the
    /// others as old as they were.
    topics: HashMap<String, (Arc<TopicMetadata>, Instant)>,
    controller: Option<i32>,
    coordinators: HashMap<String, i32>,
}

/// Shared by a client's producer, consumer or admin and their background tasks.
pub(crate) struct Cluster {
    pub config: ClientConfig,
    connection_config: ConnectionConfig,
    state: Mutex<State>,
    connections: tokio::sync::Mutex<HashMap<String, Arc<Connection>>>,
}

impl Cluster {
    pub fn new(config: ClientConfig, max_in_flight: usize) -> Result<Arc<Self>> {
        if config.bootstrap_servers.is_empty() {
            return Err(Error::InvalidArgument(
                "bootstrap servers: at least one host:port is needed".into(),
            ));
        }
        let connection_config = ConnectionConfig {
            client_id: config.client_id.clone(),
            connect_timeout_ms: config.connect_timeout_ms,
            request_timeout_ms: config.request_timeout_ms,
            max_in_flight,
            max_response_bytes: config.max_response_bytes,
        };
        Ok(Arc::new(Self {
            config,
            connection_config,
            state: Mutex::new(State::default()),
            connections: tokio::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// A live connection to `addr`, made now if there is none.
    pub async fn connection_to(&self, addr: &str) -> Result<Arc<Connection>> {
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(addr) {
            if !c.is_broken() {
                return Ok(c.clone());
            }
        }
        let conn = Arc::new(Connection::open(addr, &self.connection_config).await?);
        conns.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// A live connection to broker `node_id`, refreshing metadata once if the broker is unknown.
    pub async fn connection(&self, node_id: i32) -> Result<Arc<Connection>> {
        let addr = self.broker_addr(node_id);
        let addr = match addr {
            Some(a) => a,
            None => {
                self.refresh(&[]).await?;
                self.broker_addr(node_id).ok_or_else(|| {
                    Error::Protocol(format!("broker {node_id} is not in the cluster's metadata"))
                })?
            }
        };
        self.connection_to(&addr).await
    }

    /// A connection to any broker: a known one first, then the bootstrap list in order.
    pub async fn any_connection(&self) -> Result<Arc<Connection>> {
        let mut candidates: Vec<String> = {
            let state = self.state.lock().expect("cluster state");
            let mut ids: Vec<_> = state.brokers.iter().collect();
            ids.sort();
            ids.into_iter().map(|(_, a)| a.clone()).collect()
        };
        candidates.extend(self.config.bootstrap_servers.iter().cloned());
        let mut last = None;
        for addr in candidates {
            match self.connection_to(&addr).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(Error::InvalidArgument("no bootstrap servers".into())))
    }

    fn broker_addr(&self, node_id: i32) -> Option<String> {
        self.state
            .lock()
            .expect("cluster state")
            .brokers
            .get(&node_id)
            .cloned()
    }

    /// Fetches metadata for `topics` (all topics when empty) and caches it.
    pub async fn refresh(&self, topics: &[String]) -> Result<MetadataResponse> {
        let conn = self.any_connection().await?;
        let request = MetadataRequest::default()
            .with_topics(if topics.is_empty() {
                None
            } else {
                Some(
                    topics
                        .iter()
                        .map(|t| {
                            MetadataRequestTopic::default()
                                .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                        })
                        .collect(),
                )
            })
            .with_allow_auto_topic_creation(self.config.allow_auto_topic_creation);
        let response = conn.send(&request).await?;
        let fetched_at = Instant::now();
        let mut state = self.state.lock().expect("cluster state");
        state.brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        state.controller = (response.controller_id.0 >= 0).then_some(response.controller_id.0);
        if topics.is_empty() {
            state.topics.clear();
        }
        for t in &response.topics {
            let Some(name) = &t.name else { continue };
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            let meta = TopicMetadata {
                name: name.to_string(),
                is_internal: t.is_internal,
                error_code: t.error_code,
                partitions,
            };
            if t.error_code == 0 {
                state
                    .topics
                    .insert(meta.name.clone(), (Arc::new(meta), fetched_at));
            } else {
                state.topics.remove(&meta.name);
            }
        }
        Ok(response)
    }

    /// Cached metadata of `topic`, if it is known and older than `metadata_max_age_ms` is not.
    pub fn cached_topic(&self, topic: &str) -> Option<Arc<TopicMetadata>> {
        let max_age = Duration::from_millis(self.config.metadata_max_age_ms);
        let state = self.state.lock().expect("cluster state");
        state
            .topics
            .get(topic)
            .filter(|(_, fetched_at)| fetched_at.elapsed() < max_age)
            .map(|(meta, _)| meta.clone())
    }

    /// Metadata of `topic`, from the cache or the brokers; UNKNOWN_TOPIC_OR_PARTITION (or the
    /// topic's own error) when it does not exist.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicMetadata>> {
        if let Some(t) = self.cached_topic(topic) {
            return Ok(t);
        }
        let response = self.refresh(&[topic.to_string()]).await?;
        if let Some(t) = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        {
            if let Some(e) = Error::broker(t.error_code, format!("topic {topic}")) {
                return Err(e);
            }
        }
        self.state
            .lock()
            .expect("cluster state")
            .topics
            .get(topic)
            .map(|(meta, _)| meta.clone())
            .ok_or_else(|| {
                Error::broker(3, format!("topic {topic}")).expect("a non-zero code is an error")
            })
    }

    /// Forgets what is cached of `topic`, so the next use asks the brokers.
    pub fn invalidate(&self, topic: &str) {
        let mut state = self.state.lock().expect("cluster state");
        state.topics.remove(topic);
    }

    /// The leader of `topic`/`partition` with its epoch.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<(i32, i32)> {
        let meta = self.topic(topic).await?;
        let p = meta
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| Error::broker(3, format!("{topic}-{partition}")).expect("error"))?;
        if p.leader < 0 {
            return Err(Error::broker(5, format!("{topic}-{partition}")).expect("error"));
        }
        Ok((p.leader, p.leader_epoch))
    }

    /// The controller (for admin requests that must go there), or any broker.
    pub async fn controller_connection(&self) -> Result<Arc<Connection>> {
        let controller = self.state.lock().expect("cluster state").controller;
        let controller = match controller {
            Some(c) => Some(c),
            None => {
                self.refresh(&[]).await?;
                self.state.lock().expect("cluster state").controller
            }
        };
        match controller {
            Some(c) => self.connection(c).await,
            None => self.any_connection().await,
        }
    }

    /// The coordinator of group `group_id`, found with FindCoordinator and cached.
    pub async fn coordinator(&self, group_id: &str) -> Result<Arc<Connection>> {
        let cached = self
            .state
            .lock()
            .expect("cluster state")
            .coordinators
            .get(group_id)
            .copied();
        if let Some(node) = cached {
            if let Ok(c) = self.connection(node).await {
                return Ok(c);
            }
        }
        let conn = self.any_connection().await?;
        let version = conn.version_for::<FindCoordinatorRequest>()?;
        let request = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![StrBytes::from_string(group_id.to_string())])
        } else {
            FindCoordinatorRequest::default()
                .with_key(StrBytes::from_string(group_id.to_string()))
                .with_key_type(0)
        };
        let response = conn.send_version(&request, version).await?;
        let (error_code, node, host, port) = if version >= 4 {
            let c = response.coordinators.first().ok_or_else(|| {
                Error::Protocol("FindCoordinator answered without a coordinator".into())
            })?;
            (c.error_code, c.node_id, c.host.to_string(), c.port)
        } else {
            (
                response.error_code,
                response.node_id,
                response.host.to_string(),
                response.port,
            )
        };
        if let Some(e) = Error::broker(error_code, format!("coordinator of group {group_id}")) {
            return Err(e);
        }
        let addr = format!("{host}:{port}");
        {
            let mut state = self.state.lock().expect("cluster state");
            state.brokers.insert(node.0, addr.clone());
            state.coordinators.insert(group_id.to_string(), node.0);
        }
        self.connection_to(&addr).await
    }

    /// Forgets the cached coordinator of `group_id` (after NOT_COORDINATOR and the like).
    pub fn invalidate_coordinator(&self, group_id: &str) {
        self.state
            .lock()
            .expect("cluster state")
            .coordinators
            .remove(group_id);
    }

    /// Known broker ids and addresses.
    pub fn brokers(&self) -> Vec<(i32, String)> {
        let mut v: Vec<_> = self
            .state
            .lock()
            .expect("cluster state")
            .brokers
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        v.sort();
        v
    }
}

/// Waits `backoff_ms`, doubling up to 1 s with each attempt.
pub(crate) async fn backoff(base_ms: u64, attempt: u32) {
    let ms = base_ms
        .saturating_mul(1u64 << attempt.min(10))
        .min(1_000.max(base_ms));
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
