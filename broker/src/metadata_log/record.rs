//! The metadata records: typed, each with a type and a version byte, in a binary encoding.
//!
//! A record names its topic by name: names are unique among live topics, and every record of a
//! topic lies between its `TopicCreated` and its `TopicDeleted` in the one order of the log, so a
//! name is never ambiguous. Partitions are records of their own, with their replicas, in-sync
//! replicas, leader and epochs, as Kafka's PartitionRecord.
//!
//! Encoding (big-endian): `type u8 | version u8 | fields`; a string is `u16 length | UTF-8`, an
//! id 16 bytes, an array `u32 count | items`, a map `u32 count | (string, string)*`.
//!
//! Invariants: decoding never trusts a length or a count beyond the bytes at hand (no
//! allocation is sized by one unchecked); an unknown type or version is an error, never a guess;
//! `decode(encode(r)) == r`.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A topic exists, with its id and its config overrides; its partitions follow.
    TopicCreated {
        name: String,
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// A partition of a topic exists (or changed), with where its replicas are.
    Partition(PartitionRecord),
    TopicDeleted {
        name: String,
    },
    /// The topic's whole set of overrides after a change (AlterConfigs, IncrementalAlterConfigs).
    TopicConfigChanged {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `block_end` are taken (Kafka's ProducerIdsRecord): ids are handed out
    /// from a block reserved here before any of it is used, so none is reused after a restart.
    ProducerIdsAllocated {
        block_end: i64,
    },
    /// A broker registered, at `broker_epoch`, reachable at `host:port` (Kafka's
    /// RegisterBrokerRecord); a new registration of the same id replaces the old. It starts
    /// fenced.
    BrokerRegistered {
        node_id: i32,
        broker_epoch: i64,
        host: String,
        port: i32,
        /// `broker.rack`, if set (version 1 of the record).
        rack: Option<String>,
    },
    /// A registered broker was fenced or unfenced (Kafka's BrokerRegistrationChangeRecord).
    BrokerFencing {
        node_id: i32,
        fenced: bool,
    },
}

/// A partition's placement and leadership, as Kafka's PartitionRecord and PartitionChangeRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// A reassignment in progress: the replicas being added and those to be removed once the
    /// added ones are in sync (Kafka's adding and removing replicas). Both empty otherwise.
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

impl PartitionRecord {
    /// A new partition whose one replica, `node`, leads it at the first epochs.
    pub fn on_one_node(topic: &str, partition: i32, node: i32) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            replicas: vec![node],
            isr: vec![node],
            leader: node,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is truncated")]
    Truncated,
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("record type {kind} has unknown version {version}")]
    UnknownVersion { kind: u8, version: u8 },
    #[error("a string is not UTF-8")]
    NotUtf8,
    #[error("a flag is {0}, not 0 or 1")]
    BadFlag(u8),
    #[error("{0} bytes left after the record")]
    TrailingBytes(usize),
}

const TOPIC_CREATED: u8 = 1;
const PARTITION: u8 = 2;
const TOPIC_DELETED: u8 = 3;
const TOPIC_CONFIG_CHANGED: u8 = 4;
const PRODUCER_IDS_ALLOCATED: u8 = 5;
const BROKER_REGISTERED: u8 = 6;
const BROKER_FENCING: u8 = 7;
/// The highest record type known.
const LAST_TYPE: u8 = BROKER_FENCING;
/// Every record type is at version 0, except a partition with a reassignment in progress.
const VERSION_0: u8 = 0;
/// A partition record with its adding and removing replicas after the version 0 fields.
const PARTITION_VERSION_1: u8 = 1;
/// A broker registration with its rack after the version 0 fields.
const BROKER_VERSION_1: u8 = 1;

impl MetadataRecord {
    /// Appends the record's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            MetadataRecord::TopicCreated {
                name,
                topic_id,
                configs,
            } => {
                out.put_slice(&[TOPIC_CREATED, VERSION_0]);
                put_string(out, name);
                out.put_slice(topic_id.as_bytes());
                put_map(out, configs);
            }
            MetadataRecord::Partition(p) => encode_partition(p, out),
            MetadataRecord::TopicDeleted { name } => {
                out.put_slice(&[TOPIC_DELETED, VERSION_0]);
                put_string(out, name);
            }
            MetadataRecord::TopicConfigChanged { name, configs } => {
                out.put_slice(&[TOPIC_CONFIG_CHANGED, VERSION_0]);
                put_string(out, name);
                put_map(out, configs);
            }
            MetadataRecord::ProducerIdsAllocated { block_end } => {
                out.put_slice(&[PRODUCER_IDS_ALLOCATED, VERSION_0]);
                out.put_i64(*block_end);
            }
            MetadataRecord::BrokerRegistered {
                node_id,
                broker_epoch,
                host,
                port,
                rack,
            } => {
                let version = match rack {
                    Some(_) => BROKER_VERSION_1,
                    None => VERSION_0,
                };
                out.put_slice(&[BROKER_REGISTERED, version]);
                out.put_i32(*node_id);
                out.put_i64(*broker_epoch);
                put_string(out, host);
                out.put_i32(*port);
                if let Some(rack) = rack {
                    put_string(out, rack);
                }
            }
            MetadataRecord::BrokerFencing { node_id, fenced } => {
                out.put_slice(&[BROKER_FENCING, VERSION_0]);
                out.put_i32(*node_id);
                out.put_u8(u8::from(*fenced));
            }
        }
    }

    /// Reads one record from the front of `buf`, advancing it past the record.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, RecordError> {
        let kind = take_u8(buf)?;
        let version = take_u8(buf)?;
        let known_version = version == VERSION_0
            || (kind == PARTITION && version == PARTITION_VERSION_1)
            || (kind == BROKER_REGISTERED && version == BROKER_VERSION_1);
        if !known_version || !(TOPIC_CREATED..=LAST_TYPE).contains(&kind) {
            return Err(if (TOPIC_CREATED..=LAST_TYPE).contains(&kind) {
                RecordError::UnknownVersion { kind, version }
            } else {
                RecordError::UnknownType(kind)
            });
        }
        Ok(match kind {
            TOPIC_CREATED => MetadataRecord::TopicCreated {
                name: take_string(buf)?,
                topic_id: take_uuid(buf)?,
                configs: take_map(buf)?,
            },
            PARTITION => {
                let mut p = PartitionRecord {
                    topic: take_string(buf)?,
                    partition: take_i32(buf)?,
                    replicas: take_ids(buf)?,
                    isr: take_ids(buf)?,
                    leader: take_i32(buf)?,
                    leader_epoch: take_i32(buf)?,
                    partition_epoch: take_i32(buf)?,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                };
                if version == PARTITION_VERSION_1 {
                    p.adding_replicas = take_ids(buf)?;
                    p.removing_replicas = take_ids(buf)?;
                }
                MetadataRecord::Partition(p)
            }
            TOPIC_DELETED => MetadataRecord::TopicDeleted {
                name: take_string(buf)?,
            },
            TOPIC_CONFIG_CHANGED => MetadataRecord::TopicConfigChanged {
                name: take_string(buf)?,
                configs: take_map(buf)?,
            },
            PRODUCER_IDS_ALLOCATED => MetadataRecord::ProducerIdsAllocated {
                block_end: take_i64(buf)?,
            },
            BROKER_REGISTERED => MetadataRecord::BrokerRegistered {
                node_id: take_i32(buf)?,
                broker_epoch: take_i64(buf)?,
                host: take_string(buf)?,
                port: take_i32(buf)?,
                rack: match version {
                    BROKER_VERSION_1 => Some(take_string(buf)?),
                    _ => None,
                },
            },
            _ => MetadataRecord::BrokerFencing {
                node_id: take_i32(buf)?,
                fenced: match take_u8(buf)? {
                    0 => false,
                    1 => true,
                    other => return Err(RecordError::BadFlag(other)),
                },
            },
        })
    }
}

