//! The consumer protocol's messages, carried as opaque bytes in JoinGroup and SyncGroup (and
//! DescribeGroups): a member's subscription (its topics, the partitions it owns and their
//! generation) and a member's assignment. Each is an i16 version, then the message at that
//! version.
//!
//! Invariant: what `encode_subscription` and `encode_assignment` write, `decode_subscription`
//! and `decode_assignment` read back unchanged; a version newer than ours is read as our newest
//! (the consumer protocol only appends fields), so Java and librdkafka members interoperate.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quipu_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use quipu_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedPartitions;
use quipu_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use quipu_protocol::{Decodable, Encodable, Message, StrBytes};

use crate::assignor::MemberSubscription;
use crate::error::{Error, Result};
use crate::topic_partition::TopicPartition;

/// Subscription version sent: v3, as the Java client sends, carries the partitions owned and
/// their generation, which let a cooperative leader keep them where they are.
const SUBSCRIPTION_VERSION: i16 = 3;
/// Assignment version sent.
const ASSIGNMENT_VERSION: i16 = 0;

/// This member's subscription: `topics`, and the partitions it owns since `owned_generation`.
pub(super) fn encode_subscription(
    topics: &[String],
    owned: &[TopicPartition],
    owned_generation: i32,
) -> Result<Bytes> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in owned {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    encode_versioned(
        &ConsumerProtocolSubscription::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| StrBytes::from_string(t.clone()))
                    .collect(),
            )
            .with_owned_partitions(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OwnedPartitions::default()
                            .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(ps)
                    })
                    .collect(),
            )
            .with_generation_id(owned_generation),
        SUBSCRIPTION_VERSION,
    )
}

/// A member's subscription as the leader reads it from JoinGroup.
pub(super) fn decode_subscription(bytes: &Bytes) -> Result<MemberSubscription> {
    let sub: ConsumerProtocolSubscription = decode_versioned(bytes)?;
    Ok(MemberSubscription {
        topics: sub.topics.iter().map(|t| t.to_string()).collect(),
        owned: sub
            .owned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| TopicPartition::new(t.topic.0.as_str(), *p))
            })
            .collect(),
        generation: sub.generation_id,
    })
}

/// A member's assignment, as the leader hands it to SyncGroup.
pub(super) fn encode_assignment(partitions: Vec<TopicPartition>) -> Result<Bytes> {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(tp.topic).or_default().push(tp.partition);
    }
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(t)))
                    .with_partitions(ps)
            })
            .collect(),
    );
    encode_versioned(&assignment, ASSIGNMENT_VERSION)
}

/// The partitions of an assignment, in the message's order; none for empty bytes (a member the
/// leader gave nothing).
pub(crate) fn decode_assignment(bytes: &Bytes) -> Result<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let assignment: ConsumerProtocolAssignment = decode_versioned(bytes)?;
    Ok(assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(t.topic.0.as_str(), *p))
        })
        .collect())
}

/// The consumer protocol's embedded messages: an i16 version, then the message at that version.
fn encode_versioned<M: Encodable>(message: &M, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .map_err(|e| Error::Protocol(format!("cannot encode consumer protocol message: {e:#}")))?;
    Ok(buf.freeze())
}

/// Decodes an embedded message, reading a newer version than ours as our newest (the consumer
/// protocol only appends fields).
fn decode_versioned<M: Decodable + Message>(bytes: &Bytes) -> Result<M> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Err(Error::Protocol(
            "consumer protocol message without a version".into(),
        ));
    }
    let version = buf.get_i16().clamp(M::VERSIONS.min, M::VERSIONS.max);
    M::decode(&mut buf, version)
        .map_err(|e| Error::Protocol(format!("cannot decode consumer protocol message: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_reads_back_with_its_owned_partitions_and_generation() {
        let topics = vec!["a".to_string(), "b".to_string()];
        let owned = vec![
            TopicPartition::new("a", 0),
            TopicPartition::new("a", 3),
            TopicPartition::new("b", 1),
        ];
        let bytes = encode_subscription(&topics, &owned, 7).unwrap();
        assert_eq!(&bytes[..2], &SUBSCRIPTION_VERSION.to_be_bytes());
        let read = decode_subscription(&bytes).unwrap();
        assert_eq!(
            read,
            MemberSubscription {
                topics,
                owned,
                generation: 7
            }
        );
    }

    #[test]
    fn an_assignment_reads_back_grouped_by_topic() {
        let given = vec![
            TopicPartition::new("b", 2),
            TopicPartition::new("a", 1),
            TopicPartition::new("b", 0),
        ];
        let bytes = encode_assignment(given).unwrap();
        assert_eq!(
            decode_assignment(&bytes).unwrap(),
            [
                TopicPartition::new("a", 1),
                TopicPartition::new("b", 2),
                TopicPartition::new("b", 0),
            ]
        );
        assert_eq!(decode_assignment(&Bytes::new()).unwrap(), []);
    }

    #[test]
    fn a_newer_version_reads_as_ours_and_a_missing_version_is_an_error() {
        let ours = encode_assignment(vec![TopicPartition::new("t", 4)]).unwrap();
        let mut newer = BytesMut::new();
        newer.put_i16(i16::MAX);
        newer.extend_from_slice(&ours[2..]);
        assert_eq!(
            decode_assignment(&newer.freeze()).unwrap(),
            [TopicPartition::new("t", 4)]
        );
        assert!(matches!(
            decode_assignment(&Bytes::from_static(&[0])),
            Err(Error::Protocol(_))
        ));
    }
}
