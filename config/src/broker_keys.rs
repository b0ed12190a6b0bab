//! The broker's keys, each defined once: name, field, type, default, check and documentation.
//!
//! The `broker_keys!` invocation below is the only place a broker key is written. From each entry
//! the macro makes the field of [`BrokerConfig`] (with the entry's doc comment), its value in
//! `Default`, and a [`BrokerKey`] in [`BROKER_KEYS`]; `validate`, `entries` (what DescribeConfigs
//! answers) and the README's Configuration table (checked and printed by the tests in
//! `readme.rs`) are derived from those.
//!
//! Why a `macro_rules!` table rather than a static array of key specs: the fields have different
//! types and serde deserializes into them, so an array could hold each key's name, text and check,
//! but every key would still need its field, its default and an accessor written again beside it.
//! The macro writes those three from the one entry, with no new dependency. What a key accepts
//! stays data ([`Check`]); the few rules that span keys are named functions in `CROSS_CHECKS`.
//!
//! Invariant: every field of `BrokerConfig` has exactly one entry here, and a value its check
//! refuses is an error naming the key, the value and what the key accepts, never a silent default.

use std::path::PathBuf;

use serde::Deserialize;

use crate::topic::{self, TopicConfigError};
use crate::{invalid, parse_connection_limits, parse_listener, ConfigError};

/// What a key accepts, beyond the type serde has already checked.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// Any value of the field's type.
    Any,
    /// A whole number no smaller than this.
    AtLeast(i64),
    /// A whole number in this range, both ends included.
    Between(i64, i64),
    /// Only this number, for the reason given.
    Only(i64, &'static str),
    /// Text this parser accepts; its error says what it expects.
    Parsed(fn(&str) -> Result<(), String>),
    /// Checked by the topic rules, as the default of the topic key it is the synonym of.
    TopicDefault,
}

impl Check {
    /// What the check expects, when it refuses this value; `None` when it accepts it.
    fn refusal(self, whole: Option<i128>, text: &str) -> Option<String> {
        let (range, expected) = match self {
            Check::Any | Check::TopicDefault => return None,
            Check::Parsed(parse) => return parse(text).err(),
            Check::AtLeast(low) => (low.into()..=i128::MAX, format!("a number >= {low}")),
            Check::Between(low, high) => (
                low.into()..=high.into(),
                format!("a number from {low} to {high}"),
            ),
            Check::Only(only, why) => (only.into()..=only.into(), format!("{only} ({why})")),
        };
        (!whole.is_some_and(|n| range.contains(&n))).then_some(expected)
    }
}

/// A field's value as the checks and DescribeConfigs see it.
pub(crate) trait KeyValue {
    /// As text; `None` for an optional key left unset.
    fn text(&self) -> Option<String>;
    /// As a whole number, for the range checks; `None` for a value of another type.
    fn whole(&self) -> Option<i128> {
        None
    }
}

macro_rules! key_values {
    (whole: $($whole:ty),+; text: $($text:ty),+) => {
        $(impl KeyValue for $whole {
            fn text(&self) -> Option<String> {
                Some(self.to_string())
            }
            fn whole(&self) -> Option<i128> {
                Some(i128::from(*self))
            }
        })+
        $(impl KeyValue for $text {
            fn text(&self) -> Option<String> {
                Some(self.to_string())
            }
        })+
    };
}

key_values!(whole: i16, i32, i64, u32, u64; text: f64, bool, String);

