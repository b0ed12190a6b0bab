//! Records as a fetch returns them: the batches of a partition's fetched bytes decoded into
//! [`ConsumerRecord`]s whose keys, values and header values are zero-copy [`Bytes`] slices of
//! the response (or, for a compressed batch, of its one decompressed buffer).
//!
//! Invariants: records come out in offset order, none below the offset the fetch asked from (a
//! batch may start before it); control batches yield nothing but move the next position past
//! them; a batch the fetch cut short ends the decoding without an error (the rest comes with the
//! next fetch), and any other damage is an error naming the partition.

use std::sync::Arc;

use bytes::Bytes;
use quipu_protocol::record::{records_section, RecordIter};
use quipu_protocol::record_batch::{BatchError, BatchIter};

use crate::error::{Error, Result};

/// A consumed record; key, value and header values share the fetch response's memory.
#[derive(Debug, Clone)]
pub struct ConsumerRecord {
    /// Topic name (shared by the records of a topic).
    pub topic: Arc<str>,
    /// Partition index.
    pub partition: i32,
    /// The record's offset in its partition.
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Whether `timestamp_ms` is the broker's LogAppendTime rather than the producer's CreateTime.
    pub log_append_time: bool,
    /// The key; a view into the fetched bytes, not a copy.
    pub key: Option<Bytes>,
    /// The value (`None` for a tombstone); a view into the fetched bytes, not a copy.
    pub value: Option<Bytes>,
    /// Headers in the order they were written; values are views into the fetched bytes.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The leader epoch the record was written in.
    pub leader_epoch: i32,
}

/// Appends the records of `bytes` (whole batches, maybe a truncated one at the end) at or after
/// `from` to `out`; returns the next position.
pub(super) fn decode_records(
    topic: &Arc<str>,
    partition: i32,
    bytes: &Bytes,
    from: i64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<i64> {
    let mut position = from;
    for batch in BatchIter::new(bytes) {
        let batch = match batch {
            Ok((_, b)) => b,
            // A fetch may end inside a batch: the rest comes with the next fetch.
            Err(BatchError::Truncated { .. }) => break,
            Err(e) => return Err(Error::Protocol(format!("{topic}-{partition}: {e}"))),
        };
        if batch.last_offset() < position {
            continue;
        }
        batch
            .validate()
            .map_err(|e| Error::Protocol(format!("{topic}-{partition}: {e}")))?;
        if batch.is_control() {
            position = batch.last_offset() + 1;
            continue;
        }
        let section = records_section(&batch)
            .map_err(|e| Error::Protocol(format!("{topic}-{partition}: {e}")))?;
        let section: Bytes = match section {
            std::borrow::Cow::Borrowed(s) => bytes.slice_ref(s),
            std::borrow::Cow::Owned(v) => Bytes::from(v),
        };
        let base_offset = batch.base_offset();
        let log_append_time = batch.is_log_append_time();
        for record in RecordIter::new(&section, batch.records_count()) {
            let r = record.map_err(|e| Error::Protocol(format!("{topic}-{partition}: {e}")))?;
            let offset = base_offset + i64::from(r.offset_delta);
            if offset < position {
                continue;
            }
            let headers = r
                .headers()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        v.map(|v| section.slice_ref(v)),
                    )
                })
                .collect();
            out.push(ConsumerRecord {
                topic: topic.clone(),
                partition,
                offset,
                timestamp_ms: if log_append_time {
                    batch.max_timestamp()
                } else {
                    batch.base_timestamp().saturating_add(r.timestamp_delta)
                },
                log_append_time,
                key: r.key.map(|k| section.slice_ref(k)),
                value: r.value.map(|v| section.slice_ref(v)),
                headers,
                leader_epoch: batch.partition_leader_epoch(),
            });
        }
        position = batch.last_offset() + 1;
    }
    Ok(position)
}

