//! Per-topic settings under Kafka's topic config names (`retention.ms`, `segment.bytes`, …).
//!
//! A topic's effective config is the broker's defaults with the topic's own overrides on top; only
//! the overrides are stored with the topic, so a changed broker default reaches every topic that did
//! not set its own. Only settings the broker acts on are accepted: an unknown name or a value out of
//! range is refused with a message naming it (Kafka's INVALID_CONFIG).

use std::collections::BTreeMap;

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
}

/// Kafka's config types, as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
    Class = 8,
    Password = 9,
}

/// One topic setting: its name, the broker setting that gives its default, its type and text.
#[derive(Debug)]
pub struct TopicConfigKey {
    pub name: &'static str,
    pub broker_synonym: &'static str,
    pub config_type: ConfigType,
    pub documentation: &'static str,
}

/// The topic settings the broker knows, in the order DescribeConfigs lists them.
pub const TOPIC_CONFIG_KEYS: &[TopicConfigKey] = &[
    key(
        "cleanup.policy",
        "log.cleanup.policy",
        ConfigType::List,
        "delete (retention deletes old segments), compact (the cleaner keeps the last record per key), or both",
    ),
    key(
        "compression.type",
        "compression.type",
        ConfigType::String,
        "producer: batches are kept as the producer compressed them",
    ),
    key(
        "max.message.bytes",
        "message.max.bytes",
        ConfigType::Int,
        "largest record batch accepted",
    ),
    key(
        "message.timestamp.type",
        "log.message.timestamp.type",
        ConfigType::String,
        "CreateTime or LogAppendTime",
    ),
    key(
        "min.insync.replicas",
        "min.insync.replicas",
        ConfigType::Int,
        "replicas that must hold a write for acks=all",
    ),
    key(
        "retention.bytes",
        "log.retention.bytes",
        ConfigType::Long,
        "size a partition may keep, -1 for no limit",
    ),
    key(
        "retention.ms",
        "log.retention.ms",
        ConfigType::Long,
        "time a segment is kept, -1 for no limit",
    ),
    key(
        "segment.bytes",
        "log.segment.bytes",
        ConfigType::Int,
        "size at which a segment rolls",
    ),
    key(
        "segment.index.bytes",
        "log.index.size.max.bytes",
        ConfigType::Int,
        "size of a segment's offset index",
    ),
    key(
        "segment.ms",
        "log.roll.ms",
        ConfigType::Long,
        "age at which a segment rolls",
    ),
    key(
        "index.interval.bytes",
        "log.index.interval.bytes",
        ConfigType::Int,
        "bytes between offset index entries",
    ),
    key(
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        ConfigType::Long,
        "how long a tombstone stays after the cleaner first keeps it",
    ),
    key(
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
        ConfigType::Double,
        "share of uncleaned bytes at which a compacted log is cleaned",
    ),
    key(
        "min.compaction.lag.ms",
        "log.cleaner.min.compaction.lag.ms",
        ConfigType::Long,
        "records younger than this are not compacted",
    ),
    key(
        "max.compaction.lag.ms",
        "log.cleaner.max.compaction.lag.ms",
        ConfigType::Long,
        "a record left uncompacted this long makes its log cleanable",
    ),
    key(
        "flush.messages",
        "log.flush.interval.messages",
        ConfigType::Long,
        "fsync after this many messages; 1 fsyncs before every acknowledgement",
    ),
    key(
        "flush.ms",
        "log.flush.interval.ms",
        ConfigType::Long,
        "fsync when unflushed messages are this old",
    ),
];

