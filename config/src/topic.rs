//! Per-topic settings under Kafka's topic config names (`retention.ms`, `segment.bytes`, …).
//!
//! A topic's effective config is the broker's defaults with the topic's own overrides on top; only
//! the overrides are stored with the topic, so a changed broker default reaches every topic that did
//! not set its own. Every topic setting Apache Kafka 4.3 defines is accepted, with Kafka's
//! validation: an unknown name or a value out of range is refused with a message naming it
//! (Kafka's INVALID_CONFIG). A few have no effect on a single broker without tiered storage; each
//! key's documentation (which DescribeConfigs returns) says which and why.
//!
//! The keys themselves (name, synonym, type, default, check, documentation) are defined once, in
//! `topic/keys.rs`; this module merges defaults and overrides, checks every value against its key
//! and the rules that span keys, and reads the typed settings the broker uses.
//!
//! Invariant: an unknown name or a bad value is an error naming it, never a silent default; a
//! `TopicConfig` exists only for settings that all passed their checks.

mod keys;

use std::collections::BTreeMap;

pub use keys::{
    topic_key, ConfigType, TopicCheck, TopicConfigKey, TopicDefault, TOPIC_CONFIG_KEYS,
};

use crate::BrokerConfig;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicConfigError {
    #[error("unknown topic config name: {0}")]
    Unknown(String),
    #[error("invalid value {value} for configuration {name}: {expected}")]
    Invalid {
        name: String,
        value: String,
        expected: &'static str,
    },
    #[error("{0}")]
    Conflict(String),
}

/// `compression.type`: what the broker stores a produced batch as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicCompression {
    /// As the producer sent it.
    Producer,
    /// Recompressed to this batch codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd) unless it
    /// already is, at this level (None: the codec's default).
    Codec(i16, Option<i32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// A topic's effective settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub max_message_bytes: i32,
    pub message_timestamp_type: TimestampType,
    pub min_insync_replicas: i32,
    pub unclean_leader_election_enable: bool,
    pub retention_bytes: i64,
    pub retention_ms: i64,
    pub segment_bytes: i32,
    pub segment_index_bytes: i32,
    pub segment_ms: i64,
    pub index_interval_bytes: i32,
    pub flush_messages: i64,
    pub flush_ms: i64,
    /// `cleanup.policy` holds `delete`: retention deletes old segments.
    pub cleanup_delete: bool,
    /// `cleanup.policy` holds `compact`: the cleaner keeps the last record per key.
    pub cleanup_compact: bool,
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub compression: TopicCompression,
    /// With CreateTime, how far a record's timestamp may be behind the broker's clock.
    pub message_timestamp_before_max_ms: i64,
    /// With CreateTime, how far a record's timestamp may be ahead of the broker's clock.
    pub message_timestamp_after_max_ms: i64,
    /// Every setting as text, by name, defaults and overrides merged.
    values: BTreeMap<&'static str, String>,
}

impl TopicConfig {
    /// The defaults a topic without overrides gets from this broker config.
    pub fn defaults_from(broker: &BrokerConfig) -> Result<Self, TopicConfigError> {
        Self::build(&broker_defaults(broker), &BTreeMap::new())
    }

    /// The effective config of a topic with these overrides; refuses unknown names and bad values.
    pub fn with_overrides(
        broker: &BrokerConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, TopicConfigError> {
        Self::build(&broker_defaults(broker), overrides)
    }

    fn build(
        defaults: &BTreeMap<&'static str, String>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, TopicConfigError> {
        let values = Values::merged(defaults, overrides)?;
        for key in TOPIC_CONFIG_KEYS {
            key.check_value(values.text(key.name))?;
        }
        refuse_tiered_storage(&values)?;
        compaction_lags_are_ordered(&values)?;
        Self::read(values)
    }

    /// The typed settings, from values that passed their checks.
    fn read(values: Values) -> Result<Self, TopicConfigError> {
        let (cleanup_delete, cleanup_compact) = keys::cleanup_policy(values.text("cleanup.policy"))
            .ok_or_else(|| values.refusal("cleanup.policy"))?;
        Ok(Self {
            max_message_bytes: values.int("max.message.bytes")?,
            message_timestamp_type: timestamp_type(&values)?,
            min_insync_replicas: values.int("min.insync.replicas")?,
            unclean_leader_election_enable: values
                .text("unclean.leader.election.enable")
                .eq_ignore_ascii_case("true"),
            retention_bytes: values.long("retention.bytes")?,
            retention_ms: values.long("retention.ms")?,
            segment_bytes: values.int("segment.bytes")?,
            segment_index_bytes: values.int("segment.index.bytes")?,
            segment_ms: values.long("segment.ms")?,
            index_interval_bytes: values.int("index.interval.bytes")?,
            flush_messages: values.long("flush.messages")?,
            flush_ms: values.long("flush.ms")?,
            cleanup_delete,
            cleanup_compact,
            delete_retention_ms: values.long("delete.retention.ms")?,
            min_cleanable_dirty_ratio: values.ratio("min.cleanable.dirty.ratio")?,
            min_compaction_lag_ms: values.long("min.compaction.lag.ms")?,
            max_compaction_lag_ms: values.long("max.compaction.lag.ms")?,
            compression: compression(&values)?,
            message_timestamp_before_max_ms: values.long("message.timestamp.before.max.ms")?,
            message_timestamp_after_max_ms: values.long("message.timestamp.after.max.ms")?,
            values: values.0,
        })
    }

    /// The effective value of a setting, as text.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|s| s.as_str())
    }
}

