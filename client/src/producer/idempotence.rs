//! An idempotent producer's identity and sequences: the producer id and epoch InitProducerId
//! gives (asked for once), each partition's next sequence, and the stamping of those into a
//! batch's header.
//!
//! Invariants: a batch's sequence is assigned once, when it is first sent, in the order of its
//! partition's queue, and sequences advance by the batch's record count, wrapping within
//! `0..=i32::MAX`; a batch sent again in the same epoch keeps its bytes (only a new epoch stamps
//! it again); until a partition has one acknowledged batch, it has one batch in flight, because
//! a broker that does not know the producer yet accepts any sequence.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use quipu_protocol::batch_builder::ProducerFields;
use quipu_protocol::messages::InitProducerIdRequest;
use quipu_protocol::record_batch::{RecordBatchView, RecordBatchViewMut};

use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// The producer id and epoch of an idempotent producer, once the broker gave them.
#[derive(Default)]
pub(super) struct ProducerIdentity {
    fields: Mutex<Option<ProducerFields>>,
}

impl ProducerIdentity {
    /// The producer id of an idempotent producer, asked for once.
    pub async fn fields(&self, cluster: &Arc<Cluster>) -> Result<ProducerFields> {
        if let Some(p) = *self.fields.lock().expect("producer id") {
            return Ok(p);
        }
        let conn = cluster.any_connection().await?;
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(i32::MAX)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
        let response = conn.send(&request).await?;
        if let Some(e) = Error::broker(response.error_code, "InitProducerId") {
            return Err(e);
        }
        let fields = ProducerFields {
            producer_id: response.producer_id.0,
            producer_epoch: response.producer_epoch,
            base_sequence: -1,
        };
        *self.fields.lock().expect("producer id") = Some(fields);
        Ok(fields)
    }

    /// Moves to the next epoch (a new producer id, asked for at the next send, once the epochs
    /// run out).
    pub fn next_epoch(&self) {
        let mut producer = self.fields.lock().expect("producer id");
        match producer.as_mut() {
            Some(p) if p.producer_epoch < i16::MAX => p.producer_epoch += 1,
            _ => *producer = None,
        }
        tracing::info!(producer = ?*producer, "a batch failed for good: sequences start again in a new epoch");
    }

    /// Whether `encoded` (a batch already sent) carries another epoch than the current one.
    pub fn stamped_in_another_epoch(&self, encoded: Option<&Bytes>) -> bool {
        let current = self
            .fields
            .lock()
            .expect("producer id")
            .map(|p| p.producer_epoch);
        let stamped = encoded
            .and_then(|b| RecordBatchView::parse(b).ok())
            .map(|v| v.producer_epoch());
        stamped.is_some() && stamped != current
    }
}

/// A partition's sequences.
#[derive(Debug, Default)]
pub(super) struct Sequencing {
    /// Whether a batch of this partition was acknowledged. Until then an idempotent producer
    /// sends one batch at a time: a broker that does not know the producer yet accepts any
    /// sequence, so a later batch must not arrive while the first may still fail.
    acked: bool,
    next_sequence: i32,
}

impl Sequencing {
    /// The base sequence of a batch of `record_count` records sent now.
    pub fn assign(&mut self, record_count: i32) -> i32 {
        debug_assert!(record_count > 0, "a batch has records");
        let base = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(record_count) & i32::MAX;
        base
    }

    /// A batch of the partition was acknowledged (`true`) or failed (`false`).
    pub fn batch_done(&mut self, acknowledged: bool) {
        self.acked |= acknowledged;
    }

    /// A new epoch: sequences start at 0 again, one batch at a time.
    pub fn restart(&mut self) {
        self.next_sequence = 0;
        self.acked = false;
    }

    /// How many batches of the partition may be in flight.
    pub fn in_flight_limit(&self, idempotent: bool, max_in_flight: usize) -> usize {
        if idempotent && !self.acked {
            1
        } else {
            max_in_flight
        }
    }
}

