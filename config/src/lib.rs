//! Quipu's configuration: typed, validated, layered.
//!
//! Layers, each overriding the one before: built-in defaults < a TOML file < `QUIPU_*` environment
//! variables < command-line overrides. Keys use Kafka's broker names; `log.dirs`, `log_dirs`,
//! `[log] dirs = …` and `QUIPU_LOG_DIRS` all name the same setting. An unknown key or a bad value is
//! an error that names the key and what it accepts: the broker does not start on a guess.
//!
//! [`topic`] holds the per-topic settings (Kafka's topic config names such as `retention.ms`).

pub mod topic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Value, ValueKind};
use serde::Deserialize;

/// Prefix of the environment variables that configure the broker.
pub const ENV_PREFIX: &str = "QUIPU";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}` has invalid value {value}: {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        expected: String,
    },
}

/// Broker settings, named as Kafka names them with `.` written `_`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// This broker's id in the cluster.
    pub node_id: i32,
    /// Address to listen on, `host:port` or `PLAINTEXT://host:port`.
    pub listeners: String,
    /// Address clients are told to connect to; defaults to `listeners`.
    pub advertised_listeners: Option<String>,
    /// Directory holding the partition logs and the metadata log.
    pub log_dirs: PathBuf,
    /// Partitions of an automatically created topic, and of CreateTopics with -1.
    pub num_partitions: i32,
    /// Replication factor of a topic created with -1 or automatically.
    pub default_replication_factor: i16,
    /// Create a topic when a client asks Metadata for one that does not exist.
    pub auto_create_topics_enable: bool,
    /// Largest request frame accepted; a larger one closes the connection.
    pub socket_request_max_bytes: u32,
    /// Connections served at once; more are closed on accept.
    pub max_connections: u32,
    /// Connections one client address may have open at once (Kafka's default: no limit).
    pub max_connections_per_ip: u32,
    /// Per-address exceptions to `max.connections.per.ip`: `ip:count,ip:count`.
    pub max_connections_per_ip_overrides: String,
    /// A connection with no request in progress and no bytes coming for this long is closed.
    pub connections_max_idle_ms: i64,
    /// A request whose first bytes arrived must be whole within this long, or its connection is
    /// closed (a stalled frame holds its buffer until then).
    pub socket_request_read_timeout_ms: i64,
    /// Bytes of requests held at once across all connections (read but not yet answered); a
    /// connection waits to read more while they are taken.
    pub queued_max_request_bytes: i64,
    /// Requests one connection may have in progress at once; responses keep request order.
    pub connection_max_in_flight_requests: u32,
    /// Threads for request work kept off the network runtime (decompressing produced batches to
    /// validate them, timestamp lookups): at most this many run at once, the rest wait.
    pub num_io_threads: u32,
    /// Threads that open (and after a crash recover) the logs at start and close them at
    /// shutdown, and make a new topic's partitions.
    pub num_recovery_threads_per_data_dir: u32,
    /// Upper bound on the records one Fetch response carries.
    pub fetch_max_bytes: i32,
    /// Largest record batch accepted (topic default for `max.message.bytes`).
    pub message_max_bytes: i32,
    /// Topic default for `segment.bytes`.
    pub log_segment_bytes: i32,
    /// Topic default for `segment.ms`.
    pub log_roll_ms: i64,
    /// Topic default for `retention.ms`.
    pub log_retention_ms: i64,
    /// Topic default for `retention.bytes`.
    pub log_retention_bytes: i64,
    /// Topic default for `segment.index.bytes`.
    pub log_index_size_max_bytes: i32,
    /// How often retention looks for segments to delete.
    pub log_retention_check_interval_ms: u64,
    /// Topic default for `flush.messages`: fsync after this many messages (1: before every ack).
    pub log_flush_interval_messages: i64,
    /// Topic default for `flush.ms`: fsync when the oldest unflushed message is this old.
    pub log_flush_interval_ms: i64,
    /// How often the flusher looks for logs due a `flush.ms` flush.
    pub log_flush_scheduler_interval_ms: u64,
    /// How often the recovery points are checkpointed.
    pub log_flush_offset_checkpoint_interval_ms: u64,
    /// Topic default for `index.interval.bytes`.
    pub log_index_interval_bytes: i32,
    /// Topic default for `message.timestamp.type`: `CreateTime` or `LogAppendTime`.
    pub log_message_timestamp_type: String,
    /// Topic default for `cleanup.policy`.
    pub log_cleanup_policy: String,
    /// Topic default for `min.insync.replicas`.
    pub min_insync_replicas: i32,
    /// Topic default for `delete.retention.ms`: how long tombstones outlive their first clean.
    pub log_cleaner_delete_retention_ms: i64,
    /// Topic default for `min.cleanable.dirty.ratio`.
    pub log_cleaner_min_cleanable_ratio: f64,
    /// Topic default for `min.compaction.lag.ms`: records younger than this are not compacted.
    pub log_cleaner_min_compaction_lag_ms: i64,
    /// Topic default for `max.compaction.lag.ms`: a dirty record older than this forces a clean.
    pub log_cleaner_max_compaction_lag_ms: i64,
    /// Run the log cleaner (compaction of `cleanup.policy=compact` topics).
    pub log_cleaner_enable: bool,
    /// How long the cleaner sleeps when no log needs cleaning.
    pub log_cleaner_backoff_ms: u64,
    /// Memory for the cleaner's key-to-offset map; one clean covers as many keys as fit.
    pub log_cleaner_dedupe_buffer_size: u64,
    /// An idempotent producer silent this long is forgotten (checked with retention).
    pub producer_id_expiration_ms: i64,
    /// Partitions of `__consumer_offsets`, fixed when the topic is first created.
    pub offsets_topic_num_partitions: i32,
    /// `segment.bytes` of `__consumer_offsets`.
    pub offsets_topic_segment_bytes: i32,
    /// Smallest session timeout a group member may ask for.
    pub group_min_session_timeout_ms: i32,
    /// Largest session timeout a group member may ask for.
    pub group_max_session_timeout_ms: i32,
    /// How long the first rebalance of an empty group waits for more members to join.
    pub group_initial_rebalance_delay_ms: i32,
    /// Most members a group may have.
    pub group_max_size: i32,
    /// Committed offsets of a group without members are kept this long.
    pub offsets_retention_minutes: i64,
    /// How often expired offsets and empty groups are looked for.
    pub offsets_retention_check_interval_ms: u64,
    /// Largest metadata string a committed offset may carry.
    pub offset_metadata_max_bytes: i32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            listeners: "localhost:9092".into(),
            advertised_listeners: None,
            log_dirs: PathBuf::from("./data"),
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics_enable: true,
            socket_request_max_bytes: 100 * 1024 * 1024,
            max_connections: 1_000,
            max_connections_per_ip: i32::MAX as u32,
            max_connections_per_ip_overrides: String::new(),
            connections_max_idle_ms: 600_000,
            socket_request_read_timeout_ms: 30_000,
            queued_max_request_bytes: 512 * 1024 * 1024,
            connection_max_in_flight_requests: 64,
            num_io_threads: 8,
            num_recovery_threads_per_data_dir: 2,
            fetch_max_bytes: 55 * 1024 * 1024,
            message_max_bytes: 1_048_588,
            log_segment_bytes: 1024 * 1024 * 1024,
            log_roll_ms: 7 * 24 * 3_600_000,
            log_retention_ms: 7 * 24 * 3_600_000,
            log_retention_bytes: -1,
            log_index_size_max_bytes: 10 * 1024 * 1024,
            log_retention_check_interval_ms: 300_000,
            log_flush_interval_messages: i64::MAX,
            log_flush_interval_ms: i64::MAX,
            log_flush_scheduler_interval_ms: 1_000,
            log_flush_offset_checkpoint_interval_ms: 60_000,
            log_index_interval_bytes: 4096,
            log_message_timestamp_type: "CreateTime".into(),
            log_cleanup_policy: "delete".into(),
            min_insync_replicas: 1,
            log_cleaner_delete_retention_ms: 86_400_000,
            log_cleaner_min_cleanable_ratio: 0.5,
            log_cleaner_min_compaction_lag_ms: 0,
            log_cleaner_max_compaction_lag_ms: i64::MAX,
            log_cleaner_enable: true,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_dedupe_buffer_size: 128 * 1024 * 1024,
            producer_id_expiration_ms: 86_400_000,
            offsets_topic_num_partitions: 50,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: 10_000,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
        }
    }
}

