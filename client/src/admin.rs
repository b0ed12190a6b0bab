//! The admin client: topics and partitions (CreateTopics, DeleteTopics, CreatePartitions,
//! Metadata), configs (DescribeConfigs, IncrementalAlterConfigs), and consumer groups
//! (ListGroups on every broker, DescribeGroups, DeleteGroups, committed offsets and lag).
//!
//! Topic changes go to the controller; group requests to the group's coordinator. Each call
//! reports the broker's error per topic or group: one failing item does not hide the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quipu_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use quipu_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use quipu_protocol::messages::delete_topics_request::DeleteTopicState;
use quipu_protocol::messages::describe_configs_request::DescribeConfigsResource;
use quipu_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use quipu_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, GroupId, IncrementalAlterConfigsRequest,
    ListGroupsRequest, TopicName,
};
use quipu_protocol::{ResponseError, StrBytes};

use crate::cluster::{backoff, Cluster, PartitionMetadata};
use crate::config::ClientConfig;
use crate::consumer::{list_offsets, LATEST_TIMESTAMP};
use crate::error::{Error, Result};
use crate::group_member::{decode_assignment, fetch_committed, GroupMember};
use crate::topic_partition::TopicPartition;

/// A topic to create; -1 partitions or replication factor means the broker's default.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Partitions; -1 for the broker's `num.partitions`.
    pub num_partitions: i32,
    /// Replicas per partition; -1 for the broker's default.
    pub replication_factor: i16,
    /// Topic settings with Kafka's names (`cleanup.policy`, `retention.ms`…).
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with `num_partitions` partitions and the broker's default replication.
    pub fn new(name: impl Into<String>, num_partitions: i32) -> Self {
        Self {
            name: name.into(),
            num_partitions,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }
    /// Adds a topic setting (`retention.ms`, `cleanup.policy`…).
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// A topic's partitions as metadata describes them.
#[derive(Debug, Clone)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Whether the topic is internal (`__consumer_offsets`).
    pub is_internal: bool,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionMetadata>,
}

/// What a config request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    /// A topic's settings.
    Topic(String),
    /// A broker's settings, by broker id.
    Broker(i32),
}

impl ConfigResource {
    fn type_and_name(&self) -> (i8, String) {
        match self {
            ConfigResource::Topic(t) => (2, t.clone()),
            ConfigResource::Broker(b) => (4, b.to_string()),
        }
    }
}

/// One setting and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Setting name, as Kafka names it.
    pub name: String,
    /// Its value (`None` when sensitive or unset).
    pub value: Option<String>,
    /// Whether it cannot be altered.
    pub read_only: bool,
    /// Kafka's config source: 1 topic, 4 static broker config, 5 default…
    pub source: i8,
    /// Whether the value is the default (source 5).
    pub is_default: bool,
    /// Whether the value is a secret the broker does not show.
    pub is_sensitive: bool,
}

/// An incremental config change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    /// Sets a setting to a value.
    Set(String, String),
    /// Back to the default.
    Delete(String),
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// `consumer` for consumer groups; empty for groups that only commit offsets.
    pub protocol_type: String,
    /// Kafka's group state: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead.
    pub state: String,
}

/// A group member as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The id the coordinator gave the member.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// The member's `client.id`.
    pub client_id: String,
    /// The member's address as the coordinator saw it.
    pub host: String,
    /// Decoded from the consumer protocol's assignment (empty for other protocol types).
    pub assignment: Vec<TopicPartition>,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// Kafka's group state: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead.
    pub state: String,
    /// `consumer` for consumer groups.
    pub protocol_type: String,
    /// The assignment strategy the group chose.
    pub protocol: String,
    /// Current members.
    pub members: Vec<MemberDescription>,
}

/// A partition's committed offset against its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// The partition's end offset (high watermark).
    pub end_offset: i64,
    /// `end_offset - committed`, when something is committed.
    pub lag: Option<i64>,
    /// The member the partition is assigned to, if any.
    pub member_id: Option<String>,
}

