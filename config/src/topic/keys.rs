//! Every topic key, defined once: name, broker synonym, type, default, check and documentation.
//!
//! [`TOPIC_CONFIG_KEYS`] is the one list of the topic settings. The defaults a topic gets, the
//! check of every value and what DescribeConfigs lists (names, synonyms, types, documentation)
//! come from it. A key's default is the value of the broker key it is a synonym of, or Kafka's own
//! where Quipu has no such broker key; its check is data ([`TopicCheck`]) carrying Kafka's message.
//!
//! Invariant: a value a key's check refuses is an error naming the key, the value and what the key
//! accepts, never a silent default; a key's broker default names a broker key that exists.

use super::TopicConfigError;
use crate::{broker_key, BrokerConfig};
use TopicCheck::{AtLeast, Between, Flag, OneOf, Ratio, Test};
use TopicDefault::Broker;

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

/// Where a topic key's default comes from.
#[derive(Debug, Clone, Copy)]
pub enum TopicDefault {
    /// The value of this broker key, which is also the topic key's synonym.
    Broker(&'static str),
    /// Kafka's default. `synonym` is Kafka's broker key for it (empty when Kafka has none), one
    /// Quipu does not define.
    Kafka {
        synonym: &'static str,
        value: &'static str,
    },
}

/// What a topic key accepts, with the message a refusal gives.
#[derive(Debug, Clone, Copy)]
pub enum TopicCheck {
    /// A whole number from this up to the largest of the key's type (`Int` or `Long`).
    AtLeast(i64, &'static str),
    /// A whole number in this range, both ends included.
    Between(i64, i64, &'static str),
    /// A double from 0 to 1.
    Ratio(&'static str),
    /// `true` or `false`, in any case.
    Flag,
    /// One of these words, spaces around it aside.
    OneOf(&'static [&'static str], &'static str),
    /// Text this function accepts.
    Test(fn(&str) -> bool, &'static str),
}

impl TopicCheck {
    /// What the key accepts, as a refusal says it.
    pub fn expected(self) -> &'static str {
        match self {
            TopicCheck::AtLeast(_, expected)
            | TopicCheck::Between(_, _, expected)
            | TopicCheck::Ratio(expected)
            | TopicCheck::OneOf(_, expected)
            | TopicCheck::Test(_, expected) => expected,
            TopicCheck::Flag => "Expected value to be either true or false",
        }
    }

    fn accepts(self, config_type: ConfigType, text: &str) -> bool {
        let whole = parse_whole(text);
        match self {
            TopicCheck::AtLeast(low, _) => {
                whole.is_some_and(|n| low <= n && n <= largest_whole(config_type))
            }
            TopicCheck::Between(low, high, _) => whole.is_some_and(|n| (low..=high).contains(&n)),
            TopicCheck::Ratio(_) => text
                .trim()
                .parse::<f64>()
                .is_ok_and(|r| (0.0..=1.0).contains(&r)),
            TopicCheck::Flag => parse_flag(text).is_some(),
            TopicCheck::OneOf(words, _) => words.contains(&text.trim()),
            TopicCheck::Test(test, _) => test(text),
        }
    }
}

fn largest_whole(config_type: ConfigType) -> i64 {
    match config_type {
        ConfigType::Int => i32::MAX.into(),
        ConfigType::Short => i16::MAX.into(),
        _ => i64::MAX,
    }
}

pub(super) fn parse_whole(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// `true` or `false` in any case, as Kafka reads a boolean.
pub(super) fn parse_flag(text: &str) -> Option<bool> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// One topic setting: its name, the broker setting that gives its default (empty when Kafka has
/// none), its type and text, where its default comes from and what it accepts.
#[derive(Debug)]
pub struct TopicConfigKey {
    pub name: &'static str,
    pub broker_synonym: &'static str,
    pub config_type: ConfigType,
    pub documentation: &'static str,
    pub default: TopicDefault,
    pub check: TopicCheck,
}

impl TopicConfigKey {
    /// The key's default under these broker settings, as text.
    pub fn default_value(&self, broker: &BrokerConfig) -> String {
        match self.default {
            // A missing broker key gives "", which every check of a broker default refuses;
            // a test checks that each one exists.
            TopicDefault::Broker(name) => broker_key(name)
                .map(|k| k.value(broker))
                .unwrap_or_default(),
            TopicDefault::Kafka { value, .. } => value.to_string(),
        }
    }

    /// Refuses `text` when the key's check does.
    pub(super) fn check_value(&self, text: &str) -> Result<(), TopicConfigError> {
        if self.check.accepts(self.config_type, text) {
            Ok(())
        } else {
            Err(self.refusal(text))
        }
    }

    /// The error for `text`, a value this key does not accept.
    pub(super) fn refusal(&self, text: &str) -> TopicConfigError {
        TopicConfigError::Invalid {
            name: self.name.into(),
            value: text.into(),
            expected: self.check.expected(),
        }
    }
}

/// The topic key of this name.
pub fn topic_key(name: &str) -> Option<&'static TopicConfigKey> {
    TOPIC_CONFIG_KEYS.iter().find(|k| k.name == name)
}

const fn key(
    name: &'static str,
    config_type: ConfigType,
    default: TopicDefault,
    check: TopicCheck,
    documentation: &'static str,
) -> TopicConfigKey {
    let broker_synonym = match default {
        TopicDefault::Broker(synonym) | TopicDefault::Kafka { synonym, .. } => synonym,
    };
    TopicConfigKey {
        name,
        broker_synonym,
        config_type,
        documentation,
        default,
        check,
    }
}

const fn kafka(synonym: &'static str, value: &'static str) -> TopicDefault {
    TopicDefault::Kafka { synonym, value }
}

const AT_LEAST_0: TopicCheck = AtLeast(0, "Value must be at least 0");
const AT_LEAST_MINUS_2: TopicCheck = AtLeast(-2, "Value must be at least -2");
const THROTTLED_REPLICAS: TopicCheck = Test(
    throttled_replicas_valid,
    "must be the literal '*' or a list of replicas in the following format: \
     [partitionId]:[brokerId],[partitionId]:[brokerId],...",
);

/// The topic settings the broker knows, in the order DescribeConfigs lists them.
pub const TOPIC_CONFIG_KEYS: &[TopicConfigKey] = &[
    key(
        "cleanup.policy",
        ConfigType::List,
        Broker("log.cleanup.policy"),
        Test(cleanup_policy_valid, "delete, compact, or compact,delete"),
        "delete (retention deletes old segments), compact (the cleaner keeps the last record per key), or both",
    ),
    key(
        "compression.type",
        ConfigType::String,
        kafka("compression.type", "producer"),
        OneOf(
            &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
            "String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer",
        ),
        "producer keeps batches as the producer compressed them; uncompressed, gzip, snappy, lz4 or zstd recompresses every batch that arrives otherwise",
    ),
    key(
        "max.message.bytes",
        ConfigType::Int,
        Broker("message.max.bytes"),
        AtLeast(0, "an int >= 0"),
        "largest record batch accepted",
    ),
    key(
        "message.timestamp.type",
        ConfigType::String,
        Broker("log.message.timestamp.type"),
        OneOf(&["CreateTime", "LogAppendTime"], "CreateTime or LogAppendTime"),
        "CreateTime or LogAppendTime",
    ),
    key(
        "min.insync.replicas",
        ConfigType::Int,
        Broker("min.insync.replicas"),
        AtLeast(1, "an int >= 1"),
        "replicas that must hold a write for acks=all",
    ),
    key(
        "retention.bytes",
        ConfigType::Long,
        Broker("log.retention.bytes"),
        // Kafka has no floor: any negative size means no limit.
        AtLeast(i64::MIN, "a long"),
        "size a partition may keep, -1 for no limit",
    ),
    key(
        "retention.ms",
        ConfigType::Long,
        Broker("log.retention.ms"),
        AtLeast(-1, "a long >= -1"),
        "time a segment is kept, -1 for no limit",
    ),
    key(
        "segment.bytes",
        ConfigType::Int,
        Broker("log.segment.bytes"),
        // Kafka's floor: the smallest batch overhead.
        AtLeast(14, "an int >= 14"),
        "size at which a segment rolls",
    ),
    key(
        "segment.index.bytes",
        ConfigType::Int,
        Broker("log.index.size.max.bytes"),
        AtLeast(8, "an int >= 8"),
        "size of a segment's offset index",
    ),
    key(
        "segment.ms",
        ConfigType::Long,
        Broker("log.roll.ms"),
        AtLeast(1, "a long >= 1"),
        "age at which a segment rolls",
    ),
    key(
        "index.interval.bytes",
        ConfigType::Int,
        Broker("log.index.interval.bytes"),
        AtLeast(0, "an int >= 0"),
        "bytes between offset index entries",
    ),
    key(
        "delete.retention.ms",
        ConfigType::Long,
        Broker("log.cleaner.delete.retention.ms"),
        AtLeast(0, "a long >= 0"),
        "how long a tombstone stays after the cleaner first keeps it",
    ),
    key(
        "min.cleanable.dirty.ratio",
        ConfigType::Double,
        Broker("log.cleaner.min.cleanable.ratio"),
        Ratio("a double from 0 to 1"),
        "share of uncleaned bytes at which a compacted log is cleaned",
    ),
    key(
        "min.compaction.lag.ms",
        ConfigType::Long,
        Broker("log.cleaner.min.compaction.lag.ms"),
        AtLeast(0, "a long >= 0"),
        "records younger than this are not compacted",
    ),
    key(
        "max.compaction.lag.ms",
        ConfigType::Long,
        Broker("log.cleaner.max.compaction.lag.ms"),
        AtLeast(1, "a long >= 1"),
        "a record left uncompacted this long makes its log cleanable",
    ),
    key(
        "flush.messages",
        ConfigType::Long,
        Broker("log.flush.interval.messages"),
        AtLeast(1, "a long >= 1"),
        "fsync after this many messages; 1 fsyncs before every acknowledgement",
    ),
    key(
        "flush.ms",
        ConfigType::Long,
        Broker("log.flush.interval.ms"),
        AtLeast(0, "a long >= 0"),
        "fsync when unflushed messages are this old",
    ),
    key(
        "compression.gzip.level",
        ConfigType::Int,
        kafka("compression.gzip.level", "-1"),
        Test(
            gzip_level_valid,
            "Value must be between 1 and 9 or equal to -1",
        ),
        "gzip level for recompression: 1 to 9, or -1 for the codec's default",
    ),
    key(
        "compression.lz4.level",
        ConfigType::Int,
        kafka("compression.lz4.level", "9"),
        Between(1, 17, "Value must be between 1 and 17"),
        "lz4 level for recompression, 1 to 17",
    ),
    key(
        "compression.zstd.level",
        ConfigType::Int,
        kafka("compression.zstd.level", "3"),
        Between(-131_072, 22, "Value must be between -131072 and 22"),
        "zstd level for recompression, -131072 to 22",
    ),
    key(
        "message.timestamp.before.max.ms",
        ConfigType::Long,
        kafka("log.message.timestamp.before.max.ms", "9223372036854775807"),
        AT_LEAST_0,
        "with CreateTime, a record older than this (by its timestamp) is refused with INVALID_TIMESTAMP",
    ),
    key(
        "message.timestamp.after.max.ms",
        ConfigType::Long,
        kafka("log.message.timestamp.after.max.ms", "3600000"),
        AT_LEAST_0,
        "with CreateTime, a record this far in the future (by its timestamp) is refused with INVALID_TIMESTAMP",
    ),
    key(
        "segment.jitter.ms",
        ConfigType::Long,
        kafka("log.roll.jitter.ms", "0"),
        AT_LEAST_0,
        "no effect: segments roll at segment.ms exactly (Kafka subtracts a random jitter up to this)",
    ),
    key(
        "file.delete.delay.ms",
        ConfigType::Long,
        kafka("log.segment.delete.delay.ms", "60000"),
        AT_LEAST_0,
        "no effect: deleted segments are unlinked at once, which is safe because readers keep their mappings",
    ),
    key(
        "preallocate",
        ConfigType::Boolean,
        kafka("log.preallocate", "false"),
        Flag,
        "no effect: every active segment is sized to segment.bytes when it is created",
    ),
    key(
        "unclean.leader.election.enable",
        ConfigType::Boolean,
        Broker("unclean.leader.election.enable"),
        Flag,
        "a leader may be elected from outside the in-sync replicas when none is left",
    ),
    key(
        "leader.replication.throttled.replicas",
        ConfigType::List,
        kafka("", ""),
        THROTTLED_REPLICAS,
        "no effect yet: there is no replication to throttle",
    ),
    key(
        "follower.replication.throttled.replicas",
        ConfigType::List,
        kafka("", ""),
        THROTTLED_REPLICAS,
        "no effect yet: there is no replication to throttle",
    ),
    key(
        "local.retention.ms",
        ConfigType::Long,
        kafka("log.local.retention.ms", "-2"),
        AT_LEAST_MINUS_2,
        "no effect: there is no tiered storage (-2 means retention.ms)",
    ),
    key(
        "local.retention.bytes",
        ConfigType::Long,
        kafka("log.local.retention.bytes", "-2"),
        AT_LEAST_MINUS_2,
        "no effect: there is no tiered storage (-2 means retention.bytes)",
    ),
    key(
        "remote.storage.enable",
        ConfigType::Boolean,
        kafka("", "false"),
        // `true` passes this check and is refused after it, with Kafka's message.
        Flag,
        "tiered storage is not available: true is refused, as by a Kafka broker without it",
    ),
    key(
        "remote.log.copy.disable",
        ConfigType::Boolean,
        kafka("", "false"),
        Flag,
        "no effect: there is no tiered storage",
    ),
    key(
        "remote.log.delete.on.disable",
        ConfigType::Boolean,
        kafka("", "false"),
        Flag,
        "no effect: there is no tiered storage",
    ),
];

/// `cleanup.policy` read: (delete, compact). Empty holds neither; a blank part is refused.
pub(super) fn cleanup_policy(text: &str) -> Option<(bool, bool)> {
    let (mut delete, mut compact) = (false, false);
    if text.trim().is_empty() {
        return Some((delete, compact));
    }
    for part in text.split(',').map(str::trim) {
        match part {
            "delete" => delete = true,
            "compact" => compact = true,
            _ => return None,
        }
    }
    Some((delete, compact))
}

fn cleanup_policy_valid(text: &str) -> bool {
    cleanup_policy(text).is_some()
}

/// Kafka's gzip level: 1 to 9, or -1 for the codec's default.
fn gzip_level_valid(text: &str) -> bool {
    parse_whole(text).is_some_and(|n| n == -1 || (1..=9).contains(&n))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_broker_default_names_a_broker_key() {
        for key in TOPIC_CONFIG_KEYS {
            if let TopicDefault::Broker(name) = key.default {
                assert!(
                    broker_key(name).is_some(),
                    "{}: no broker key {name}",
                    key.name
                );
            }
        }
    }

    #[test]
    fn a_kafka_default_synonym_is_no_quipu_broker_key() {
        for key in TOPIC_CONFIG_KEYS {
            if let TopicDefault::Kafka { synonym, .. } = key.default {
                assert!(
                    broker_key(synonym).is_none(),
                    "{}: {synonym} is a broker key; take the default from it",
                    key.name
                );
            }
        }
    }
}
