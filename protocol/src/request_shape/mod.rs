//! A request body walked against the wire shape of its message before anything decodes it, so
//! that decoding never allocates by a count it has not checked (Apache Kafka 4.4's limits).
//!
//! The kafka-protocol crate reserves a `Vec` for an array's count before it reads an element: a
//! 30-byte request claiming 2^31 elements asks for hundreds of gigabytes. This walk reads the
//! body exactly as the crate will (the same fields in the same order at the same versions, from
//! [`schema`], generated from the crate's decoders by `protocol/tools/request_shapes.py`) and
//! refuses it first when:
//! - an array has more than [`MAX_ARRAY_ELEMENTS`] elements, or more than the bytes left;
//! - a tagged-field section has more than [`MAX_TAGGED_FIELDS`] fields;
//! - a length runs past the end, a known tagged field's value is not the size it declares, or
//!   an element takes no bytes.
//!
//! Invariants: the walk allocates nothing and takes time linear in the body (every element and
//! every tagged field consumes at least one byte); a body it accepts is read by the crate at the
//! same offsets, so every count the crate acts on was checked here.

pub mod schema;

/// Most elements an array or collection may have (Kafka 4.4).
pub const MAX_ARRAY_ELEMENTS: u64 = 1_000_000;
pub use crate::wire::MAX_TAGGED_FIELDS;