impl KeyValue for PathBuf {
    fn text(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

impl KeyValue for Option<String> {
    fn text(&self) -> Option<String> {
        self.clone()
    }
}

/// One broker key, as the `broker_keys!` table defines it.
pub struct BrokerKey {
    /// Kafka's name; `load` also takes it with `_` for `.` and as a TOML table path.
    pub name: &'static str,
    /// The [`BrokerConfig`] field: `name` with `.` written `_`.
    pub field: &'static str,
    /// What the key accepts.
    pub check: Check,
    /// The key whose value this one has while it is unset.
    pub unset_shows: Option<&'static str>,
    /// The field's doc comment, its lines joined.
    doc: &'static str,
    pub(crate) get: fn(&BrokerConfig) -> &dyn KeyValue,
}

impl BrokerKey {
    /// What the key is for, in one paragraph (the field's doc comment).
    pub fn doc(&self) -> &'static str {
        self.doc.trim()
    }

    /// The key's value in `config` as text; an unset key has the value of its `unset_shows` key.
    pub fn value(&self, config: &BrokerConfig) -> String {
        (self.get)(config)
            .text()
            .or_else(|| {
                let fallback = broker_key(self.unset_shows?)?;
                (fallback.get)(config).text()
            })
            .unwrap_or_default()
    }

    /// Refuses the key's value in `config` when its check does, naming key, value and rule.
    fn check_value(&self, config: &BrokerConfig) -> Result<(), ConfigError> {
        let value = (self.get)(config);
        let Some(text) = value.text() else {
            return Ok(());
        };
        match self.check.refusal(value.whole(), &text) {
            None => Ok(()),
            Some(expected) => Err(invalid(self.name, text, expected)),
        }
    }
}

/// The broker key of this Kafka name.
pub fn broker_key(name: &str) -> Option<&'static BrokerKey> {
    BROKER_KEYS.iter().find(|k| k.name == name)
}

