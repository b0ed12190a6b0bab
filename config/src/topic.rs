//! Per-topic settings under Kafka's topic config names (`retention.ms`, `segment.bytes`, …).
//!
//! A topic's effective config is the broker's defaults with the topic's own overrides on top; only
//! the overrides are stored with the topic, so a changed broker default reaches every topic that did
//! not set its own. Every topic setting Apache Kafka 4.3 defines is accepted, with Kafka's
//! validation: an unknown name or a value out of range is refused with a message naming it
//! (Kafka's INVALID_CONFIG). A few have no effect on a single broker without tiered storage; each
//! key's documentation (which DescribeConfigs returns) says which and why.

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
    #[error("{0}")]
    Conflict(String),
}

/// Kafka's ThrottledReplicaListValidator: `*`, or `partition:broker` pairs, comma-separated.
fn throttled_replicas_valid(value: &str) -> bool {
    let value = value.trim();
    if value.is_empty() || value == "*" {
        return true;
    }
    value.split(',').map(str::trim).all(|pair| {
        pair.split_once(':').is_some_and(|(p, b)| {
            !p.is_empty()
                && !b.is_empty()
                && p.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
    })
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

/// One topic setting: its name, the broker setting that gives its default (empty when Kafka has
/// none), its type and text.
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
        "producer keeps batches as the producer compressed them; uncompressed, gzip, snappy, lz4 or zstd recompresses every batch that arrives otherwise",
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
    key(
        "compression.gzip.level",
        "compression.gzip.level",
        ConfigType::Int,
        "gzip level for recompression: 1 to 9, or -1 for the codec's default",
    ),
    key(
        "compression.lz4.level",
        "compression.lz4.level",
        ConfigType::Int,
        "lz4 level for recompression, 1 to 17",
    ),
    key(
        "compression.zstd.level",
        "compression.zstd.level",
        ConfigType::Int,
        "zstd level for recompression, -131072 to 22",
    ),
    key(
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
        ConfigType::Long,
        "with CreateTime, a record older than this (by its timestamp) is refused with INVALID_TIMESTAMP",
    ),
    key(
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
        ConfigType::Long,
        "with CreateTime, a record this far in the future (by its timestamp) is refused with INVALID_TIMESTAMP",
    ),
    key(
        "segment.jitter.ms",
        "log.roll.jitter.ms",
        ConfigType::Long,
        "no effect: segments roll at segment.ms exactly (Kafka subtracts a random jitter up to this)",
    ),
    key(
        "file.delete.delay.ms",
        "log.segment.delete.delay.ms",
        ConfigType::Long,
        "no effect: deleted segments are unlinked at once, which is safe because readers keep their mappings",
    ),
    key(
        "preallocate",
        "log.preallocate",
        ConfigType::Boolean,
        "no effect: every active segment is sized to segment.bytes when it is created",
    ),
    key(
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        ConfigType::Boolean,
        "no effect yet: a partition has one replica",
    ),
    key(
        "leader.replication.throttled.replicas",
        "",
        ConfigType::List,
        "no effect yet: there is no replication to throttle",
    ),
    key(
        "follower.replication.throttled.replicas",
        "",
        ConfigType::List,
        "no effect yet: there is no replication to throttle",
    ),
    key(
        "local.retention.ms",
        "log.local.retention.ms",
        ConfigType::Long,
        "no effect: there is no tiered storage (-2 means retention.ms)",
    ),
    key(
        "local.retention.bytes",
        "log.local.retention.bytes",
        ConfigType::Long,
        "no effect: there is no tiered storage (-2 means retention.bytes)",
    ),
    key(
        "remote.storage.enable",
        "",
        ConfigType::Boolean,
        "tiered storage is not available: true is refused, as by a Kafka broker without it",
    ),
    key(
        "remote.log.copy.disable",
        "",
        ConfigType::Boolean,
        "no effect: there is no tiered storage",
    ),
    key(
        "remote.log.delete.on.disable",
        "",
        ConfigType::Boolean,
        "no effect: there is no tiered storage",
    ),
];

/// The topic key of this name.
pub fn topic_key(name: &str) -> Option<&'static TopicConfigKey> {
    TOPIC_CONFIG_KEYS.iter().find(|k| k.name == name)
}

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
        let mut values = defaults.clone();
        for (name, value) in overrides {
            let key = topic_key(name).ok_or_else(|| TopicConfigError::Unknown(name.clone()))?;
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
        let level = |name: &'static str, range: std::ops::RangeInclusive<i64>, expected| {
            let n = int(name, i64::MIN, expected)?;
            if range.contains(&n) {
                Ok(n as i32)
            } else {
                Err(TopicConfigError::Invalid {
                    name: name.into(),
                    value: n.to_string(),
                    expected,
                })
            }
        };
        let gzip_level = level(
            "compression.gzip.level",
            -1..=9,
            "Value must be between 1 and 9 or equal to -1",
        )?;
        if gzip_level == 0 {
            return Err(TopicConfigError::Invalid {
                name: "compression.gzip.level".into(),
                value: "0".into(),
                expected: "Value must be between 1 and 9 or equal to -1",
            });
        }
        let lz4_level = level(
            "compression.lz4.level",
            1..=17,
            "Value must be between 1 and 17",
        )?;
        let zstd_level = level(
            "compression.zstd.level",
            -131_072..=22,
            "Value must be between -131072 and 22",
        )?;
        let compression = match get("compression.type").trim() {
            "producer" => TopicCompression::Producer,
            "uncompressed" => TopicCompression::Codec(0, None),
            "gzip" => TopicCompression::Codec(1, (gzip_level != -1).then_some(gzip_level)),
            "snappy" => TopicCompression::Codec(2, None),
            "lz4" => TopicCompression::Codec(3, Some(lz4_level)),
            "zstd" => TopicCompression::Codec(4, Some(zstd_level)),
            other => {
                return Err(TopicConfigError::Invalid {
                    name: "compression.type".into(),
                    value: other.into(),
                    expected:
                        "String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer",
                })
            }
        };
        for name in [
            "preallocate",
            "unclean.leader.election.enable",
            "remote.storage.enable",
            "remote.log.copy.disable",
            "remote.log.delete.on.disable",
        ] {
            let v = get(name);
            if !v.trim().eq_ignore_ascii_case("true") && !v.trim().eq_ignore_ascii_case("false") {
                return Err(TopicConfigError::Invalid {
                    name: name.into(),
                    value: v,
                    expected: "Expected value to be either true or false",
                });
            }
        }
        if get("remote.storage.enable")
            .trim()
            .eq_ignore_ascii_case("true")
        {
            return Err(TopicConfigError::Invalid {
                name: "remote.storage.enable".into(),
                value: "true".into(),
                expected: "Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage.",
            });
        }
        for name in [
            "leader.replication.throttled.replicas",
            "follower.replication.throttled.replicas",
        ] {
            let v = get(name);
            if !throttled_replicas_valid(&v) {
                return Err(TopicConfigError::Invalid {
                    name: name.into(),
                    value: v,
                    expected: "must be the literal '*' or a list of replicas in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],...",
                });
            }
        }
        int("segment.jitter.ms", 0, "Value must be at least 0")?;
        int("file.delete.delay.ms", 0, "Value must be at least 0")?;
        int("local.retention.ms", -2, "Value must be at least -2")?;
        int("local.retention.bytes", -2, "Value must be at least -2")?;
        let message_timestamp_type = match get("message.timestamp.type").trim() {
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
        let min_compaction_lag_ms = int("min.compaction.lag.ms", 0, "a long >= 0")?;
        let max_compaction_lag_ms = int("max.compaction.lag.ms", 1, "a long >= 1")?;
        if min_compaction_lag_ms > max_compaction_lag_ms {
            return Err(TopicConfigError::Conflict(format!(
                "conflict topic config setting min.compaction.lag.ms ({min_compaction_lag_ms}) > max.compaction.lag.ms ({max_compaction_lag_ms})"
            )));
        }
        Ok(Self {
            max_message_bytes: i32_of("max.message.bytes", 0, "an int >= 0")?,
            message_timestamp_type,
            min_insync_replicas: i32_of("min.insync.replicas", 1, "an int >= 1")?,
            // Kafka has no floor: any negative size means no limit.
            retention_bytes: int("retention.bytes", i64::MIN, "a long")?,
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
            min_compaction_lag_ms,
            max_compaction_lag_ms,
            compression,
            message_timestamp_before_max_ms: int(
                "message.timestamp.before.max.ms",
                0,
                "Value must be at least 0",
            )?,
            message_timestamp_after_max_ms: int(
                "message.timestamp.after.max.ms",
                0,
                "Value must be at least 0",
            )?,
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
        // Kafka's defaults for settings this broker has no broker-level key for.
        ("compression.gzip.level", "-1".to_string()),
        ("compression.lz4.level", "9".to_string()),
        ("compression.zstd.level", "3".to_string()),
        ("message.timestamp.before.max.ms", i64::MAX.to_string()),
        ("message.timestamp.after.max.ms", "3600000".to_string()),
        ("segment.jitter.ms", "0".to_string()),
        ("file.delete.delay.ms", "60000".to_string()),
        ("preallocate", "false".to_string()),
        ("unclean.leader.election.enable", "false".to_string()),
        ("leader.replication.throttled.replicas", String::new()),
        ("follower.replication.throttled.replicas", String::new()),
        ("local.retention.ms", "-2".to_string()),
        ("local.retention.bytes", "-2".to_string()),
        ("remote.storage.enable", "false".to_string()),
        ("remote.log.copy.disable", "false".to_string()),
        ("remote.log.delete.on.disable", "false".to_string()),
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
