//! A record's delivery: the [`DeliveryFuture`] `send` returns, resolved once the record's batch
//! is acknowledged (or failed for good), to the record's [`RecordMetadata`].
//!
//! Invariants: every record of a batch gets the batch's outcome; an acknowledged record's offset
//! is the batch's base offset plus its offset delta (-1 with `acks=0`), its timestamp the
//! broker's LogAppendTime when the topic uses it, else its CreateTime; a batch dropped without
//! an outcome resolves its records to [`Error::Closed`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{FutureExt, Shared};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Where an acknowledged record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic written to.
    pub topic: Arc<str>,
    /// Partition written to.
    pub partition: i32,
    /// -1 with `acks=0`: the broker does not say.
    pub offset: i64,
    /// The record's CreateTime, or the broker's LogAppendTime for such topics.
    pub timestamp_ms: i64,
}

/// A batch's acknowledgement: where the broker wrote its first record, and its LogAppendTime
/// (-1 for CreateTime topics).
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchAck {
    pub base_offset: i64,
    pub log_append_time_ms: i64,
}

pub(super) type BatchOutcome = Shared<oneshot::Receiver<Result<BatchAck>>>;

/// Resolves once the record's batch is acknowledged (or has failed for good).
#[must_use = "a delivery future does nothing unless awaited; the record is sent either way"]
pub struct DeliveryFuture {
    outcome: BatchOutcome,
    /// The batch's outcome once seen (a `Shared` must not be polled after it completed).
    seen: Option<Result<BatchAck>>,
    topic: Arc<str>,
    partition: i32,
    offset_delta: i32,
    timestamp_ms: i64,
}

impl DeliveryFuture {
    /// The future of the record at `offset_delta` in the batch whose outcome is `outcome`.
    pub(super) fn new(
        outcome: BatchOutcome,
        topic: Arc<str>,
        partition: i32,
        offset_delta: i32,
        timestamp_ms: i64,
    ) -> Self {
        Self {
            outcome,
            seen: None,
            topic,
            partition,
            offset_delta,
            timestamp_ms,
        }
    }

    /// Whether the record's outcome is known, without waiting for it.
    pub fn is_done(&mut self) -> bool {
        if self.seen.is_none() {
            if let Some(outcome) = (&mut self.outcome).now_or_never() {
                self.seen = Some(outcome.unwrap_or(Err(Error::Closed)));
            }
        }
        self.seen.is_some()
    }

    fn metadata(&self, ack: BatchAck) -> RecordMetadata {
        RecordMetadata {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: if ack.base_offset < 0 {
                -1
            } else {
                ack.base_offset + i64::from(self.offset_delta)
            },
            timestamp_ms: if ack.log_append_time_ms >= 0 {
                ack.log_append_time_ms
            } else {
                self.timestamp_ms
            },
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let outcome = match this.seen.take() {
            Some(o) => o,
            None => match this.outcome.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(o) => o.unwrap_or(Err(Error::Closed)),
            },
        };
        Poll::Ready(outcome.map(|ack| this.metadata(ack)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The future of the record at `offset_delta`, stamped 500, and its batch's reply.
    fn delivery(offset_delta: i32) -> (DeliveryFuture, oneshot::Sender<Result<BatchAck>>) {
        let (reply, rx) = oneshot::channel();
        let future = DeliveryFuture::new(rx.shared(), Arc::from("t"), 2, offset_delta, 500);
        (future, reply)
    }

    fn ack(base_offset: i64, log_append_time_ms: i64) -> Result<BatchAck> {
        Ok(BatchAck {
            base_offset,
            log_append_time_ms,
        })
    }

    #[test]
    fn a_record_resolves_at_its_batchs_base_offset_plus_its_delta() {
        let (mut future, reply) = delivery(3);
        assert!(!future.is_done());
        reply.send(ack(100, -1)).unwrap();
        assert!(future.is_done());
        let written = future.now_or_never().expect("done").unwrap();
        assert_eq!(
            written,
            RecordMetadata {
                topic: Arc::from("t"),
                partition: 2,
                offset: 103,
                timestamp_ms: 500,
            }
        );
    }

    #[test]
    fn log_append_time_replaces_the_create_time_and_acks_0_gives_no_offset() {
        let (future, reply) = delivery(1);
        reply.send(ack(10, 9_000)).unwrap();
        assert_eq!(future.now_or_never().unwrap().unwrap().timestamp_ms, 9_000);
        let (future, reply) = delivery(1);
        reply.send(ack(-1, -1)).unwrap();
        assert_eq!(future.now_or_never().unwrap().unwrap().offset, -1);
    }

    #[test]
    fn a_batch_failed_or_dropped_fails_its_records() {
        let (future, reply) = delivery(0);
        reply.send(Err(Error::Closed)).unwrap();
        assert!(matches!(future.now_or_never(), Some(Err(Error::Closed))));
        let (mut future, reply) = delivery(0);
        drop(reply);
        assert!(future.is_done());
        assert!(matches!(future.now_or_never(), Some(Err(Error::Closed))));
    }
}