/// A partition record: version 1, with the reassignment's replicas, only while one runs.
fn encode_partition(p: &PartitionRecord, out: &mut Vec<u8>) {
    let reassigning = !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty();
    let version = if reassigning {
        PARTITION_VERSION_1
    } else {
        VERSION_0
    };
    out.put_slice(&[PARTITION, version]);
    put_string(out, &p.topic);
    out.put_i32(p.partition);
    put_ids(out, &p.replicas);
    put_ids(out, &p.isr);
    out.put_i32(p.leader);
    out.put_i32(p.leader_epoch);
    out.put_i32(p.partition_epoch);
    if reassigning {
        put_ids(out, &p.adding_replicas);
        put_ids(out, &p.removing_replicas);
    }
}

/// Encodes records one after another.
pub fn encode_all(records: &[MetadataRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.encode(&mut out);
    }
    out
}

/// Decodes records that fill `bytes` exactly.
pub fn decode_all(mut bytes: &[u8]) -> Result<Vec<MetadataRecord>, RecordError> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        records.push(MetadataRecord::decode(&mut bytes)?);
    }
    Ok(records)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("metadata strings are under 64 KiB");
    out.put_u16(len);
    out.put_slice(s.as_bytes());
}

fn put_map(out: &mut Vec<u8>, map: &BTreeMap<String, String>) {
    out.put_u32(map.len() as u32);
    for (k, v) in map {
        put_string(out, k);
        put_string(out, v);
    }
}

fn put_ids(out: &mut Vec<u8>, ids: &[i32]) {
    out.put_u32(ids.len() as u32);
    for id in ids {
        out.put_i32(*id);
    }
}

fn need(buf: &[u8], bytes: usize) -> Result<(), RecordError> {
    if buf.remaining() < bytes {
        return Err(RecordError::Truncated);
    }
    Ok(())
}