/// `batch` with the producer fields `fields` in its header: the same bytes when they are
/// there already (a retry in the same epoch), else stamped again (a new epoch).
pub(super) fn restamp(batch: Bytes, fields: ProducerFields) -> Result<Bytes> {
    let view = RecordBatchView::parse(&batch)
        .map_err(|e| Error::Protocol(format!("a queued batch does not parse: {e}")))?;
    if (
        view.producer_id(),
        view.producer_epoch(),
        view.base_sequence(),
    ) == (
        fields.producer_id,
        fields.producer_epoch,
        fields.base_sequence,
    ) {
        return Ok(batch);
    }
    let mut bytes = batch
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    RecordBatchViewMut::new(&mut bytes)
        .map_err(|e| Error::Protocol(format!("a queued batch does not parse: {e}")))?
        .set_producer_fields(
            fields.producer_id,
            fields.producer_epoch,
            fields.base_sequence,
        );
    Ok(bytes.freeze())
}

#[cfg(test)]
mod tests {
    use quipu_protocol::batch_builder::BatchBuilder;

    use super::*;

    fn fields(producer_epoch: i16, base_sequence: i32) -> ProducerFields {
        ProducerFields {
            producer_id: 7,
            producer_epoch,
            base_sequence,
        }
    }

    fn batch(producer: ProducerFields) -> Bytes {
        let mut builder = BatchBuilder::new(256);
        builder.append(
            0,
            None::<&[u8]>,
            Some(&b"v"[..]),
            &[] as &[(&str, Option<&[u8]>)],
        );
        builder.finish(0, producer).unwrap()
    }

    #[test]
    fn sequences_advance_by_record_count_and_wrap_within_i32() {
        let mut s = Sequencing::default();
        assert_eq!(s.assign(3), 0);
        assert_eq!(s.assign(2), 3);
        s.next_sequence = i32::MAX - 1;
        assert_eq!(s.assign(5), i32::MAX - 1);
        assert_eq!(s.assign(1), 3, "wrapped past i32::MAX to 0");
        s.restart();
        assert_eq!(s.assign(1), 0);
    }

    #[test]
    fn one_batch_in_flight_until_the_partition_has_an_acknowledgement() {
        let mut s = Sequencing::default();
        assert_eq!(s.in_flight_limit(true, 5), 1);
        assert_eq!(s.in_flight_limit(false, 5), 5);
        s.batch_done(false);
        assert_eq!(
            s.in_flight_limit(true, 5),
            1,
            "a failure is no acknowledgement"
        );
        s.batch_done(true);
        s.batch_done(false);
        assert_eq!(s.in_flight_limit(true, 5), 5);
        s.restart();
        assert_eq!(s.in_flight_limit(true, 5), 1, "a new epoch starts over");
    }

    #[test]
    fn a_retry_in_the_same_epoch_keeps_the_bytes_and_a_new_epoch_stamps_them_again() {
        let sent = batch(fields(1, 40));
        let same = restamp(sent.clone(), fields(1, 40)).unwrap();
        assert_eq!(same.as_ptr(), sent.as_ptr(), "the same bytes, not a copy");

        let stamped = restamp(sent, fields(2, 0)).unwrap();
        let view = RecordBatchView::parse(&stamped).unwrap();
        assert_eq!(
            (
                view.producer_id(),
                view.producer_epoch(),
                view.base_sequence()
            ),
            (7, 2, 0)
        );
        assert!(view.validate().is_ok(), "the CRC covers the new fields");
    }

    #[test]
    fn a_batch_is_from_another_epoch_only_once_stamped_with_one() {
        let identity = ProducerIdentity::default();
        *identity.fields.lock().unwrap() = Some(fields(3, -1));
        assert!(!identity.stamped_in_another_epoch(None), "never sent");
        assert!(!identity.stamped_in_another_epoch(Some(&batch(fields(3, 0)))));
        assert!(identity.stamped_in_another_epoch(Some(&batch(fields(2, 0)))));
        identity.next_epoch();
        assert!(identity.stamped_in_another_epoch(Some(&batch(fields(3, 0)))));
    }

    #[test]
    fn the_epoch_moves_on_until_it_runs_out_then_the_id_is_asked_again() {
        let identity = ProducerIdentity::default();
        *identity.fields.lock().unwrap() = Some(fields(i16::MAX - 1, -1));
        identity.next_epoch();
        assert_eq!(
            identity.fields.lock().unwrap().map(|f| f.producer_epoch),
            Some(i16::MAX)
        );
        identity.next_epoch();
        assert_eq!(*identity.fields.lock().unwrap(), None);
    }
}