/// How a field is written on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Wire {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U16,
    U32,
    F64,
    Uuid,
    /// An i16 length (-1: null), then that many bytes.
    Str,
    /// An unsigned varint of length + 1 (0: null), then that many bytes.
    CompactStr,
    /// An i32 length (-1: null), then that many bytes.
    Bytes,
    CompactBytes,
    UVarInt,
    VarInt,
    VarLong,
    /// An i32 count (-1: null), then that many elements.
    Array(&'static Wire),
    /// An unsigned varint of count + 1 (0: null), then that many elements.
    CompactArray(&'static Wire),
    Struct(&'static Shape),
    /// An i8 (1: present), then the struct.
    OptionStruct(&'static Shape),
}

/// A field present in the versions `versions` (inclusive).
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub versions: (i16, i16),
    pub wire: Wire,
}

/// A tagged field the crate decodes by its tag.
#[derive(Debug)]
pub struct Tagged {
    pub tag: u32,
    pub field: Field,
}

/// A message or a struct inside one.
#[derive(Debug)]
pub struct Shape {
    pub name: &'static str,
    /// The versions the crate decodes it at; others it refuses.
    pub versions: (i16, i16),
    pub fields: &'static [Field],
    /// The versions with a tagged-field section at the end (the flexible versions).
    pub tagged_versions: Option<(i16, i16)>,
    pub tagged: &'static [Tagged],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("no request shape for api key {0} (the shape tables need regenerating)")]
    NoShape(i16),
    #[error("{0} is not decoded at version {1}")]
    Version(&'static str, i16),
    #[error("{field} runs past the end of the request")]
    Truncated { field: &'static str },
    #[error("{field} has the invalid length {length}")]
    BadLength { field: &'static str, length: i64 },
    #[error("array {field} of {count} elements exceeds the limit of {MAX_ARRAY_ELEMENTS}")]
    TooManyElements { field: &'static str, count: u64 },
    #[error(
        "array {field} claims {count} elements, but there are only {remaining} bytes remaining"
    )]
    CountBeyondBytes {
        field: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("an element of {field} takes no bytes")]
    EmptyElement { field: &'static str },
    #[error("tagged-field section of {count} fields exceeds the limit of {MAX_TAGGED_FIELDS}")]
    TooManyTaggedFields { count: u64 },
    #[error("tagged field {tag} declares {declared} bytes but its value takes {used}")]
    TagSize {
        tag: u32,
        declared: usize,
        used: usize,
    },
    #[error("tag {tag} is not valid for version {version}")]
    TagVersion { tag: u32, version: i16 },
}

/// Walks the body of request `api_key` at `version`; returns the bytes the message takes.
pub fn check_request(
    api: kafka_protocol::messages::ApiKey,
    version: i16,
    body: &[u8],
) -> Result<usize, ShapeError> {
    let shape = schema::request(api).ok_or(ShapeError::NoShape(api as i16))?;
    check(shape, version, body)
}

/// Walks `body` as message `shape` at `version`; returns the bytes the message takes.
pub fn check(shape: &'static Shape, version: i16, body: &[u8]) -> Result<usize, ShapeError> {
    let mut walk = Walk { bytes: body, at: 0 };
    walk.shape(shape, version)?;
    Ok(walk.at)
}

fn within((lo, hi): (i16, i16), version: i16) -> bool {
    (lo..=hi).contains(&version)
}

struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Walk<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], ShapeError> {
        if n > self.remaining() {
            return Err(ShapeError::Truncated { field });
        }
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    fn int(&mut self, n: usize, field: &'static str) -> Result<i64, ShapeError> {
        let bytes = self.take(n, field)?;
        Ok(match n {
            1 => i64::from(bytes[0] as i8),
            2 => i64::from(i16::from_be_bytes([bytes[0], bytes[1]])),
            _ => i64::from(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
        })
    }

    /// An unsigned varint as the crate reads it: at most five bytes, the last one's
    /// continuation bit ignored.
    fn uvarint(&mut self, field: &'static str) -> Result<u32, ShapeError> {
        let mut value = 0u32;
        for i in 0..5 {
            let b = u32::from(self.take(1, field)?[0]);
            value |= (b & 0x7f).wrapping_shl(i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// A zigzag varint of at most `max_bytes` bytes.
    fn varlong(&mut self, max_bytes: usize, field: &'static str) -> Result<(), ShapeError> {
        for _ in 0..max_bytes {
            if self.take(1, field)?[0] < 0x80 {
                return Ok(());
            }
        }
        Err(ShapeError::BadLength { field, length: -1 })
    }

    fn shape(&mut self, shape: &'static Shape, version: i16) -> Result<(), ShapeError> {
        if !within(shape.versions, version) {
            return Err(ShapeError::Version(shape.name, version));
        }
        for f in shape.fields.iter().filter(|f| within(f.versions, version)) {
            self.wire(&f.wire, f.name, version)?;
        }
        match shape.tagged_versions {
            Some(v) if within(v, version) => self.tagged(shape, version),
            _ => Ok(()),
        }
    }

    fn tagged(&mut self, shape: &'static Shape, version: i16) -> Result<(), ShapeError> {
        let count = u64::from(self.uvarint("tagged fields")?);
        if count > MAX_TAGGED_FIELDS {
            return Err(ShapeError::TooManyTaggedFields { count });
        }
        for _ in 0..count {
            let tag = self.uvarint("tag")?;
            let size = self.uvarint("tag size")? as usize;
            let mut known = shape.tagged.iter().filter(|t| t.tag == tag).peekable();
            if known.peek().is_none() {
                self.take(size, "tagged field")?;
                continue;
            }
            let field = known
                .map(|t| &t.field)
                .find(|f| within(f.versions, version))
                .ok_or(ShapeError::TagVersion { tag, version })?;
            let start = self.at;
            self.wire(&field.wire, field.name, version)?;
            let used = self.at - start;
            if used != size {
                return Err(ShapeError::TagSize {
                    tag,
                    declared: size,
                    used,
                });
            }
        }
        Ok(())
    }

    fn wire(&mut self, wire: &Wire, field: &'static str, version: i16) -> Result<(), ShapeError> {
        match *wire {
            Wire::Bool | Wire::I8 => self.take(1, field).map(drop),
            Wire::I16 | Wire::U16 => self.take(2, field).map(drop),
            Wire::I32 | Wire::U32 => self.take(4, field).map(drop),
            Wire::I64 | Wire::F64 => self.take(8, field).map(drop),
            Wire::Uuid => self.take(16, field).map(drop),
            Wire::UVarInt => self.uvarint(field).map(drop),
            Wire::VarInt => self.varlong(5, field),
            Wire::VarLong => self.varlong(10, field),
            Wire::Str => {
                let length = self.int(2, field)?;
                self.sized(length, field)
            }
            Wire::Bytes => {
                let length = self.int(4, field)?;
                self.sized(length, field)
            }
            Wire::CompactStr | Wire::CompactBytes => {
                let n = self.uvarint(field)?;
                self.sized(i64::from(n) - 1, field)
            }
            Wire::Array(inner) => {
                let count = self.int(4, field)?;
                self.elements(count, inner, field, version)
            }
            Wire::CompactArray(inner) => {
                let n = self.uvarint(field)?;
                self.elements(i64::from(n) - 1, inner, field, version)
            }
            Wire::Struct(shape) => self.shape(shape, version),
            Wire::OptionStruct(shape) => {
                if self.int(1, field)? == 1 {
                    self.shape(shape, version)?;
                }
                Ok(())
            }
        }
    }

    /// A string or bytes of `length` (-1: null).
    fn sized(&mut self, length: i64, field: &'static str) -> Result<(), ShapeError> {
        match length {
            -1 => Ok(()),
            n if n < -1 => Err(ShapeError::BadLength { field, length: n }),
            n => self.take(n as usize, field).map(drop),
        }
    }

    fn elements(
        &mut self,
        count: i64,
        inner: &Wire,
        field: &'static str,
        version: i16,
    ) -> Result<(), ShapeError> {
        if count == -1 {
            return Ok(());
        }
        if count < -1 {
            return Err(ShapeError::BadLength {
                field,
                length: count,
            });
        }
        let count = count as u64;
        if count > MAX_ARRAY_ELEMENTS {
            return Err(ShapeError::TooManyElements { field, count });
        }
        let remaining = self.remaining();
        if count > remaining as u64 {
            return Err(ShapeError::CountBeyondBytes {
                field,
                count,
                remaining,
            });
        }
        for _ in 0..count {
            let start = self.at;
            self.wire(inner, field, version)?;
            if self.at == start {
                return Err(ShapeError::EmptyElement { field });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, Message, StrBytes};

    fn encoded<M: Encodable>(m: &M, version: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        m.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }

    /// Walks `m` encoded at every version the crate has, and checks the walk takes exactly the
    /// encoded bytes.
    fn walks_exactly<M: Encodable + Message>(api: ApiKey, m: &M) {
        for v in M::VERSIONS.min..=M::VERSIONS.max {
            let mut buf = BytesMut::new();
            if m.encode(&mut buf, v).is_err() {
                continue; // a field set that this version cannot carry
            }
            let bytes = buf.to_vec();
            assert_eq!(
                check_request(api, v, &bytes),
                Ok(bytes.len()),
                "{api:?} v{v}: {m:?}",
                m = std::any::type_name::<M>()
            );
        }
    }

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    #[test]
    fn populated_requests_walk_exactly_at_every_version() {
        let mut t = metadata_request::MetadataRequestTopic::default();
        t.name = Some(TopicName(s("a")));
        let mut metadata = MetadataRequest::default();
        metadata.topics = Some(vec![t.clone(), t]);
        walks_exactly(ApiKey::Metadata, &metadata);

        let mut p = fetch_request::FetchPartition::default();
        p.partition = 3;
        let mut ft = fetch_request::FetchTopic::default();
        ft.topic = TopicName(s("t"));
        ft.partitions = vec![p.clone(), p];
        let mut forgotten = fetch_request::ForgottenTopic::default();
        forgotten.topic = TopicName(s("f"));
        forgotten.partitions = vec![1, 2];
        let mut fetch = FetchRequest::default();
        fetch.topics = vec![ft];
        fetch.forgotten_topics_data = vec![forgotten];
        fetch.cluster_id = Some(s("c"));
        fetch.rack_id = s("r");
        walks_exactly(ApiKey::Fetch, &fetch);

        let mut pd = produce_request::PartitionProduceData::default();
        pd.records = Some(bytes::Bytes::from_static(b"records"));
        let mut td = produce_request::TopicProduceData::default();
        td.name = TopicName(s("t"));
        td.partition_data = vec![pd];
        let mut produce = ProduceRequest::default();
        produce.topic_data = vec![td];
        walks_exactly(ApiKey::Produce, &produce);

        let mut proto = join_group_request::JoinGroupRequestProtocol::default();
        proto.name = s("range");
        proto.metadata = bytes::Bytes::from_static(b"m");
        let mut join = JoinGroupRequest::default();
        join.group_id = GroupId(s("g"));
        join.protocol_type = s("consumer");
        join.protocols = vec![proto];
        join.group_instance_id = Some(s("i"));
        walks_exactly(ApiKey::JoinGroup, &join);

        let mut c = create_topics_request::CreatableTopicConfig::default();
        c.name = s("retention.ms");
        c.value = Some(s("1"));
        let mut a = create_topics_request::CreatableReplicaAssignment::default();
        a.broker_ids = vec![BrokerId(1)];
        let mut ct = create_topics_request::CreatableTopic::default();
        ct.name = TopicName(s("t"));
        ct.configs = vec![c];
        ct.assignments = vec![a];
        let mut create = CreateTopicsRequest::default();
        create.topics = vec![ct];
        walks_exactly(ApiKey::CreateTopics, &create);
    }

    #[test]
    fn every_served_request_walks_exactly_at_its_defaults() {
        walks_exactly(ApiKey::ApiVersions, &ApiVersionsRequest::default());
        walks_exactly(ApiKey::ListOffsets, &ListOffsetsRequest::default());
        walks_exactly(ApiKey::DeleteTopics, &DeleteTopicsRequest::default());
        walks_exactly(ApiKey::DescribeConfigs, &DescribeConfigsRequest::default());
        walks_exactly(ApiKey::DescribeCluster, &DescribeClusterRequest::default());
        walks_exactly(
            ApiKey::CreatePartitions,
            &CreatePartitionsRequest::default(),
        );
        walks_exactly(ApiKey::DeleteRecords, &DeleteRecordsRequest::default());
        walks_exactly(ApiKey::AlterConfigs, &AlterConfigsRequest::default());
        walks_exactly(
            ApiKey::IncrementalAlterConfigs,
            &IncrementalAlterConfigsRequest::default(),
        );
        walks_exactly(
            ApiKey::OffsetForLeaderEpoch,
            &OffsetForLeaderEpochRequest::default(),
        );
        walks_exactly(ApiKey::InitProducerId, &InitProducerIdRequest::default());
        walks_exactly(ApiKey::FindCoordinator, &FindCoordinatorRequest::default());
        walks_exactly(ApiKey::SyncGroup, &SyncGroupRequest::default());
        walks_exactly(ApiKey::Heartbeat, &HeartbeatRequest::default());
        walks_exactly(ApiKey::LeaveGroup, &LeaveGroupRequest::default());
        walks_exactly(ApiKey::OffsetCommit, &OffsetCommitRequest::default());
        walks_exactly(ApiKey::OffsetFetch, &OffsetFetchRequest::default());
        walks_exactly(ApiKey::OffsetDelete, &OffsetDeleteRequest::default());
        walks_exactly(ApiKey::ListGroups, &ListGroupsRequest::default());
        walks_exactly(ApiKey::DescribeGroups, &DescribeGroupsRequest::default());
        walks_exactly(ApiKey::DeleteGroups, &DeleteGroupsRequest::default());
    }

    #[test]
    fn counts_past_the_limits_or_the_bytes_are_refused_before_any_decode() {
        // Metadata v12: topics as a compact array of count + 1.
        let huge = [0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0];
        assert!(matches!(
            check_request(ApiKey::Metadata, 12, &huge),
            Err(ShapeError::TooManyElements { .. })
        ));
        // Metadata v1: an i32 count of 1000 with 4 bytes after it.
        let mut beyond = 1000i32.to_be_bytes().to_vec();
        beyond.extend_from_slice(&[0, 1, b'a', 0]);
        assert!(matches!(
            check_request(ApiKey::Metadata, 1, &beyond),
            Err(ShapeError::CountBeyondBytes { count: 1000, .. })
        ));
        // A tagged section of 10 001 unknown fields (tag 100, size 0), and one of 10 000.
        let section = |count: u32| {
            let mut b = vec![1u8]; // no topics
            b.extend_from_slice(&[1, 1]); // the two booleans of v12
            let mut n = count;
            while n >= 0x80 {
                b.push((n as u8) | 0x80);
                n >>= 7;
            }
            b.push(n as u8);
            for _ in 0..count {
                b.extend_from_slice(&[100, 0]);
            }
            b
        };
        let over = section(10_001);
        assert_eq!(
            check_request(ApiKey::Metadata, 12, &over),
            Err(ShapeError::TooManyTaggedFields { count: 10_001 })
        );
        let at = section(10_000);
        assert_eq!(check_request(ApiKey::Metadata, 12, &at), Ok(at.len()));
        // A known tagged field (Fetch v12 cluster_id, tag 0) whose size lies.
        let mut fetch = encoded(&FetchRequest::default(), 12);
        let last = fetch.len() - 1;
        fetch[last] = 1; // one tagged field
        fetch.extend_from_slice(&[0, 5, 2, b'c']); // tag 0, size 5, compact string "c"
        assert!(matches!(
            check_request(ApiKey::Fetch, 12, &fetch),
            Err(ShapeError::TagSize { tag: 0, .. })
        ));
        // A string that runs past the end.
        assert!(matches!(
            check_request(ApiKey::Metadata, 1, &[0, 0, 0, 1, 0x7f, 0]),
            Err(ShapeError::Truncated { .. })
        ));
    }
}