/// Writes `BrokerConfig`, its `Default` and `BROKER_KEYS` from one entry per key:
/// doc comment, `"kafka.name" field: Type = default, check` and, for an optional key,
/// `, unset: "other.key"` (the key whose value it has while unset).
macro_rules! broker_keys {
    (@unset) => { None };
    (@unset $key:literal) => { Some($key) };
    ($(
        $(#[doc = $doc:literal])+
        $name:literal $field:ident: $type:ty = $default:expr, $check:expr
            $(, unset: $unset:literal)?;
    )+) => {
        /// Broker settings, named as Kafka names them with `.` written `_`.
        #[derive(Debug, Clone, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct BrokerConfig {
            $($(#[doc = $doc])+ pub $field: $type,)+
        }

        impl Default for BrokerConfig {
            fn default() -> Self {
                Self { $($field: $default,)+ }
            }
        }

        /// Every broker key, in the order DescribeConfigs lists them.
        pub const BROKER_KEYS: &[BrokerKey] = &[$(
            BrokerKey {
                name: $name,
                field: stringify!($field),
                check: $check,
                unset_shows: broker_keys!(@unset $($unset)?),
                doc: concat!($($doc),+),
                get: |config: &BrokerConfig| -> &dyn KeyValue { &config.$field },
            },
        )+];
    };
}

const KIB: u32 = 1024;
const MIB: u32 = 1024 * KIB;
const DAY_MS: i64 = 24 * 3_600_000;

broker_keys! {
    /// This broker's id in the cluster.
    "node.id" node_id: i32 = 0, Check::AtLeast(0);
    /// What this node is: `broker,controller` (combined: it serves clients and is a voter of
    /// the metadata quorum), `broker` (it serves clients and follows the metadata log as an
    /// observer of the quorum, which needs `controller.quorum.voters`), or `controller` (a voter
    /// that serves no clients and hosts no replicas; it needs `controller.quorum.voters`).
    "process.roles" process_roles: String = "broker,controller".into(),
        Check::Parsed(process_roles);
    /// The voters of the metadata quorum, `id@host:port,...` (their controller listeners).
    /// Empty: this node is a single-node cluster, its own quorum of one.
    "controller.quorum.voters" controller_quorum_voters: String = String::new(),
        Check::Parsed(voters);
    /// Address the controller listens on for the quorum's traffic, `host:port`; its port is
    /// this node's in `controller.quorum.voters`. Unused without voters.
    "controller.listener" controller_listener: String = "localhost:9093".into(),
        Check::Parsed(listener);
    /// Leader elections of the metadata quorum start after this long without a leader's heartbeat
    /// (a random time up to twice this, so voters seldom tie).
    "controller.quorum.election.timeout.ms" controller_quorum_election_timeout_ms: u64 = 1_000,
        Check::Between(100, 60_000);
    /// The cluster this node belongs to, kept in `meta.properties`; unset, a single node makes one
    /// at its first start and a quorum takes one derived from its voter list.
    "cluster.id" cluster_id: Option<String> = None, Check::Parsed(cluster_id);
    /// Metadata records applied between two snapshots of the image; a restart loads the newest
    /// snapshot and replays only what follows it.
    "metadata.log.max.records.between.snapshots" metadata_log_max_records_between_snapshots: u64 =
        20_000, Check::Between(10, 100_000_000);
    /// How often a broker tells the controller it is alive.
    "broker.heartbeat.interval.ms" broker_heartbeat_interval_ms: u64 = 2_000, Check::AtLeast(10);
    /// A broker not heard from for this long is fenced: no longer offered to clients.
    "broker.session.timeout.ms" broker_session_timeout_ms: u64 = 9_000, Check::AtLeast(100);
    /// Address to bind: `host:port` or `PLAINTEXT://host:port`.
    "listeners" listeners: String = "localhost:9092".into(), Check::Parsed(listener);
    /// Address clients are told to connect to, in Metadata.
    "advertised.listeners" advertised_listeners: Option<String> = None, Check::Parsed(listener),
        unset: "listeners";
    /// Directory holding the partition logs and the metadata log.
    "log.dirs" log_dirs: PathBuf = PathBuf::from("./data"), Check::Any;
    /// Partitions of an automatically created topic, and of CreateTopics with -1.
    "num.partitions" num_partitions: i32 = 1, Check::AtLeast(1);
    /// Replication factor of a topic created automatically or with -1.
    "default.replication.factor" default_replication_factor: i16 = 1,
        Check::Between(1, i16::MAX as i64);
    /// Create a topic when a client asks Metadata for one that does not exist.
    "auto.create.topics.enable" auto_create_topics_enable: bool = true, Check::Any;
    /// Largest request frame accepted; a larger one closes the connection.
    "socket.request.max.bytes" socket_request_max_bytes: u32 = 100 * MIB, Check::AtLeast(1024);
    /// Connections served at once; more are closed on accept.
    "max.connections" max_connections: u32 = 1_000, Check::AtLeast(1);
    /// Connections one client address may have open at once.
    "max.connections.per.ip" max_connections_per_ip: u32 = i32::MAX as u32, Check::AtLeast(1);
    /// Per-address exceptions to `max.connections.per.ip`: `ip:count,ip:count`.
    "max.connections.per.ip.overrides" max_connections_per_ip_overrides: String = String::new(),
        Check::Parsed(connection_limits);
    /// A connection with no request in progress and no bytes coming for this long is closed.
    "connections.max.idle.ms" connections_max_idle_ms: i64 = 600_000, Check::AtLeast(1);
    /// A request whose first bytes arrived must be whole within this long, or its connection is
    /// closed (a stalled frame holds its buffer until then).
    "socket.request.read.timeout.ms" socket_request_read_timeout_ms: i64 = 30_000,
        Check::AtLeast(1);
    /// Bytes of requests held at once across all connections (read but not yet answered); a
    /// connection waits to read more while they are taken.
    "queued.max.request.bytes" queued_max_request_bytes: i64 = 512 * MIB as i64, Check::Any;
    /// Requests one connection may have in progress at once; responses keep request order.
    "connection.max.in.flight.requests" connection_max_in_flight_requests: u32 = 64,
        Check::Between(1, 10_000);
    /// Request work run off the network runtime at once (decompressing produced batches to
    /// validate or recompress them, timestamp lookups, admin changes); the rest waits.
    "num.io.threads" num_io_threads: u32 = 8, Check::Between(1, 256);
    /// Threads that open (and after a crash recover) the logs at start and close them at
    /// shutdown, and make a new topic's partitions.
    "num.recovery.threads.per.data.dir" num_recovery_threads_per_data_dir: u32 = 2,
        Check::Between(1, 256);
    /// Upper bound on the records one Fetch response carries.
    "fetch.max.bytes" fetch_max_bytes: i32 = 55 * MIB as i32, Check::AtLeast(1024);
    /// Largest record batch accepted.
    "message.max.bytes" message_max_bytes: i32 = 1_048_588, Check::TopicDefault;
    /// Size at which a segment rolls.
    "log.segment.bytes" log_segment_bytes: i32 = 1024 * MIB as i32, Check::TopicDefault;
    /// Age at which a segment rolls.
    "log.roll.ms" log_roll_ms: i64 = 7 * DAY_MS, Check::TopicDefault;
    /// How long a closed segment is kept; -1 for no limit.
    "log.retention.ms" log_retention_ms: i64 = 7 * DAY_MS, Check::TopicDefault;
    /// Bytes a partition may keep before retention deletes its oldest segments; -1 for no limit.
    "log.retention.bytes" log_retention_bytes: i64 = -1, Check::TopicDefault;
    /// Size of a segment's offset index.
    "log.index.size.max.bytes" log_index_size_max_bytes: i32 = 10 * MIB as i32,
        Check::TopicDefault;
    /// How often retention looks for segments to delete.
    "log.retention.check.interval.ms" log_retention_check_interval_ms: u64 = 300_000,
        Check::AtLeast(1);
    /// Fsync after this many messages (1: before every acknowledgement).
    "log.flush.interval.messages" log_flush_interval_messages: i64 = i64::MAX, Check::TopicDefault;
    /// Fsync when the oldest unflushed message is this old.
    "log.flush.interval.ms" log_flush_interval_ms: i64 = i64::MAX, Check::TopicDefault;
    /// How often the flusher looks for logs due a `flush.ms` flush.
    "log.flush.scheduler.interval.ms" log_flush_scheduler_interval_ms: u64 = 1_000,
        Check::AtLeast(1);
    /// How often the recovery points are checkpointed.
    "log.flush.offset.checkpoint.interval.ms" log_flush_offset_checkpoint_interval_ms: u64 = 60_000,
        Check::AtLeast(1);
    /// Bytes between offset index entries.
    "log.index.interval.bytes" log_index_interval_bytes: i32 = 4096, Check::TopicDefault;
    /// `CreateTime` (the producer's timestamp) or `LogAppendTime` (the broker's clock).
    "log.message.timestamp.type" log_message_timestamp_type: String = "CreateTime".into(),
        Check::TopicDefault;
    /// `delete` (retention deletes old segments), `compact` (the cleaner keeps the last record
    /// per key), or `compact,delete`.
    "log.cleanup.policy" log_cleanup_policy: String = "delete".into(), Check::TopicDefault;
    /// Replicas that must hold a write for acks=all, which refuses with NOT_ENOUGH_REPLICAS
    /// below it.
    "min.insync.replicas" min_insync_replicas: i32 = 1, Check::TopicDefault;
    /// A leader may be elected from outside the in-sync replicas when none of them is left,
    /// losing what only they held (a topic may override it).
    "unclean.leader.election.enable" unclean_leader_election_enable: bool = false,
        Check::TopicDefault;
    /// A follower that has not caught up with its leader's log end for this long leaves the
    /// in-sync replicas.
    "replica.lag.time.max.ms" replica_lag_time_max_ms: i64 = 30_000, Check::AtLeast(10);
    /// Bytes a follower asks of each partition per fetch (a larger first batch still comes).
    "replica.fetch.max.bytes" replica_fetch_max_bytes: i32 = MIB as i32, Check::AtLeast(1024);
    /// Bytes a follower asks of one fetch response in all.
    "replica.fetch.response.max.bytes" replica_fetch_response_max_bytes: i32 = 10 * MIB as i32,
        Check::AtLeast(1024);
    /// Longest a follower's fetch waits at the leader for new records.
    "replica.fetch.wait.max.ms" replica_fetch_wait_max_ms: i32 = 500, Check::Between(0, 30_000);
    /// Pause of a follower's fetcher after an error before it fetches again.
    "replica.fetch.backoff.ms" replica_fetch_backoff_ms: u64 = 1_000, Check::AtLeast(1);
    /// Fetchers per source broker; a follower's partitions of one leader are spread over them.
    "num.replica.fetchers" num_replica_fetchers: u32 = 1, Check::Between(1, 64);
    /// How often each partition's high watermark is checkpointed
    /// (`replication-offset-checkpoint`).
    "replica.high.watermark.checkpoint.interval.ms" replica_high_watermark_checkpoint_interval_ms:
        u64 = 5_000, Check::AtLeast(1);
    /// The active controller moves leadership back to each partition's preferred replica (its
    /// first) when a broker leads too few of the partitions it prefers.
    "auto.leader.rebalance.enable" auto_leader_rebalance_enable: bool = true, Check::Any;
    /// How often the active controller checks the leaders' balance.
    "leader.imbalance.check.interval.seconds" leader_imbalance_check_interval_seconds: u64 = 300,
        Check::AtLeast(1);
    /// Share of a broker's preferred partitions led elsewhere above which they are moved back.
    "leader.imbalance.per.broker.percentage" leader_imbalance_per_broker_percentage: i32 = 10,
        Check::Between(0, 100);
    /// The rack (or zone) this broker is in: consumers in the same rack may read from its
    /// replicas (KIP-392, with `replica.selector.class`).
    "broker.rack" broker_rack: Option<String> = None, Check::Any;
    /// How a leader picks the replica a consumer should read from: unset, the leader itself;
    /// `org.apache.kafka.common.replica.RackAwareReplicaSelector`, an in-sync replica in the
    /// consumer's `client.rack`.
    "replica.selector.class" replica_selector_class: Option<String> = None,
        Check::Parsed(replica_selector);
    /// acks=all produce requests waiting for their records to be replicated, at most; one more
    /// is answered REQUEST_TIMED_OUT at once (its records are in the leader's log).
    "produce.purgatory.max.requests" produce_purgatory_max_requests: u32 = 10_000,
        Check::Between(1, 1_000_000);
    /// How long a tombstone outlives its first clean.
    "log.cleaner.delete.retention.ms" log_cleaner_delete_retention_ms: i64 = DAY_MS,
        Check::TopicDefault;
    /// Share of uncleaned bytes at which a compacted log is cleaned.
    "log.cleaner.min.cleanable.ratio" log_cleaner_min_cleanable_ratio: f64 = 0.5,
        Check::TopicDefault;
    /// Records younger than this are not compacted.
    "log.cleaner.min.compaction.lag.ms" log_cleaner_min_compaction_lag_ms: i64 = 0,
        Check::TopicDefault;
    /// A dirty record older than this makes its log due a clean.
    "log.cleaner.max.compaction.lag.ms" log_cleaner_max_compaction_lag_ms: i64 = i64::MAX,
        Check::TopicDefault;
    /// Run the log cleaner (compaction of `cleanup.policy=compact` topics).
    "log.cleaner.enable" log_cleaner_enable: bool = true, Check::Any;
    /// How long the cleaner sleeps when no log needs cleaning.
    "log.cleaner.backoff.ms" log_cleaner_backoff_ms: u64 = 15_000, Check::AtLeast(1);
    /// Memory for the cleaner's key-to-offset map at 24 bytes a key; one clean covers as many
    /// keys as fit.
    "log.cleaner.dedupe.buffer.size" log_cleaner_dedupe_buffer_size: u64 = 128 * MIB as u64,
        Check::AtLeast(MIB as i64);
    /// An idempotent producer silent this long is forgotten (checked with retention).
    "producer.id.expiration.ms" producer_id_expiration_ms: i64 = DAY_MS, Check::AtLeast(1);
    /// Partitions of `__consumer_offsets`, fixed when the topic is first created.
    "offsets.topic.num.partitions" offsets_topic_num_partitions: i32 = 50,
        Check::Between(1, 1000);
    /// Replicas of each `__consumer_offsets` partition; the topic is not made while fewer
    /// brokers are registered (a single node, with no voters configured, uses 1).
    "offsets.topic.replication.factor" offsets_topic_replication_factor: i16 = 3,
        Check::Between(1, i16::MAX as i64);
    /// `segment.bytes` of `__consumer_offsets`.
    "offsets.topic.segment.bytes" offsets_topic_segment_bytes: i32 = 100 * MIB as i32, Check::Any;
    /// Smallest session timeout a group member may ask for.
    "group.min.session.timeout.ms" group_min_session_timeout_ms: i32 = 6_000, Check::AtLeast(1);
    /// Largest session timeout a group member may ask for.
    "group.max.session.timeout.ms" group_max_session_timeout_ms: i32 = 1_800_000, Check::Any;
    /// How long the first rebalance of an empty group waits for more members to join.
    "group.initial.rebalance.delay.ms" group_initial_rebalance_delay_ms: i32 = 3_000,
        Check::AtLeast(0);
    /// Most members a group may have; a join beyond gets GROUP_MAX_SIZE_REACHED.
    "group.max.size" group_max_size: i32 = 10_000, Check::AtLeast(1);
    /// Committed offsets of a group without members are kept this long.
    "offsets.retention.minutes" offsets_retention_minutes: i64 = 7 * 24 * 60, Check::AtLeast(1);
    /// How often expired offsets and empty groups are looked for.
    "offsets.retention.check.interval.ms" offsets_retention_check_interval_ms: u64 = 600_000,
        Check::AtLeast(1);
    /// Largest metadata string a committed offset may carry.
    "offset.metadata.max.bytes" offset_metadata_max_bytes: i32 = 4096, Check::Any;
}

fn listener(text: &str) -> Result<(), String> {
    parse_listener(text).map(drop)
}

fn connection_limits(text: &str) -> Result<(), String> {
    parse_connection_limits(text).map(drop)
}

fn process_roles(text: &str) -> Result<(), String> {
    let mut roles: Vec<&str> = text.split(',').map(str::trim).collect();
    roles.sort_unstable();
    if roles == ["broker", "controller"] || roles == ["broker"] || roles == ["controller"] {
        return Ok(());
    }
    Err("`broker,controller` (a combined node), `broker` (a broker-only node) or `controller` (a controller-only node)".into())
}

/// Kafka's rack-aware selector, the one selector Quipu has.
pub const RACK_AWARE_REPLICA_SELECTOR: &str =
    "org.apache.kafka.common.replica.RackAwareReplicaSelector";

fn replica_selector(text: &str) -> Result<(), String> {
    match text == RACK_AWARE_REPLICA_SELECTOR {
        true => Ok(()),
        false => Err(format!(
            "{RACK_AWARE_REPLICA_SELECTOR} (the one selector there is)"
        )),
    }
}

fn voters(text: &str) -> Result<(), String> {
    crate::parse_voters(text).map(drop)
}

fn cluster_id(text: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        return Ok(());
    }
    Err("1 to 64 ASCII letters, digits, '-' or '_'".into())
}

/// A rule that spans keys; its error names the key to change.
type CrossCheck = fn(&BrokerConfig) -> Result<(), ConfigError>;

/// The rules that span keys, each named for what it keeps; they run after every key's own check.
const CROSS_CHECKS: &[CrossCheck] = &[
    request_pool_holds_the_largest_request,
    session_timeouts_are_ordered,
    topic_defaults_follow_the_topic_rules,
    this_node_is_a_voter,
    heartbeats_come_within_the_session,
];

/// Bytes the server reads from a socket at a time (its `READ_CHUNK_BYTES`), outside the pool.
const READ_CHUNK_BYTES: i64 = 64 * KIB as i64;

/// A whole frame and a read chunk must fit in the request pool, or the largest request could
/// never be read.
fn request_pool_holds_the_largest_request(config: &BrokerConfig) -> Result<(), ConfigError> {
    let least = i64::from(config.socket_request_max_bytes) + READ_CHUNK_BYTES;
    let most = i64::from(u32::MAX) * 4;
    if (least..=most).contains(&config.queued_max_request_bytes) {
        return Ok(());
    }
    Err(invalid(
        "queued.max.request.bytes",
        config.queued_max_request_bytes,
        format!(
            "at least socket.request.max.bytes + {READ_CHUNK_BYTES} ({least}) and at most {most}"
        ),
    ))
}

fn session_timeouts_are_ordered(config: &BrokerConfig) -> Result<(), ConfigError> {
    let (min, max) = (
        config.group_min_session_timeout_ms,
        config.group_max_session_timeout_ms,
    );
    if min <= max {
        return Ok(());
    }
    Err(invalid(
        "group.min.session.timeout.ms",
        min,
        format!("at most group.max.session.timeout.ms ({max})"),
    ))
}

/// With a quorum, this node is one of its voters, listening where the voter list says.
fn this_node_is_a_voter(config: &BrokerConfig) -> Result<(), ConfigError> {
    let voters = crate::parse_voters(&config.controller_quorum_voters).expect("checked");
    if !config.is_controller() {
        return a_broker_only_node_is_not_a_voter(config, &voters);
    }
    if voters.is_empty() && !config.is_broker() {
        return Err(invalid(
            "controller.quorum.voters",
            "",
            "the voters of the quorum a controller-only node (process.roles=controller) is part of"
                .to_string(),
        ));
    }
    if voters.is_empty() {
        return Ok(());
    }
    let Some(me) = voters.iter().find(|v| v.node_id == config.node_id) else {
        return Err(invalid(
            "node.id",
            config.node_id,
            format!(
                "one of the voters' ids in controller.quorum.voters ({})",
                config.controller_quorum_voters
            ),
        ));
    };
    let (_, port) = parse_listener(&config.controller_listener).expect("checked");
    if port == me.port {
        return Ok(());
    }
    Err(invalid(
        "controller.listener",
        &config.controller_listener,
        format!(
            "port {} (node {}'s port in controller.quorum.voters)",
            me.port, me.node_id
        ),
    ))
}

/// A broker-only node follows a quorum it is not part of: there must be voters, and its id must
/// be none of theirs.
fn a_broker_only_node_is_not_a_voter(
    config: &BrokerConfig,
    voters: &[crate::Voter],
) -> Result<(), ConfigError> {
    if voters.is_empty() {
        return Err(invalid(
            "controller.quorum.voters",
            "",
            "the voters of the quorum a broker-only node (process.roles=broker) follows"
                .to_string(),
        ));
    }
    if voters.iter().any(|v| v.node_id == config.node_id) {
        return Err(invalid(
            "node.id",
            config.node_id,
            format!(
                "an id that is not a voter's ({}): a broker-only node is not a voter",
                config.controller_quorum_voters
            ),
        ));
    }
    Ok(())
}

fn heartbeats_come_within_the_session(config: &BrokerConfig) -> Result<(), ConfigError> {
    let (beat, session) = (
        config.broker_heartbeat_interval_ms,
        config.broker_session_timeout_ms,
    );
    if beat < session {
        return Ok(());
    }
    Err(invalid(
        "broker.heartbeat.interval.ms",
        beat,
        format!("less than broker.session.timeout.ms ({session})"),
    ))
}

/// The topic defaults must pass the topic rules; a refusal names the broker key that gave it.
fn topic_defaults_follow_the_topic_rules(config: &BrokerConfig) -> Result<(), ConfigError> {
    let Err(error) = topic::TopicConfig::defaults_from(config) else {
        return Ok(());
    };
    if let TopicConfigError::Invalid {
        name,
        value,
        expected,
    } = &error
    {
        if let Some(key) = topic::topic_key(name).and_then(|k| broker_key(k.broker_synonym)) {
            return Err(invalid(key.name, value, *expected));
        }
    }
    Err(ConfigError::Invalid {
        key: "log.*",
        value: error.to_string(),
        expected: "a valid topic default".into(),
    })
}

impl BrokerConfig {
    /// Checks every value against what its key accepts, then the rules that span keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for key in BROKER_KEYS {
            key.check_value(self)?;
        }
        CROSS_CHECKS.iter().try_for_each(|check| check(self))
    }

    /// Every setting under its Kafka name, as text, for DescribeConfigs.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        BROKER_KEYS
            .iter()
            .map(|k| (k.name, k.value(self)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_name_is_its_field_name_with_dots() {
        for key in BROKER_KEYS {
            assert_eq!(key.name.replace('.', "_"), key.field, "{}", key.name);
        }
    }

    #[test]
    fn every_unset_key_falls_back_to_a_key_that_is_always_set() {
        let defaults = BrokerConfig::default();
        for key in BROKER_KEYS {
            if let Some(other) = key.unset_shows {
                let other = broker_key(other).unwrap_or_else(|| panic!("{}: no {other}", key.name));
                assert!((other.get)(&defaults).text().is_some(), "{}", key.name);
            }
        }
    }

    #[test]
    fn every_topic_default_key_gives_a_topic_keys_default() {
        for key in BROKER_KEYS {
            if matches!(key.check, Check::TopicDefault) {
                assert!(
                    topic::TOPIC_CONFIG_KEYS
                        .iter()
                        .any(|t| t.broker_synonym == key.name),
                    "{} is checked as a topic default, but no topic key takes its default from it",
                    key.name
                );
            }
        }
    }

    #[test]
    fn entries_list_every_key_and_an_unset_one_as_its_fallback() {
        let config = BrokerConfig::default();
        let entries = config.entries();
        assert_eq!(entries.len(), BROKER_KEYS.len());
        assert!(entries.contains(&("advertised.listeners", "localhost:9092".into())));
        assert!(entries.contains(&("log.cleaner.min.cleanable.ratio", "0.5".into())));
    }

    #[test]
    fn cross_key_rules_name_the_key_to_change() {
        let config = |change: fn(&mut BrokerConfig)| {
            let mut c = BrokerConfig::default();
            change(&mut c);
            c.validate().unwrap_err().to_string()
        };
        let e = config(|c| c.queued_max_request_bytes = i64::from(c.socket_request_max_bytes));
        assert!(
            e.contains("`queued.max.request.bytes`") && e.contains("104923136"),
            "{e}"
        );
        let e = config(|c| c.group_max_session_timeout_ms = c.group_min_session_timeout_ms - 1);
        assert!(e.contains("`group.min.session.timeout.ms`"), "{e}");
        let e = config(|c| c.log_cleaner_max_compaction_lag_ms = 0);
        assert!(e.contains("`log.cleaner.max.compaction.lag.ms`"), "{e}");
        let e = config(|c| c.log_segment_bytes = 10);
        assert!(
            e.contains("`log.segment.bytes` has invalid value 10: an int >= 14"),
            "{e}"
        );
    }
}
