//! The Fetch response, written as its framing plus the record slices it carries.
//!
//! The `kafka-protocol` crate encodes a response into one buffer, which would copy every record
//! byte a consumer reads. Here the fixed fields go into small buffers and each partition's records
//! stay the `Bytes` slices the log handed out (borrowing its mapped segments), so a response is a
//! list of chunks written with vectored I/O. The byte layout is Kafka's FetchResponse v4-v16 and is
//! checked against the crate's encoder in the tests.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::wire::{put_array_len, put_string, put_unsigned_varint};

/// Lowest and highest FetchResponse versions this encoder writes.
pub const MIN_VERSION: i16 = 4;
pub const MAX_VERSION: i16 = 16;

#[derive(Debug, Clone, Default)]
pub struct FetchPartition {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Whole record batches, in offset order; `None` writes null records.
    pub records: Option<Vec<Bytes>>,
    /// The replica the consumer should fetch from instead (KIP-392, v11+); `None` writes -1.
    pub preferred_read_replica: Option<i32>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchTopic {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<FetchTopic>,
}

impl FetchResponse {
    /// Bytes of record data the response carries.
    pub fn records_size_bytes(&self) -> usize {
        self.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .flat_map(|p| p.records.iter().flatten())
            .map(|b| b.len())
            .sum()
    }
}

/// Encodes the whole response frame (size prefix, response header, body) as chunks.
pub fn encode_fetch_response(
    correlation_id: i32,
    version: i16,
    response: &FetchResponse,
) -> Vec<Bytes> {
    assert!(
        (MIN_VERSION..=MAX_VERSION).contains(&version),
        "FetchResponse v{version}"
    );
    let flexible = version >= 12;
    let mut out = Chunks {
        chunks: Vec::new(),
        buf: BytesMut::with_capacity(256),
    };
    out.buf.put_i32(correlation_id);
    if flexible {
        out.buf.put_u8(0); // response header v1: no tagged fields
    }
    out.buf.put_i32(response.throttle_time_ms);
    if version >= 7 {
        out.buf.put_i16(response.error_code);
        out.buf.put_i32(response.session_id);
    }
    put_array_len(&mut out.buf, flexible, response.topics.len());
    for topic in &response.topics {
        if version >= 13 {
            out.buf.put_slice(topic.topic_id.as_bytes());
        } else {
            put_string(&mut out.buf, flexible, &topic.name);
        }
        put_array_len(&mut out.buf, flexible, topic.partitions.len());
        for p in &topic.partitions {
            put_partition(&mut out, version, p);
        }
        if flexible {
            out.buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        out.buf.put_u8(0); // top-level tagged fields
    }
    out.finish()
}

/// A frame under construction: the chunks so far and the bytes after them.
struct Chunks {
    chunks: Vec<Bytes>,
    buf: BytesMut,
}

impl Chunks {
    /// Appends `slices` as chunks of their own, after what is buffered.
    fn push_shared(&mut self, slices: &[Bytes]) {
        self.chunks.push(self.buf.split().freeze());
        self.chunks
            .extend(slices.iter().filter(|s| !s.is_empty()).cloned());
    }

    /// The frame: its size prefix, then every chunk.
    fn finish(mut self) -> Vec<Bytes> {
        self.chunks.push(self.buf.freeze());
        let total: usize = self.chunks.iter().map(|c| c.len()).sum();
        let size = i32::try_from(total).expect("fetch response larger than 2 GiB");
        self.chunks
            .insert(0, Bytes::copy_from_slice(&size.to_be_bytes()));
        self.chunks
    }
}

/// One partition's fields; its record data is shared, not copied.
fn put_partition(out: &mut Chunks, version: i16, p: &FetchPartition) {
    let flexible = version >= 12;
    let buf = &mut out.buf;
    buf.put_i32(p.partition_index);
    buf.put_i16(p.error_code);
    buf.put_i64(p.high_watermark);
    buf.put_i64(p.last_stable_offset);
    if version >= 5 {
        buf.put_i64(p.log_start_offset);
    }
    put_array_len(buf, flexible, 0); // aborted transactions: none
    if version >= 11 {
        buf.put_i32(p.preferred_read_replica.unwrap_or(-1));
    }
    match &p.records {
        None if flexible => put_unsigned_varint(buf, 0),
        None => buf.put_i32(-1),
        Some(slices) => {
            let len: usize = slices.iter().map(|s| s.len()).sum();
            if flexible {
                put_unsigned_varint(buf, len as u32 + 1);
            } else {
                buf.put_i32(len as i32);
            }
            out.push_shared(slices);
        }
    }
    if flexible {
        out.buf.put_u8(0); // partition tagged fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response as kp;
    use kafka_protocol::messages::{ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn sample() -> FetchResponse {
        FetchResponse {
            throttle_time_ms: 3,
            error_code: 0,
            session_id: 0,
            topics: vec![FetchTopic {
                name: "orders".into(),
                topic_id: Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788),
                partitions: vec![
                    FetchPartition {
                        partition_index: 0,
                        error_code: 0,
                        high_watermark: 100,
                        last_stable_offset: 100,
                        log_start_offset: 5,
                        records: Some(vec![
                            Bytes::from_static(b"abc"),
                            Bytes::from_static(b"defgh"),
                        ]),
                        preferred_read_replica: None,
                    },
                    FetchPartition {
                        partition_index: 1,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        records: None,
                        preferred_read_replica: Some(3),
                    },
                ],
            }],
        }
    }

    fn via_crate(correlation_id: i32, version: i16, r: &FetchResponse) -> Vec<u8> {
        let mut resp = kp::FetchResponse::default();
        resp.throttle_time_ms = r.throttle_time_ms;
        resp.error_code = r.error_code;
        resp.session_id = r.session_id;
        for t in &r.topics {
            let mut ft = kp::FetchableTopicResponse::default();
            ft.topic = TopicName(StrBytes::from_string(t.name.clone()));
            ft.topic_id = t.topic_id;
            for p in &t.partitions {
                let mut pd = kp::PartitionData::default();
                pd.partition_index = p.partition_index;
                pd.error_code = p.error_code;
                pd.high_watermark = p.high_watermark;
                pd.last_stable_offset = p.last_stable_offset;
                pd.log_start_offset = p.log_start_offset;
                pd.aborted_transactions = Some(vec![]);
                // The crate refuses the field before v11, where it does not exist.
                let preferred = p.preferred_read_replica.filter(|_| version >= 11);
                pd.preferred_read_replica =
                    kafka_protocol::messages::BrokerId(preferred.unwrap_or(-1));
                pd.records = p.records.as_ref().map(|s| Bytes::from(s.concat()));
                ft.partitions.push(pd);
            }
            resp.responses.push(ft);
        }
        let mut body = BytesMut::new();
        let mut header = ResponseHeader::default();
        header.correlation_id = correlation_id;
        header
            .encode(&mut body, if version >= 12 { 1 } else { 0 })
            .unwrap();
        resp.encode(&mut body, version).unwrap();
        let mut framed = (body.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        framed
    }

    #[test]
    fn matches_kafka_protocol_encoding_at_every_version() {
        let r = sample();
        for v in MIN_VERSION..=MAX_VERSION {
            let ours: Vec<u8> = encode_fetch_response(9, v, &r).concat();
            assert_eq!(ours, via_crate(9, v, &r), "FetchResponse v{v}");
        }
    }

    #[test]
    fn record_slices_are_not_copied() {
        let r = sample();
        let chunks = encode_fetch_response(1, 12, &r);
        let first = &r.topics[0].partitions[0].records.as_ref().unwrap()[0];
        assert!(chunks.iter().any(|c| c.as_ptr() == first.as_ptr()));
        assert_eq!(r.records_size_bytes(), 8);
    }
}
