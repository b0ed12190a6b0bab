//! What an application hands the producer: a [`ProducerRecord`], its topic, optional partition,
//! key, value, headers and CreateTime.
//!
//! Invariant: a record says nothing of how it is batched; `None` fields are filled at send time
//! (the partition from the key or the sticky partitioner, the timestamp from the clock).

use bytes::Bytes;

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Topic to write to.
    pub topic: String,
    /// `None`: chosen from the key (murmur2) or, without a key, the sticky partition.
    pub partition: Option<i32>,
    /// The key: it picks the partition (murmur2) and is what compaction keeps the last of.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// CreateTime; `None`: now.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }
    /// The same record with `key`.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// The same record for partition `partition`.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
    /// The same record with one more header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }
    /// The same record with its CreateTime set.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}
