//! The types the metadata quorum is made of for openraft: a log entry's data is one batch of
//! metadata records ([`RecordBatch`]), and what applying it gives back is its [`Outcome`].
//!
//! A batch crosses the wire and sits in the Raft log as the records' own binary encoding
//! (`metadata_log::record`), written as hex inside the serde formats, so that decoding it checks
//! every length against the bytes at hand.
//!
//! Invariant: `RecordBatch` round-trips through serde unchanged; an entry whose records do not
//! decode is an error, never an empty batch.

use std::io::Cursor;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::image::ApplyError;
use crate::metadata_log::record::{decode_all, encode_all, MetadataRecord};

/// The records of one change, committed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch(pub Vec<MetadataRecord>);

/// What applying a batch gave: applied, or refused by the image (on every node alike).
pub type Outcome = Result<(), ApplyError>;

openraft::declare_raft_types!(
    /// The metadata quorum's openraft types.
    pub QuorumTypes:
        D = RecordBatch,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type NodeId = u64;
pub type Entry = openraft::Entry<QuorumTypes>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<QuorumTypes>;

impl Serialize for RecordBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(&encode_all(&self.0)))
    }
}

impl<'de> Deserialize<'de> for RecordBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = from_hex(&text).map_err(serde::de::Error::custom)?;
        let records = decode_all(&bytes).map_err(serde::de::Error::custom)?;
        Ok(RecordBatch(records))
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(format!("`{}` is not a hex digit", c as char)),
    };
    if !text.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_and_damage_is_an_error() {
        let batch = RecordBatch(vec![
            MetadataRecord::TopicDeleted { name: "a".into() },
            MetadataRecord::ProducerIdsAllocated { block_end: 1000 },
        ]);
        let json = serde_json::to_string(&batch).unwrap();
        assert_eq!(serde_json::from_str::<RecordBatch>(&json).unwrap(), batch);
        for bad in ["\"0\"", "\"zz\"", "\"0100\""] {
            assert!(serde_json::from_str::<RecordBatch>(bad).is_err(), "{bad}");
        }
    }
}