const fn key(
    name: &'static str,
    broker_synonym: &'static str,
    config_type: ConfigType,
    documentation: &'static str,
) -> TopicConfigKey {
    TopicConfigKey {
        name,
        broker_synonym,
        config_type,
        documentation,
    }
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
        let mut values = defaults.clone();
        for (name, value) in overrides {
            let key = TOPIC_CONFIG_KEYS
                .iter()
                .find(|k| k.name == name)
                .ok_or_else(|| TopicConfigError::Unknown(name.clone()))?;
            values.insert(key.name, value.clone());
        }
        let get = |name: &'static str| values.get(name).cloned().unwrap_or_default();
        let int = |name: &'static str,
                   min: i64,
                   expected: &'static str|
         -> Result<i64, TopicConfigError> {
            let v = get(name);
            match v.trim().parse::<i64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(TopicConfigError::Invalid {
                    name: name.into(),
                    value: v,
                    expected,
                }),
            }
        };
        let i32_of = |name: &'static str,
                      min: i64,
                      expected: &'static str|
         -> Result<i32, TopicConfigError> {
            let n = int(name, min, expected)?;
            i32::try_from(n).map_err(|_| TopicConfigError::Invalid {
                name: name.into(),
                value: n.to_string(),
                expected,
            })
        };
        let policy = get("cleanup.policy");
        let (mut cleanup_delete, mut cleanup_compact) = (false, false);
        for part in policy.split(',').map(str::trim) {
            match part {
                "delete" => cleanup_delete = true,
                "compact" => cleanup_compact = true,
                "" if policy.trim().is_empty() => {}
                _ => {
                    return Err(TopicConfigError::Invalid {
                        name: "cleanup.policy".into(),
                        value: policy.clone(),
                        expected: "delete, compact, or compact,delete",
                    })
                }
            }
        }
        let ratio_text = get("min.cleanable.dirty.ratio");
        let min_cleanable_dirty_ratio = match ratio_text.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => {
                return Err(TopicConfigError::Invalid {
                    name: "min.cleanable.dirty.ratio".into(),
                    value: ratio_text,
                    expected: "a double from 0 to 1",
                })
            }
        };
        match get("compression.type").as_str() {
            "producer" => {}
            other => {
                return Err(TopicConfigError::Invalid {
                    name: "compression.type".into(),
                    value: other.into(),
                    expected: "producer (recompression is not implemented yet)",
                })
            }
        }
        let message_timestamp_type = match get("message.timestamp.type").as_str() {
            "CreateTime" => TimestampType::CreateTime,
            "LogAppendTime" => TimestampType::LogAppendTime,
            other => {
                return Err(TopicConfigError::Invalid {
                    name: "message.timestamp.type".into(),
                    value: other.into(),
                    expected: "CreateTime or LogAppendTime",
                })
            }
        };
        Ok(Self {
            max_message_bytes: i32_of("max.message.bytes", 0, "an int >= 0")?,
            message_timestamp_type,
            min_insync_replicas: i32_of("min.insync.replicas", 1, "an int >= 1")?,
            retention_bytes: int("retention.bytes", -1, "a long >= -1")?,
            retention_ms: int("retention.ms", -1, "a long >= -1")?,
            // Kafka's floor: the smallest batch overhead.
            segment_bytes: i32_of("segment.bytes", 14, "an int >= 14")?,
            segment_index_bytes: i32_of("segment.index.bytes", 8, "an int >= 8")?,
            segment_ms: int("segment.ms", 1, "a long >= 1")?,
            index_interval_bytes: i32_of("index.interval.bytes", 0, "an int >= 0")?,
            flush_messages: int("flush.messages", 1, "a long >= 1")?,
            flush_ms: int("flush.ms", 0, "a long >= 0")?,
            cleanup_delete,
            cleanup_compact,
            delete_retention_ms: int("delete.retention.ms", 0, "a long >= 0")?,
            min_cleanable_dirty_ratio,
            min_compaction_lag_ms: int("min.compaction.lag.ms", 0, "a long >= 0")?,
            max_compaction_lag_ms: int("max.compaction.lag.ms", 1, "a long >= 1")?,
            values,
        })
    }

    /// The effective value of a setting, as text.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|s| s.as_str())
    }
}

fn broker_defaults(b: &BrokerConfig) -> BTreeMap<&'static str, String> {
    [
        ("cleanup.policy", b.log_cleanup_policy.clone()),
        ("compression.type", "producer".to_string()),
        ("max.message.bytes", b.message_max_bytes.to_string()),
        (
            "message.timestamp.type",
            b.log_message_timestamp_type.clone(),
        ),
        ("min.insync.replicas", b.min_insync_replicas.to_string()),
        ("retention.bytes", b.log_retention_bytes.to_string()),
        ("retention.ms", b.log_retention_ms.to_string()),
        ("segment.bytes", b.log_segment_bytes.to_string()),
        (
            "segment.index.bytes",
            b.log_index_size_max_bytes.to_string(),
        ),
        ("segment.ms", b.log_roll_ms.to_string()),
        (
            "index.interval.bytes",
            b.log_index_interval_bytes.to_string(),
        ),
        ("flush.messages", b.log_flush_interval_messages.to_string()),
        ("flush.ms", b.log_flush_interval_ms.to_string()),
        (
            "delete.retention.ms",
            b.log_cleaner_delete_retention_ms.to_string(),
        ),
        (
            "min.cleanable.dirty.ratio",
            b.log_cleaner_min_cleanable_ratio.to_string(),
        ),
        (
            "min.compaction.lag.ms",
            b.log_cleaner_min_compaction_lag_ms.to_string(),
        ),
        (
            "max.compaction.lag.ms",
            b.log_cleaner_max_compaction_lag_ms.to_string(),
        ),
    ]
    .into_iter()
    .collect()
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
}