/// Every setting as text, by name: the defaults with the overrides on top.
struct Values(BTreeMap<&'static str, String>);

impl Values {
    fn merged(
        defaults: &BTreeMap<&'static str, String>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, TopicConfigError> {
        let mut values = defaults.clone();
        for (name, value) in overrides {
            let key = topic_key(name).ok_or_else(|| TopicConfigError::Unknown(name.clone()))?;
            values.insert(key.name, value.clone());
        }
        Ok(Self(values))
    }

    fn text(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    /// The error for the value of `name`, which its key does not accept.
    fn refusal(&self, name: &str) -> TopicConfigError {
        match topic_key(name) {
            Some(key) => key.refusal(self.text(name)),
            None => TopicConfigError::Unknown(name.into()),
        }
    }

    fn long(&self, name: &str) -> Result<i64, TopicConfigError> {
        keys::parse_whole(self.text(name)).ok_or_else(|| self.refusal(name))
    }

    fn int(&self, name: &str) -> Result<i32, TopicConfigError> {
        i32::try_from(self.long(name)?).map_err(|_| self.refusal(name))
    }

    fn ratio(&self, name: &str) -> Result<f64, TopicConfigError> {
        self.text(name)
            .trim()
            .parse()
            .map_err(|_| self.refusal(name))
    }
}

/// Every key's default under this broker config.
fn broker_defaults(broker: &BrokerConfig) -> BTreeMap<&'static str, String> {
    TOPIC_CONFIG_KEYS
        .iter()
        .map(|k| (k.name, k.default_value(broker)))
        .collect()
}

/// `remote.storage.enable=true` is a valid boolean that this broker cannot honour.
fn refuse_tiered_storage(values: &Values) -> Result<(), TopicConfigError> {
    if keys::parse_flag(values.text("remote.storage.enable")) != Some(true) {
        return Ok(());
    }
    Err(TopicConfigError::Invalid {
        name: "remote.storage.enable".into(),
        value: "true".into(),
        expected: "Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage.",
    })
}

fn compaction_lags_are_ordered(values: &Values) -> Result<(), TopicConfigError> {
    let min = values.long("min.compaction.lag.ms")?;
    let max = values.long("max.compaction.lag.ms")?;
    if min <= max {
        return Ok(());
    }
    Err(TopicConfigError::Conflict(format!(
        "conflict topic config setting min.compaction.lag.ms ({min}) > max.compaction.lag.ms ({max})"
    )))
}

fn compression(values: &Values) -> Result<TopicCompression, TopicConfigError> {
    Ok(match values.text("compression.type").trim() {
        "producer" => TopicCompression::Producer,
        "uncompressed" => TopicCompression::Codec(0, None),
        "gzip" => {
            let level = values.int("compression.gzip.level")?;
            TopicCompression::Codec(1, (level != -1).then_some(level))
        }
        "snappy" => TopicCompression::Codec(2, None),
        "lz4" => TopicCompression::Codec(3, Some(values.int("compression.lz4.level")?)),
        "zstd" => TopicCompression::Codec(4, Some(values.int("compression.zstd.level")?)),
        _ => return Err(values.refusal("compression.type")),
    })
}

fn timestamp_type(values: &Values) -> Result<TimestampType, TopicConfigError> {
    match values.text("message.timestamp.type").trim() {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => Err(values.refusal("message.timestamp.type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_key_has_a_default() {
        let c = TopicConfig::defaults_from(&BrokerConfig::default()).unwrap();
        for k in TOPIC_CONFIG_KEYS {
            assert!(c.value(k.name).is_some(), "{}", k.name);
        }
        assert_eq!(c.segment_bytes, 1 << 30);
    }

    #[test]
    fn overrides_apply_and_bad_ones_are_named() {
        let b = BrokerConfig::default();
        let c = TopicConfig::with_overrides(
            &b,
            &o(&[
                ("segment.bytes", "1024"),
                ("message.timestamp.type", "LogAppendTime"),
            ]),
        )
        .unwrap();
        assert_eq!(c.segment_bytes, 1024);
        assert_eq!(c.message_timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(
            TopicConfig::with_overrides(&b, &o(&[("segment.bytez", "1")])),
            Err(TopicConfigError::Unknown("segment.bytez".into()))
        );
        assert!(matches!(
            TopicConfig::with_overrides(&b, &o(&[("segment.bytes", "10")])),
            Err(TopicConfigError::Invalid { .. })
        ));
        assert!(matches!(
            TopicConfig::with_overrides(&b, &o(&[("retention.ms", "soon")])),
            Err(TopicConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn cleanup_policies() {
        let b = BrokerConfig::default();
        let policy = |p: &str| {
            TopicConfig::with_overrides(&b, &o(&[("cleanup.policy", p)]))
                .map(|c| (c.cleanup_delete, c.cleanup_compact))
        };
        assert_eq!(policy("delete"), Ok((true, false)));
        assert_eq!(policy("compact"), Ok((false, true)));
        assert_eq!(policy("compact,delete"), Ok((true, true)));
        assert_eq!(policy("delete, compact"), Ok((true, true)));
        assert!(policy("compress").is_err());
        assert!(policy("compact,").is_err());
        assert!(matches!(
            TopicConfig::with_overrides(&b, &o(&[("min.cleanable.dirty.ratio", "1.5")])),
            Err(TopicConfigError::Invalid { .. })
        ));
    }

    /// Every topic config Apache Kafka 4.3 defines (LogConfig.configNames()).
    const KAFKA_TOPIC_CONFIGS: &[&str] = &[
        "cleanup.policy",
        "compression.gzip.level",
        "compression.lz4.level",
        "compression.type",
        "compression.zstd.level",
        "delete.retention.ms",
        "file.delete.delay.ms",
        "flush.messages",
        "flush.ms",
        "follower.replication.throttled.replicas",
        "index.interval.bytes",
        "leader.replication.throttled.replicas",
        "local.retention.bytes",
        "local.retention.ms",
        "max.compaction.lag.ms",
        "max.message.bytes",
        "message.timestamp.after.max.ms",
        "message.timestamp.before.max.ms",
        "message.timestamp.type",
        "min.cleanable.dirty.ratio",
        "min.compaction.lag.ms",
        "min.insync.replicas",
        "preallocate",
        "remote.log.copy.disable",
        "remote.log.delete.on.disable",
        "remote.storage.enable",
        "retention.bytes",
        "retention.ms",
        "segment.bytes",
        "segment.index.bytes",
        "segment.jitter.ms",
        "segment.ms",
        "unclean.leader.election.enable",
    ];

    #[test]
    fn every_kafka_topic_config_is_known_with_kafkas_default() {
        let mut ours: Vec<&str> = TOPIC_CONFIG_KEYS.iter().map(|k| k.name).collect();
        ours.sort();
        assert_eq!(ours, KAFKA_TOPIC_CONFIGS);
        let c = TopicConfig::defaults_from(&BrokerConfig::default()).unwrap();
        for (name, default) in [
            ("compression.lz4.level", "9"),
            ("compression.zstd.level", "3"),
            ("compression.gzip.level", "-1"),
            ("file.delete.delay.ms", "60000"),
            ("message.timestamp.after.max.ms", "3600000"),
            ("local.retention.ms", "-2"),
            ("preallocate", "false"),
        ] {
            assert_eq!(c.value(name), Some(default), "{name}");
        }
        assert_eq!(c.compression, TopicCompression::Producer);
        assert_eq!(c.message_timestamp_after_max_ms, 3_600_000);
    }

    #[test]
    fn kafkas_validators_apply_to_the_new_keys() {
        let b = BrokerConfig::default();
        let ok = |pairs: &[(&str, &str)]| TopicConfig::with_overrides(&b, &o(pairs));
        let c = ok(&[
            ("compression.type", "zstd"),
            ("compression.zstd.level", "-5"),
        ])
        .unwrap();
        assert_eq!(c.compression, TopicCompression::Codec(4, Some(-5)));
        let c = ok(&[("compression.type", "gzip")]).unwrap();
        assert_eq!(c.compression, TopicCompression::Codec(1, None));
        assert_eq!(
            ok(&[("compression.type", "uncompressed")])
                .unwrap()
                .compression,
            TopicCompression::Codec(0, None)
        );
        for good in [
            ("file.delete.delay.ms", "0"),
            ("preallocate", "TRUE"),
            ("unclean.leader.election.enable", "false"),
            ("leader.replication.throttled.replicas", "0:1, 1:2"),
            ("follower.replication.throttled.replicas", "*"),
            ("retention.bytes", "-5"),
            ("local.retention.bytes", "-2"),
            ("message.timestamp.type", " LogAppendTime "),
            ("segment.jitter.ms", "10"),
        ] {
            assert!(ok(&[good]).is_ok(), "{good:?}");
        }
        for bad in [
            ("compression.type", "brotli"),
            ("compression.gzip.level", "0"),
            ("compression.gzip.level", "10"),
            ("compression.lz4.level", "18"),
            ("compression.zstd.level", "23"),
            ("remote.storage.enable", "true"),
            ("preallocate", "yes"),
            ("leader.replication.throttled.replicas", "0-1"),
            ("local.retention.ms", "-3"),
            ("message.timestamp.before.max.ms", "-1"),
            ("file.delete.delay.ms", "-1"),
        ] {
            assert!(ok(&[bad]).is_err(), "{bad:?}");
        }
        assert!(matches!(
            ok(&[
                ("min.compaction.lag.ms", "10"),
                ("max.compaction.lag.ms", "5")
            ]),
            Err(TopicConfigError::Conflict(_))
        ));
    }
}