/// Where the layers come from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// A TOML file; it must exist when named.
    pub file: Option<PathBuf>,
    /// Read `QUIPU_*` environment variables.
    pub environment: bool,
    /// `key=value` overrides from the command line, applied last.
    pub overrides: Vec<(String, String)>,
}

/// Builds the configuration from its layers and validates it.
///
/// Each layer is flattened to Kafka-style keys on its own before it is laid over the previous
/// ones, so `num.partitions` in the file and `QUIPU_NUM_PARTITIONS` in the environment are the same
/// key and the later layer wins.
pub fn load(sources: &Sources) -> Result<BrokerConfig, ConfigError> {
    let mut flat = BTreeMap::new();
    if let Some(path) = &sources.file {
        let file = Config::builder()
            .add_source(
                File::from(path.as_path())
                    .format(FileFormat::Toml)
                    .required(true),
            )
            .build()?;
        flatten("", file.try_deserialize()?, &mut flat);
    }
    if sources.environment {
        let env = Config::builder()
            .add_source(Environment::with_prefix(ENV_PREFIX).prefix_separator("_"))
            .build()?;
        flatten("", env.try_deserialize()?, &mut flat);
    }
    for (key, value) in &sources.overrides {
        flat.insert(normalize_key(key), Value::from(value.as_str()));
    }
    let mut builder = Config::builder();
    for (key, value) in flat {
        builder = builder.set_override(key, value)?;
    }
    let config: BrokerConfig = builder.build()?.try_deserialize()?;
    config.validate()?;
    Ok(config)
}

