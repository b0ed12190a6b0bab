//! The Produce request written as framing plus record batches, so a producer never copies its
//! batches into a request buffer: the result is a list of chunks, small framing chunks between
//! the batches' own `Bytes`, for a vectored write.
//!
//! Versions 3 to 12 (v9 and later are flexible: compact lengths and tagged fields); v13 names
//! topics by id and is not written here. The bytes are those kafka-protocol's encoder writes
//! (a test checks every version).

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{put_array_len, put_string, put_unsigned_varint};

/// The records for one partition.
#[derive(Debug, Clone)]
pub struct PartitionRecords {
    pub partition: i32,
    pub records: Bytes,
}

/// One topic's partitions.
#[derive(Debug, Clone)]
pub struct TopicRecords<'a> {
    pub name: &'a str,
    pub partitions: Vec<PartitionRecords>,
}

/// Highest version [`encode_produce_request`] writes.
pub const MAX_VERSION: i16 = 12;

/// The request body (no header) as chunks. Panics on a version outside 3..=12: callers choose
/// the version from what both sides support, capped at [`MAX_VERSION`].
pub fn encode_produce_request(
    version: i16,
    transactional_id: Option<&str>,
    acks: i16,
    timeout_ms: i32,
    topics: &[TopicRecords<'_>],
) -> Vec<Bytes> {
    assert!(
        (3..=MAX_VERSION).contains(&version),
        "Produce v{version} is not written here"
    );
    let flexible = version >= 9;
    let mut chunks =
        Vec::with_capacity(2 + topics.iter().map(|t| 2 * t.partitions.len()).sum::<usize>());
    let mut buf = BytesMut::with_capacity(128);
    match (transactional_id, flexible) {
        (None, false) => buf.put_i16(-1),
        (None, true) => put_unsigned_varint(&mut buf, 0),
        (Some(id), _) => put_string(&mut buf, flexible, id),
    }
    buf.put_i16(acks);
    buf.put_i32(timeout_ms);
    put_array_len(&mut buf, flexible, topics.len());
    for t in topics {
        put_string(&mut buf, flexible, t.name);
        put_array_len(&mut buf, flexible, t.partitions.len());
        for p in &t.partitions {
            buf.put_i32(p.partition);
            if flexible {
                put_unsigned_varint(&mut buf, p.records.len() as u32 + 1);
            } else {
                buf.put_i32(p.records.len() as i32);
            }
            chunks.push(buf.split().freeze());
            chunks.push(p.records.clone());
            if flexible {
                buf.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        buf.put_u8(0); // request tagged fields
    }
    if !buf.is_empty() {
        chunks.push(buf.freeze());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use crate::messages::{ProduceRequest, TopicName};
    use crate::{Encodable, StrBytes};

    #[test]
    fn same_bytes_as_kafka_protocol_at_every_version() {
        let batch = |n: u8| Bytes::from(vec![n; 100 + n as usize * 50]);
        let topics = [
            TopicRecords {
                name: "alpha",
                partitions: vec![
                    PartitionRecords {
                        partition: 0,
                        records: batch(1),
                    },
                    PartitionRecords {
                        partition: 3,
                        records: batch(2),
                    },
                ],
            },
            TopicRecords {
                name: "b",
                partitions: vec![PartitionRecords {
                    partition: 7,
                    records: batch(3),
                }],
            },
        ];
        for version in 3..=MAX_VERSION {
            for transactional_id in [None, Some("tx-1")] {
                let ours: Vec<u8> =
                    encode_produce_request(version, transactional_id, -1, 30_000, &topics)
                        .iter()
                        .flat_map(|c| c.iter().copied())
                        .collect();
                let reference =
                    ProduceRequest::default()
                        .with_transactional_id(transactional_id.map(|t| {
                            crate::messages::TransactionalId(StrBytes::from_string(t.into()))
                        }))
                        .with_acks(-1)
                        .with_timeout_ms(30_000)
                        .with_topic_data(
                            topics
                                .iter()
                                .map(|t| {
                                    TopicProduceData::default()
                                        .with_name(TopicName(StrBytes::from_string(t.name.into())))
                                        .with_partition_data(
                                            t.partitions
                                                .iter()
                                                .map(|p| {
                                                    PartitionProduceData::default()
                                                        .with_index(p.partition)
                                                        .with_records(Some(p.records.clone()))
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        );
                let mut expected = BytesMut::new();
                reference.encode(&mut expected, version).unwrap();
                assert_eq!(
                    ours,
                    expected.to_vec(),
                    "version {version} {transactional_id:?}"
                );
            }
        }
    }

    #[test]
    fn batches_are_not_copied() {
        let records = Bytes::from(vec![9u8; 4096]);
        let topics = [TopicRecords {
            name: "t",
            partitions: vec![PartitionRecords {
                partition: 0,
                records: records.clone(),
            }],
        }];
        let chunks = encode_produce_request(11, None, 1, 100, &topics);
        assert!(chunks.iter().any(|c| c.as_ptr() == records.as_ptr()));
    }
}