#[cfg(test)]
pub(super) mod tests {
    use bytes::BytesMut;
    use quipu_protocol::batch_builder::{BatchBuilder, ProducerFields};
    use quipu_protocol::record_batch::RecordBatchViewMut;

    use super::*;

    /// A batch of `values` (keys `k<offset>`) at `base_offset`, stamped from `timestamp_ms`.
    pub(in crate::consumer) fn batch(
        base_offset: i64,
        timestamp_ms: i64,
        values: &[&str],
    ) -> BytesMut {
        let mut builder = BatchBuilder::new(1024);
        for (i, v) in values.iter().enumerate() {
            let key = format!("k{}", base_offset + i as i64);
            let headers = [("h", Some(v.as_bytes()))];
            builder.append(
                timestamp_ms + i as i64,
                Some(key.as_bytes()),
                Some(v.as_bytes()),
                &headers,
            );
        }
        let mut bytes = BytesMut::from(&builder.finish(0, ProducerFields::NONE).unwrap()[..]);
        RecordBatchViewMut::new(&mut bytes)
            .unwrap()
            .set_base_offset(base_offset);
        bytes
    }

    fn decode(bytes: &Bytes, from: i64) -> Result<(Vec<ConsumerRecord>, i64)> {
        let mut out = Vec::new();
        let next = decode_records(&Arc::from("t"), 3, bytes, from, &mut out)?;
        Ok((out, next))
    }

    #[test]
    fn records_below_the_fetch_offset_are_skipped_and_the_rest_are_slices_of_the_response() {
        let mut fetched = batch(10, 1_000, &["a", "b", "c"]);
        fetched.extend_from_slice(&batch(13, 2_000, &["d"]));
        let fetched = fetched.freeze();
        let (records, next) = decode(&fetched, 11).unwrap();
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [11, 12, 13]);
        assert_eq!(next, 14);
        let r = &records[0];
        assert_eq!((&*r.topic, r.partition), ("t", 3));
        assert_eq!(r.key.as_deref(), Some(&b"k11"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"b"[..]));
        assert_eq!(
            r.headers,
            [("h".to_string(), Some(Bytes::from_static(b"b")))]
        );
        assert_eq!(r.timestamp_ms, 1_001);
        assert!(!r.log_append_time);
        let response = fetched.as_ptr_range();
        for r in &records {
            let value = r.value.as_ref().unwrap();
            assert!(response.contains(&value.as_ptr()), "a view, not a copy");
        }
    }

    #[test]
    fn a_batch_cut_short_ends_the_records_and_the_next_fetch_starts_at_it() {
        let mut fetched = batch(0, 0, &["a", "b"]);
        let second = batch(2, 0, &["c", "d"]);
        fetched.extend_from_slice(&second[..second.len() - 3]);
        let (records, next) = decode(&fetched.freeze(), 0).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(next, 2);
    }

    #[test]
    fn a_fetch_from_past_every_batch_returns_nothing_and_keeps_its_offset() {
        let (records, next) = decode(&batch(0, 0, &["a", "b"]).freeze(), 5).unwrap();
        assert!(records.is_empty());
        assert_eq!(next, 5);
    }

    #[test]
    fn log_append_time_batches_stamp_every_record_with_the_broker_time() {
        let mut fetched = batch(0, 100, &["a", "b"]);
        RecordBatchViewMut::new(&mut fetched)
            .unwrap()
            .set_log_append_time(9_999);
        let (records, _) = decode(&fetched.freeze(), 0).unwrap();
        assert!(records
            .iter()
            .all(|r| r.log_append_time && r.timestamp_ms == 9_999));
    }

    #[test]
    fn a_damaged_batch_is_an_error_naming_the_partition() {
        let mut fetched = batch(0, 0, &["value"]);
        let last = fetched.len() - 1;
        fetched[last] ^= 0xff;
        let e = decode(&fetched.freeze(), 0).unwrap_err();
        assert!(
            matches!(&e, Error::Protocol(m) if m.starts_with("t-3")),
            "{e}"
        );
    }
}