/// Loads from an explicit file path only (no environment), for tests and tools.
pub fn load_file(path: &Path) -> Result<BrokerConfig, ConfigError> {
    load(&Sources {
        file: Some(path.to_path_buf()),
        ..Default::default()
    })
}

fn normalize_key(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace(['.', '-'], "_")
}

fn flatten(prefix: &str, table: config::Map<String, Value>, out: &mut BTreeMap<String, Value>) {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            normalize_key(&key)
        } else {
            format!("{prefix}_{}", normalize_key(&key))
        };
        match value.kind {
            ValueKind::Table(inner) => flatten(&key, inner, out),
            _ => {
                out.insert(key, value);
            }
        }
    }
}

fn invalid(
    key: &'static str,
    value: impl std::fmt::Display,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        expected: expected.into(),
    }
}

impl BrokerConfig {
    /// Checks every value against the range Kafka accepts for it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id < 0 {
            return Err(invalid("node.id", self.node_id, "a number >= 0"));
        }
        parse_listener(&self.listeners).map_err(|e| invalid("listeners", &self.listeners, e))?;
        if let Some(a) = &self.advertised_listeners {
            parse_listener(a).map_err(|e| invalid("advertised.listeners", a, e))?;
        }
        if self.num_partitions < 1 {
            return Err(invalid(
                "num.partitions",
                self.num_partitions,
                "a number >= 1",
            ));
        }
        if self.default_replication_factor != 1 {
            return Err(invalid(
                "default.replication.factor",
                self.default_replication_factor,
                "1 (a single broker)",
            ));
        }
        if self.socket_request_max_bytes < 1024 {
            return Err(invalid(
                "socket.request.max.bytes",
                self.socket_request_max_bytes,
                "a number >= 1024",
            ));
        }
        if self.max_connections_per_ip < 1 {
            return Err(invalid(
                "max.connections.per.ip",
                self.max_connections_per_ip,
                "a number >= 1",
            ));
        }
        if let Err(e) = self.connection_limits_per_ip() {
            return Err(invalid(
                "max.connections.per.ip.overrides",
                &self.max_connections_per_ip_overrides,
                e,
            ));
        }
        if self.connections_max_idle_ms < 1 {
            return Err(invalid(
                "connections.max.idle.ms",
                self.connections_max_idle_ms,
                "a number >= 1",
            ));
        }
        if self.socket_request_read_timeout_ms < 1 {
            return Err(invalid(
                "socket.request.read.timeout.ms",
                self.socket_request_read_timeout_ms,
                "a number >= 1",
            ));
        }
        // A whole frame and a read buffer must fit, or the largest request could never be read.
        let least = i64::from(self.socket_request_max_bytes) + 64 * 1024;
        if self.queued_max_request_bytes < least
            || self.queued_max_request_bytes > u32::MAX as i64 * 4
        {
            return Err(invalid(
                "queued.max.request.bytes",
                self.queued_max_request_bytes,
                format!("at least socket.request.max.bytes + 65536 ({least})"),
            ));
        }
        if !(1..=256).contains(&self.num_recovery_threads_per_data_dir) {
            return Err(invalid(
                "num.recovery.threads.per.data.dir",
                self.num_recovery_threads_per_data_dir,
                "a number from 1 to 256",
            ));
        }
        if !(1..=256).contains(&self.num_io_threads) {
            return Err(invalid(
                "num.io.threads",
                self.num_io_threads,
                "a number from 1 to 256",
            ));
        }
        if self.max_connections < 1 {
            return Err(invalid(
                "max.connections",
                self.max_connections,
                "a number >= 1",
            ));
        }
        if !(1..=10_000).contains(&self.connection_max_in_flight_requests) {
            return Err(invalid(
                "connection.max.in.flight.requests",
                self.connection_max_in_flight_requests,
                "a number from 1 to 10000",
            ));
        }
        if self.fetch_max_bytes < 1024 {
            return Err(invalid(
                "fetch.max.bytes",
                self.fetch_max_bytes,
                "a number >= 1024",
            ));
        }
        if self.log_retention_check_interval_ms < 1 {
            return Err(invalid(
                "log.retention.check.interval.ms",
                self.log_retention_check_interval_ms,
                "a number >= 1",
            ));
        }
        if self.log_flush_scheduler_interval_ms < 1
            || self.log_flush_offset_checkpoint_interval_ms < 1
        {
            return Err(invalid(
                "log.flush.scheduler.interval.ms",
                self.log_flush_scheduler_interval_ms
                    .min(self.log_flush_offset_checkpoint_interval_ms),
                "a number >= 1 (and so for log.flush.offset.checkpoint.interval.ms)",
            ));
        }
        if self.min_insync_replicas != 1 {
            return Err(invalid(
                "min.insync.replicas",
                self.min_insync_replicas,
                "1 (a single broker)",
            ));
        }
        if self.log_cleaner_backoff_ms < 1 {
            return Err(invalid(
                "log.cleaner.backoff.ms",
                self.log_cleaner_backoff_ms,
                "a number >= 1",
            ));
        }
        if self.log_cleaner_dedupe_buffer_size < 1024 * 1024 {
            return Err(invalid(
                "log.cleaner.dedupe.buffer.size",
                self.log_cleaner_dedupe_buffer_size,
                "a number >= 1048576",
            ));
        }
        if self.producer_id_expiration_ms < 1 {
            return Err(invalid(
                "producer.id.expiration.ms",
                self.producer_id_expiration_ms,
                "a number >= 1",
            ));
        }
        if !(1..=1000).contains(&self.offsets_topic_num_partitions) {
            return Err(invalid(
                "offsets.topic.num.partitions",
                self.offsets_topic_num_partitions,
                "a number from 1 to 1000",
            ));
        }
        if self.group_min_session_timeout_ms < 1
            || self.group_max_session_timeout_ms < self.group_min_session_timeout_ms
        {
            return Err(invalid(
                "group.min.session.timeout.ms",
                self.group_min_session_timeout_ms,
                "at least 1 and at most group.max.session.timeout.ms",
            ));
        }
        if self.group_initial_rebalance_delay_ms < 0 {
            return Err(invalid(
                "group.initial.rebalance.delay.ms",
                self.group_initial_rebalance_delay_ms,
                "a number >= 0",
            ));
        }
        if self.group_max_size < 1 {
            return Err(invalid(
                "group.max.size",
                self.group_max_size,
                "a number >= 1",
            ));
        }
        if self.offsets_retention_minutes < 1 {
            return Err(invalid(
                "offsets.retention.minutes",
                self.offsets_retention_minutes,
                "a number >= 1",
            ));
        }
        if self.offsets_retention_check_interval_ms < 1 {
            return Err(invalid(
                "offsets.retention.check.interval.ms",
                self.offsets_retention_check_interval_ms,
                "a number >= 1",
            ));
        }
        // The topic defaults follow the topic rules.
        topic::TopicConfig::defaults_from(self).map_err(|e| ConfigError::Invalid {
            key: "log.*",
            value: e.to_string(),
            expected: "a valid topic default".into(),
        })?;
        Ok(())
    }

    /// Every setting under its Kafka name, as text, for DescribeConfigs.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("node.id", self.node_id.to_string()),
            ("listeners", self.listeners.clone()),
            (
                "advertised.listeners",
                self.advertised_listeners
                    .clone()
                    .unwrap_or_else(|| self.listeners.clone()),
            ),
            ("log.dirs", self.log_dirs.display().to_string()),
            ("num.partitions", self.num_partitions.to_string()),
            (
                "default.replication.factor",
                self.default_replication_factor.to_string(),
            ),
            (
                "auto.create.topics.enable",
                self.auto_create_topics_enable.to_string(),
            ),
            (
                "socket.request.max.bytes",
                self.socket_request_max_bytes.to_string(),
            ),
            ("max.connections", self.max_connections.to_string()),
            (
                "max.connections.per.ip",
                self.max_connections_per_ip.to_string(),
            ),
            (
                "max.connections.per.ip.overrides",
                self.max_connections_per_ip_overrides.clone(),
            ),
            (
                "connections.max.idle.ms",
                self.connections_max_idle_ms.to_string(),
            ),
            (
                "socket.request.read.timeout.ms",
                self.socket_request_read_timeout_ms.to_string(),
            ),
            (
                "queued.max.request.bytes",
                self.queued_max_request_bytes.to_string(),
            ),
            ("num.io.threads", self.num_io_threads.to_string()),
            (
                "num.recovery.threads.per.data.dir",
                self.num_recovery_threads_per_data_dir.to_string(),
            ),
            (
                "connection.max.in.flight.requests",
                self.connection_max_in_flight_requests.to_string(),
            ),
            ("fetch.max.bytes", self.fetch_max_bytes.to_string()),
            ("message.max.bytes", self.message_max_bytes.to_string()),
            ("log.segment.bytes", self.log_segment_bytes.to_string()),
            ("log.roll.ms", self.log_roll_ms.to_string()),
            ("log.retention.ms", self.log_retention_ms.to_string()),
            ("log.retention.bytes", self.log_retention_bytes.to_string()),
            (
                "log.index.size.max.bytes",
                self.log_index_size_max_bytes.to_string(),
            ),
            (
                "log.index.interval.bytes",
                self.log_index_interval_bytes.to_string(),
            ),
            (
                "log.message.timestamp.type",
                self.log_message_timestamp_type.clone(),
            ),
            ("log.cleanup.policy", self.log_cleanup_policy.clone()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            (
                "log.cleaner.delete.retention.ms",
                self.log_cleaner_delete_retention_ms.to_string(),
            ),
            (
                "log.cleaner.min.cleanable.ratio",
                self.log_cleaner_min_cleanable_ratio.to_string(),
            ),
            (
                "log.cleaner.min.compaction.lag.ms",
                self.log_cleaner_min_compaction_lag_ms.to_string(),
            ),
            (
                "log.cleaner.max.compaction.lag.ms",
                self.log_cleaner_max_compaction_lag_ms.to_string(),
            ),
            ("log.cleaner.enable", self.log_cleaner_enable.to_string()),
            (
                "log.cleaner.backoff.ms",
                self.log_cleaner_backoff_ms.to_string(),
            ),
            (
                "log.cleaner.dedupe.buffer.size",
                self.log_cleaner_dedupe_buffer_size.to_string(),
            ),
            (
                "producer.id.expiration.ms",
                self.producer_id_expiration_ms.to_string(),
            ),
            (
                "offsets.topic.num.partitions",
                self.offsets_topic_num_partitions.to_string(),
            ),
            (
                "offsets.topic.segment.bytes",
                self.offsets_topic_segment_bytes.to_string(),
            ),
            (
                "group.min.session.timeout.ms",
                self.group_min_session_timeout_ms.to_string(),
            ),
            (
                "group.max.session.timeout.ms",
                self.group_max_session_timeout_ms.to_string(),
            ),
            (
                "group.initial.rebalance.delay.ms",
                self.group_initial_rebalance_delay_ms.to_string(),
            ),
            ("group.max.size", self.group_max_size.to_string()),
            (
                "offsets.retention.minutes",
                self.offsets_retention_minutes.to_string(),
            ),
            (
                "offsets.retention.check.interval.ms",
                self.offsets_retention_check_interval_ms.to_string(),
            ),
            (
                "offset.metadata.max.bytes",
                self.offset_metadata_max_bytes.to_string(),
            ),
        ]
    }

    /// The address clients are told to use.
    pub fn advertised_host_port(&self) -> (String, u16) {
        let l = self
            .advertised_listeners
            .as_deref()
            .unwrap_or(&self.listeners);
        parse_listener(l).expect("validated at load")
    }

    /// `max.connections.per.ip.overrides` read: each address with its own limit.
    pub fn connection_limits_per_ip(
        &self,
    ) -> Result<std::collections::HashMap<std::net::IpAddr, u32>, String> {
        let mut limits = std::collections::HashMap::new();
        for entry in self
            .max_connections_per_ip_overrides
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let parsed = entry.rsplit_once(':').and_then(|(ip, n)| {
                Some((ip.trim_matches(['[', ']']).parse().ok()?, n.parse().ok()?))
            });
            match parsed {
                Some((ip, n)) => {
                    limits.insert(ip, n);
                }
                None => return Err(format!("`ip:count` entries, not `{entry}`")),
            }
        }
        Ok(limits)
    }

    /// The address to bind.
    pub fn listen_host_port(&self) -> (String, u16) {
        parse_listener(&self.listeners).expect("validated at load")
    }
}

