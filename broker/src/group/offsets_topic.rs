//! The records of `__consumer_offsets`, in Kafka's own formats, so Kafka's tools can read the log:
//! a committed offset is `OffsetCommitKey` v1 → `OffsetCommitValue` v3, a group's membership is
//! `GroupMetadataKey` v2 → `GroupMetadataValue` v3, and a null value (tombstone) deletes the key.
//! The topic is compacted, so only the last record per key survives cleaning.
//!
//! Invariant: decoding checks every length against the bytes at hand; a record that does not
//! decode is reported and skipped, never trusted.

use bytes::{BufMut, Bytes, BytesMut};

pub const TOPIC: &str = crate::metadata::OFFSETS_TOPIC;

/// The partition of `__consumer_offsets` that holds a group: Kafka's
/// `Utils.abs(groupId.hashCode) % partitionCount`, with Java's `String.hashCode` over UTF-16.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let mut hash: i32 = 0;
    for unit in group_id.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (hash & 0x7fff_ffff) % partitions
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

fn put_string(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, bytes: &[u8]) {
    b.put_i32(bytes.len() as i32);
    b.put_slice(bytes);
}

impl Key {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                b.put_i16(1);
                put_string(&mut b, group);
                put_string(&mut b, topic);
                b.put_i32(*partition);
            }
            Key::Group { group } => {
                b.put_i16(2);
                put_string(&mut b, group);
            }
        }
        b.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        match r.i16()? {
            0 | 1 => Ok(Key::Offset {
                group: r.string()?,
                topic: r.string()?,
                partition: r.i32()?,
            }),
            2 => Ok(Key::Group { group: r.string()? }),
            v => Err(format!("unknown key version {v}")),
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i64(self.offset);
        b.put_i32(self.leader_epoch);
        put_string(&mut b, &self.metadata);
        b.put_i64(self.commit_timestamp_ms);
        b.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        let version = r.i16()?;
        let offset = r.i64()?;
        let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
        let metadata = r.string()?;
        let commit_timestamp_ms = r.i64()?;
        if version == 1 {
            r.i64()?; // expire timestamp, no longer used
        }
        if !(0..=3).contains(&version) {
            return Err(format!("unsupported offset value version {version}"));
        }
        Ok(Self {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(3);
        put_string(&mut b, &self.protocol_type);
        b.put_i32(self.generation);
        put_nullable_string(&mut b, self.protocol.as_deref());
        put_nullable_string(&mut b, self.leader.as_deref());
        b.put_i64(self.state_timestamp_ms);
        b.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_string(&mut b, &m.member_id);
            put_nullable_string(&mut b, m.group_instance_id.as_deref());
            put_string(&mut b, &m.client_id);
            put_string(&mut b, &m.client_host);
            b.put_i32(m.rebalance_timeout_ms);
            b.put_i32(m.session_timeout_ms);
            put_bytes(&mut b, &m.subscription);
            put_bytes(&mut b, &m.assignment);
        }
        b.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return Err(format!("unsupported group value version {version}"));
        }
        let protocol_type = r.string()?;
        let generation = r.i32()?;
        let protocol = r.nullable_string()?;
        let leader = r.nullable_string()?;
        let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
        let count = r.i32()?;
        if count < 0 || count as usize > r.0.len() {
            return Err(format!("bad member count {count}"));
        }
        let mut members = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let member_id = r.string()?;
            let group_instance_id = if version >= 3 {
                r.nullable_string()?
            } else {
                None
            };
            let client_id = r.string()?;
            let client_host = r.string()?;
            let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
            let session_timeout_ms = r.i32()?;
            members.push(MemberValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription: r.bytes()?,
                assignment: r.bytes()?,
            });
        }
        Ok(Self {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp_ms,
            members,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!("{n} bytes wanted, {} left", self.0.len()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|e| e.to_string())
    }
    fn string(&mut self) -> Result<String, String> {
        self.nullable_string()?.ok_or_else(|| "null string".into())
    }
    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_java_string_hash_code() {
        // "my-group".hashCode() == -1906497762 in Java; "" hashes to 0.
        assert_eq!(
            partition_for("my-group", 50),
            (-1906497762i32 & 0x7fff_ffff) % 50
        );
        assert_eq!(partition_for("", 50), 0);
        // A negative Java hash is masked, as Utils.abs does: "polygenelubricants" hashes to MIN_VALUE.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let k = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        assert_eq!(Key::decode(&k.encode()).unwrap(), k);
        let g = Key::Group { group: "g".into() };
        assert_eq!(Key::decode(&g.encode()).unwrap(), g);
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 1,
            metadata: "m".into(),
            commit_timestamp_ms: 7,
        };
        assert_eq!(OffsetValue::decode(&v.encode()).unwrap(), v);
        let gv = GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp_ms: 9,
            members: vec![MemberValue {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let bytes = gv.encode();
        assert_eq!(GroupValue::decode(&bytes).unwrap(), gv);
        for cut in 0..bytes.len() {
            assert!(GroupValue::decode(&bytes[..cut]).is_err());
        }
        assert!(Key::decode(&[0, 9, 0, 1]).is_err());
    }
}