/// An admin client.
///
/// ```no_run
/// # async fn demo() -> quipu_client::Result<()> {
/// use quipu_client::admin::{Admin, NewTopic};
/// use quipu_client::ClientConfig;
/// let admin = Admin::new(ClientConfig::new("localhost:9092"))?;
/// admin
///     .create_topic(NewTopic::new("orders", 6).with_config("cleanup.policy", "compact"))
///     .await?;
/// for lag in admin.group_lag("billing").await? {
///     println!("{} lag {:?}", lag.partition, lag.lag);
/// }
/// # Ok(()) }
/// ```
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    /// An admin client; connects on first use. Must be called within a tokio runtime.
    pub fn new(mut config: ClientConfig) -> Result<Self> {
        // Describing a topic must not create it.
        config.allow_auto_topic_creation = false;
        Ok(Self {
            cluster: Cluster::new(config, 5)?,
        })
    }

    fn timeout_ms(&self) -> i32 {
        self.cluster.config.request_timeout_ms.min(i32::MAX as u64) as i32
    }

    /// Creates one topic.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        self.create_topics(vec![topic])
            .await?
            .into_iter()
            .next()
            .map(|(_, r)| r)
            .unwrap_or(Ok(()))
    }

    /// Creates topics; the result of each, in order.
    pub async fn create_topics(&self, topics: Vec<NewTopic>) -> Result<Vec<(String, Result<()>)>> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                            .with_num_partitions(t.num_partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = self
            .cluster
            .controller_connection()
            .await?
            .send(&request)
            .await?;
        let out = topics
            .iter()
            .map(|t| {
                let r = response
                    .topics
                    .iter()
                    .find(|r| r.name.0.as_str() == t.name)
                    .map_or(
                        Err(Error::Protocol(format!("no result for topic {}", t.name))),
                        |r| {
                            broker_result(
                                r.error_code,
                                r.error_message.as_ref(),
                                &format!("create topic {}", t.name),
                            )
                        },
                    );
                (t.name.clone(), r)
            })
            .collect();
        for t in &topics {
            self.cluster.invalidate(&t.name);
        }
        Ok(out)
    }

    /// Deletes topics; the result of each, in order.
    pub async fn delete_topics(&self, names: &[&str]) -> Result<Vec<(String, Result<()>)>> {
        let conn = self.cluster.controller_connection().await?;
        let version = conn.version_for::<DeleteTopicsRequest>()?;
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(self.timeout_ms());
        if version >= 6 {
            request.topics = names
                .iter()
                .map(|n| {
                    DeleteTopicState::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
                })
                .collect();
        } else {
            request.topic_names = names
                .iter()
                .map(|n| TopicName(StrBytes::from_string(n.to_string())))
                .collect();
        }
        let response = conn.send_version(&request, version).await?;
        let out = names
            .iter()
            .map(|n| {
                let r = response
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|x| x.0.as_str() == *n))
                    .map_or(
                        Err(Error::Protocol(format!("no result for topic {n}"))),
                        |r| {
                            broker_result(
                                r.error_code,
                                r.error_message.as_ref(),
                                &format!("delete topic {n}"),
                            )
                        },
                    );
                self.cluster.invalidate(n);
                (n.to_string(), r)
            })
            .collect();
        Ok(out)
    }

    /// Grows `topic` to `total` partitions.
    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_count(total)
                .with_assignments(None)]);
        let response = self
            .cluster
            .controller_connection()
            .await?
            .send(&request)
            .await?;
        self.cluster.invalidate(topic);
        let r = response
            .results
            .first()
            .ok_or_else(|| Error::Protocol("CreatePartitions without a result".into()))?;
        broker_result(
            r.error_code,
            r.error_message.as_ref(),
            &format!("create partitions of {topic}"),
        )
    }

    /// Names of all topics (internal ones included when `include_internal`), sorted.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<String>> {
        let response = self.cluster.refresh(&[]).await?;
        let mut names: Vec<String> = response
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && (include_internal || !t.is_internal))
            .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Partitions, leaders and replicas of `topic`; UNKNOWN_TOPIC_OR_PARTITION if it does not
    /// exist.
    pub async fn describe_topic(&self, topic: &str) -> Result<TopicDescription> {
        self.cluster.invalidate(topic);
        let meta = self.cluster.topic(topic).await?;
        Ok(TopicDescription {
            name: meta.name.clone(),
            is_internal: meta.is_internal,
            partitions: meta.partitions.clone(),
        })
    }

    /// The settings of `resource` (all of them, defaults included).
    pub async fn describe_configs(&self, resource: &ConfigResource) -> Result<Vec<ConfigEntry>> {
        let (resource_type, name) = resource.type_and_name();
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.clone()))
                .with_configuration_keys(None),
        ]);
        let conn = match resource {
            ConfigResource::Broker(id) => self.cluster.connection(*id).await?,
            ConfigResource::Topic(_) => self.cluster.any_connection().await?,
        };
        let response = conn.send(&request).await?;
        let result = response
            .results
            .first()
            .ok_or_else(|| Error::Protocol("DescribeConfigs without a result".into()))?;
        broker_result(
            result.error_code,
            result.error_message.as_ref(),
            &format!("describe configs of {name}"),
        )?;
        let mut entries: Vec<ConfigEntry> = result
            .configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(|v| v.to_string()),
                read_only: c.read_only,
                source: c.config_source,
                is_default: c.config_source == 5,
                is_sensitive: c.is_sensitive,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Changes settings of `resource` (IncrementalAlterConfigs).
    pub async fn alter_configs(
        &self,
        resource: &ConfigResource,
        ops: &[AlterConfigOp],
    ) -> Result<()> {
        let (resource_type, name) = resource.type_and_name();
        let configs = ops
            .iter()
            .map(|op| match op {
                AlterConfigOp::Set(k, v) => AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(v.clone()))),
                AlterConfigOp::Delete(k) => AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(1)
                    .with_value(None),
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.clone()))
                .with_configs(configs),
        ]);
        let conn = match resource {
            ConfigResource::Broker(id) => self.cluster.connection(*id).await?,
            ConfigResource::Topic(_) => self.cluster.controller_connection().await?,
        };
        let response = conn.send(&request).await?;
        let r = response
            .responses
            .first()
            .ok_or_else(|| Error::Protocol("IncrementalAlterConfigs without a result".into()))?;
        broker_result(
            r.error_code,
            r.error_message.as_ref(),
            &format!("alter configs of {name}"),
        )
    }

    /// Every group on every broker, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.cluster
            .refresh(&["__consumer_offsets".to_string()])
            .await
            .ok();
        let mut brokers = self.cluster.brokers();
        if brokers.is_empty() {
            self.cluster.refresh(&[]).await?;
            brokers = self.cluster.brokers();
        }
        let mut out = Vec::new();
        for (id, _) in brokers {
            let conn = self.cluster.connection(id).await?;
            let response = conn.send(&ListGroupsRequest::default()).await?;
            if let Some(e) =
                Error::broker(response.error_code, format!("list groups on broker {id}"))
            {
                return Err(e);
            }
            out.extend(response.groups.iter().map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// State, strategy and members (with their assignments) of `group_id`; GROUP_ID_NOT_FOUND
    /// when there is no such group (older brokers describe it as "Dead": that is mapped to the
    /// same error).
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription> {
        let mut attempt = 0;
        loop {
            let result: Result<GroupDescription> = async {
                let conn = self.cluster.coordinator(group_id).await?;
                let request = DescribeGroupsRequest::default()
                    .with_groups(vec![GroupId(StrBytes::from_string(group_id.to_string()))]);
                let response = conn.send(&request).await?;
                let g = response
                    .groups
                    .first()
                    .ok_or_else(|| Error::Protocol("DescribeGroups without a group".into()))?;
                broker_result(
                    g.error_code,
                    g.error_message.as_ref(),
                    &format!("describe group {group_id}"),
                )?;
                let consumer = g.protocol_type.as_str() == "consumer";
                let members = g
                    .members
                    .iter()
                    .map(|m| {
                        let assignment = if consumer {
                            decode_assignment(&m.member_assignment).unwrap_or_default()
                        } else {
                            Vec::new()
                        };
                        MemberDescription {
                            member_id: m.member_id.to_string(),
                            group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                            client_id: m.client_id.to_string(),
                            host: m.client_host.to_string(),
                            assignment,
                        }
                    })
                    .collect();
                Ok(GroupDescription {
                    group_id: g.group_id.0.to_string(),
                    state: g.group_state.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    protocol: g.protocol_data.to_string(),
                    members,
                })
            }
            .await;
            match result {
                Err(e) if e.is_retriable() && attempt < 10 => {
                    self.cluster.invalidate_coordinator(group_id);
                    attempt += 1;
                    backoff(self.cluster.config.retry_backoff_ms, attempt).await;
                }
                other => return other,
            }
        }
    }

    /// Deletes groups (they must have no members); the result of each, in order.
    pub async fn delete_groups(&self, group_ids: &[&str]) -> Result<Vec<(String, Result<()>)>> {
        let mut out = Vec::new();
        for id in group_ids {
            let conn = self.cluster.coordinator(id).await?;
            let request = DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(StrBytes::from_string(id.to_string()))]);
            let response = conn.send(&request).await?;
            let r = response.results.first().map_or(
                Err(Error::Protocol("DeleteGroups without a result".into())),
                |r| broker_result(r.error_code, None, &format!("delete group {id}")),
            );
            out.push((id.to_string(), r));
        }
        Ok(out)
    }

    /// Sets `group_id`'s committed offsets (each the next offset its consumers read), as
    /// `kafka-consumer-groups --reset-offsets` does: the coordinator takes them only while the
    /// group has no members.
    pub async fn alter_group_offsets(
        &self,
        group_id: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        // A commit outside any generation, as the Java admin client sends it.
        GroupMember::new(group_id.to_string(), None)
            .commit(&self.cluster, offsets)
            .await
    }

    /// ListOffsets for each `(partition, timestamp)`: -2 the earliest offset, -1 the latest (the
    /// high watermark), else the first offset whose record is stamped at or after the timestamp
    /// (`None`: no such record).
    pub async fn list_offsets(
        &self,
        queries: &[(TopicPartition, i64)],
    ) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        list_offsets(&self.cluster, queries).await
    }

    /// The offsets `group_id` has committed, per partition.
    pub async fn list_group_offsets(&self, group_id: &str) -> Result<Vec<(TopicPartition, i64)>> {
        Ok(fetch_committed(&self.cluster, group_id, None)
            .await?
            .into_iter()
            .filter_map(|(tp, o)| o.map(|o| (tp, o)))
            .collect())
    }

    /// Lag of `group_id` on every partition it has committed or is assigned: end offset minus
    /// committed offset, with the member each partition is assigned to.
    pub async fn group_lag(&self, group_id: &str) -> Result<Vec<PartitionLag>> {
        let description = match self.describe_group(group_id).await {
            Ok(d) => d,
            // A group with committed offsets and no members may be gone from the coordinator's
            // memory but not from its offsets.
            Err(e) if e.broker_error() == Some(ResponseError::GroupIdNotFound) => {
                GroupDescription {
                    group_id: group_id.to_string(),
                    state: "Dead".into(),
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: Vec::new(),
                }
            }
            Err(e) => return Err(e),
        };
        let mut owners: BTreeMap<TopicPartition, String> = BTreeMap::new();
        for m in &description.members {
            for tp in &m.assignment {
                owners.insert(tp.clone(), m.member_id.clone());
            }
        }
        let mut committed: BTreeMap<TopicPartition, Option<i64>> = self
            .list_group_offsets(group_id)
            .await?
            .into_iter()
            .map(|(tp, o)| (tp, Some(o)))
            .collect();
        for tp in owners.keys() {
            committed.entry(tp.clone()).or_insert(None);
        }
        let queries: Vec<_> = committed
            .keys()
            .map(|tp| (tp.clone(), LATEST_TIMESTAMP))
            .collect();
        let ends: BTreeMap<_, _> = list_offsets(&self.cluster, &queries)
            .await?
            .into_iter()
            .collect();
        Ok(committed
            .into_iter()
            .map(|(tp, c)| {
                let end = ends.get(&tp).copied().flatten().unwrap_or(-1);
                PartitionLag {
                    lag: c.filter(|_| end >= 0).map(|c| (end - c).max(0)),
                    committed: c,
                    end_offset: end,
                    member_id: owners.get(&tp).cloned(),
                    partition: tp,
                }
            })
            .collect())
    }

    /// Waits until `topic` has a leader for every partition (after creating it).
    pub async fn wait_for_topic(&self, topic: &str, timeout: Duration) -> Result<TopicDescription> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.describe_topic(topic).await {
                Ok(d) if !d.partitions.is_empty() && d.partitions.iter().all(|p| p.leader >= 0) => {
                    return Ok(d)
                }
                Ok(_) => {}
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    timeout_ms: timeout.as_millis() as u64,
                    what: format!("leaders of topic {topic}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn broker_result(code: i16, message: Option<&StrBytes>, context: &str) -> Result<()> {
    let context = match message {
        Some(m) if !m.is_empty() => format!("{context}: {m}"),
        _ => context.to_string(),
    };
    Error::broker(code, context).map_or(Ok(()), Err)
}