/// Parses `host:port` or `PLAINTEXT://host:port`.
pub fn parse_listener(s: &str) -> Result<(String, u16), String> {
    let rest = s.strip_prefix("PLAINTEXT://").unwrap_or(s);
    if rest.contains("://") {
        return Err(
            "only PLAINTEXT listeners are supported: `host:port` or `PLAINTEXT://host:port`".into(),
        );
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| "expected `host:port` or `PLAINTEXT://host:port`".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port `{port}` is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = load(&Sources::default()).unwrap();
        assert_eq!(c, BrokerConfig::default());
        assert_eq!(c.listen_host_port(), ("localhost".to_string(), 9092));
        assert_eq!(c.socket_request_max_bytes, 104_857_600);
    }

    #[test]
    fn file_accepts_kafka_dotted_names_and_tables() {
        let f = file("num.partitions = 3\n[log]\nsegment.bytes = 1048576\n");
        let c = load_file(f.path()).unwrap();
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.log_segment_bytes, 1_048_576);
    }

    #[test]
    fn overrides_beat_the_file() {
        let f = file("num_partitions = 3\n");
        let c = load(&Sources {
            file: Some(f.path().into()),
            environment: false,
            overrides: vec![("num.partitions".into(), "5".into())],
        })
        .unwrap();
        assert_eq!(c.num_partitions, 5);
    }

    #[test]
    fn unknown_key_names_the_key_and_the_accepted_keys() {
        let f = file("num.partitionz = 3\n");
        let e = load_file(f.path()).unwrap_err().to_string();
        assert!(e.contains("num_partitionz"), "{e}");
        assert!(e.contains("num_partitions"), "{e}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let f = file("num.partitions = \"many\"\n");
        let e = load_file(f.path()).unwrap_err().to_string();
        assert!(e.contains("num_partitions"), "{e}");
        let f = file("num.partitions = 0\n");
        let e = load_file(f.path()).unwrap_err().to_string();
        assert!(e.contains("num.partitions") && e.contains(">= 1"), "{e}");
        let f = file("listeners = \"SSL://x:1\"\n");
        let e = load_file(f.path()).unwrap_err().to_string();
        assert!(e.contains("listeners") && e.contains("PLAINTEXT"), "{e}");
    }

    #[test]
    fn each_bad_group_and_offsets_setting_is_named_by_its_own_key() {
        for (key, value) in [
            ("group.max.size", "0"),
            ("group.initial.rebalance.delay.ms", "-1"),
            ("offsets.retention.minutes", "0"),
            ("offsets.retention.check.interval.ms", "0"),
        ] {
            let e = load(&Sources {
                file: None,
                environment: false,
                overrides: vec![(key.into(), value.into())],
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains(&format!("key `{key}` ")), "{key}: {e}");
        }
    }
}