fn take_u8(buf: &mut &[u8]) -> Result<u8, RecordError> {
    need(buf, 1)?;
    Ok(buf.get_u8())
}

fn take_i32(buf: &mut &[u8]) -> Result<i32, RecordError> {
    need(buf, 4)?;
    Ok(buf.get_i32())
}

fn take_i64(buf: &mut &[u8]) -> Result<i64, RecordError> {
    need(buf, 8)?;
    Ok(buf.get_i64())
}

fn take_uuid(buf: &mut &[u8]) -> Result<Uuid, RecordError> {
    need(buf, 16)?;
    let mut id = [0u8; 16];
    buf.copy_to_slice(&mut id);
    Ok(Uuid::from_bytes(id))
}

fn take_string(buf: &mut &[u8]) -> Result<String, RecordError> {
    need(buf, 2)?;
    let len = buf.get_u16() as usize;
    need(buf, len)?;
    let s = std::str::from_utf8(&buf[..len]).map_err(|_| RecordError::NotUtf8)?;
    let s = s.to_string();
    buf.advance(len);
    Ok(s)
}

/// A count of items of at least `item_bytes` each, checked against the bytes left.
fn take_count(buf: &mut &[u8], item_bytes: usize) -> Result<usize, RecordError> {
    need(buf, 4)?;
    let count = buf.get_u32() as usize;
    if count > buf.remaining() / item_bytes {
        return Err(RecordError::Truncated);
    }
    Ok(count)
}

fn take_map(buf: &mut &[u8]) -> Result<BTreeMap<String, String>, RecordError> {
    let count = take_count(buf, 4)?;
    let mut map = BTreeMap::new();
    for _ in 0..count {
        let k = take_string(buf)?;
        map.insert(k, take_string(buf)?);
    }
    Ok(map)
}

fn take_ids(buf: &mut &[u8]) -> Result<Vec<i32>, RecordError> {
    let count = take_count(buf, 4)?;
    (0..count).map(|_| take_i32(buf)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::TopicCreated {
                name: "orders".into(),
                topic_id: Uuid::new_v4(),
                configs: [("retention.ms".to_string(), "5000".to_string())].into(),
            },
            MetadataRecord::Partition(PartitionRecord {
                topic: "orders".into(),
                partition: 3,
                replicas: vec![1, 2, 3],
                isr: vec![1, 3],
                leader: 3,
                leader_epoch: 7,
                partition_epoch: 9,
                adding_replicas: vec![4],
                removing_replicas: vec![1],
            }),
            MetadataRecord::TopicConfigChanged {
                name: "orders".into(),
                configs: BTreeMap::new(),
            },
            MetadataRecord::TopicDeleted {
                name: "orders".into(),
            },
            MetadataRecord::ProducerIdsAllocated { block_end: 4000 },
            MetadataRecord::BrokerRegistered {
                node_id: 2,
                broker_epoch: 17,
                host: "broker-2.local".into(),
                port: 9092,
                rack: None,
            },
            MetadataRecord::BrokerRegistered {
                node_id: 3,
                broker_epoch: 1,
                host: "broker-3.local".into(),
                port: 9092,
                rack: Some("eu-west-1a".into()),
            },
            MetadataRecord::BrokerFencing {
                node_id: 2,
                fenced: false,
            },
        ]
    }

    #[test]
    fn a_fencing_flag_other_than_0_or_1_is_an_error() {
        let mut bytes = vec![BROKER_FENCING, VERSION_0];
        bytes.extend(2i32.to_be_bytes());
        bytes.push(7);
        assert_eq!(decode_all(&bytes), Err(RecordError::BadFlag(7)));
    }

    #[test]
    fn records_round_trip() {
        let records = samples();
        assert_eq!(decode_all(&encode_all(&records)).unwrap(), records);
    }

    #[test]
    fn every_cut_of_a_record_is_truncated_never_a_panic() {
        for r in samples() {
            let mut bytes = Vec::new();
            r.encode(&mut bytes);
            for cut in 0..bytes.len() {
                assert!(
                    decode_all(&bytes[..cut]).is_err() || cut == 0,
                    "{r:?} at {cut}"
                );
            }
        }
    }

    #[test]
    fn a_huge_count_is_refused_before_anything_is_allocated() {
        let mut bytes = vec![PARTITION, VERSION_0];
        put_string(&mut bytes, "t");
        bytes.extend(0i32.to_be_bytes());
        bytes.extend(u32::MAX.to_be_bytes());
        assert_eq!(decode_all(&bytes), Err(RecordError::Truncated));
    }

    #[test]
    fn unknown_types_and_versions_are_errors() {
        assert_eq!(decode_all(&[9, 0]), Err(RecordError::UnknownType(9)));
        assert_eq!(
            decode_all(&[TOPIC_DELETED, 1, 0, 0]),
            Err(RecordError::UnknownVersion {
                kind: TOPIC_DELETED,
                version: 1
            })
        );
    }
}
