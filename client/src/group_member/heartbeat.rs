//! A group member's heartbeat: a task that keeps the member in its generation while the
//! application polls, and what it shares with the consumer.
//!
//! The task only ever raises flags (`rejoin`, `lost`), which the consumer acts on in its next
//! poll; it stops at a rebalance, a fencing, a poll timeout or the consumer's drop. Past
//! `max.poll.interval.ms` without a poll, a dynamic member leaves the group (a static member
//! just stops heartbeating), as in the Java client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quipu_protocol::messages::{GroupId, HeartbeatRequest};
use quipu_protocol::StrBytes;

use crate::cluster::Cluster;
use crate::error::Error;

use super::membership::{fenced, leave_group, rejoin_error, Generation};

/// What the heartbeat task shares with the consumer.
#[derive(Clone)]
pub(crate) struct Liveness {
    /// Raised when the member must join again.
    pub rejoin: Arc<AtomicBool>,
    /// Raised when the member is out of its generation: its partitions are lost.
    pub lost: Arc<AtomicBool>,
    /// Raised when the consumer is dropped: the task stops.
    pub closed: Arc<AtomicBool>,
    /// When the application last polled, in ms since `created`.
    pub last_poll_ms: Arc<AtomicU64>,
    pub created: Instant,
}

impl Liveness {
    /// Milliseconds since the application last polled.
    pub fn since_poll_ms(&self) -> u64 {
        (self.created.elapsed().as_millis() as u64)
            .saturating_sub(self.last_poll_ms.load(Ordering::Acquire))
    }
}

/// Heartbeats for `generation` every `interval_ms` until a rebalance, fencing or the consumer's
/// drop; leaves the group (a dynamic member) when the application has not polled within
/// `max_poll_interval_ms`.
pub(crate) async fn heartbeat(
    cluster: Arc<Cluster>,
    group_id: String,
    instance_id: Option<String>,
    generation: Generation,
    interval_ms: u64,
    max_poll_interval_ms: u64,
    liveness: Liveness,
) {
    loop {
        if liveness.closed.load(Ordering::Acquire) {
            return;
        }
        let since_poll_ms = liveness.since_poll_ms();
        if since_poll_ms > max_poll_interval_ms {
            tracing::warn!(group = %group_id, since_poll_ms, max_poll_interval_ms,
                "no poll within max.poll.interval.ms: leaving the group");
            if instance_id.is_none() {
                if let Err(e) = leave_group(&cluster, &group_id, &generation.member_id).await {
                    tracing::debug!(group = %group_id, %e, "leave after poll timeout failed");
                }
            }
            liveness.lost.store(true, Ordering::Release);
            liveness.rejoin.store(true, Ordering::Release);
            return;
        }
        let until_poll_deadline_ms = max_poll_interval_ms + 1 - since_poll_ms;
        tokio::time::sleep(Duration::from_millis(
            interval_ms.min(until_poll_deadline_ms),
        ))
        .await;
        if liveness.since_poll_ms() > max_poll_interval_ms {
            continue; // leave rather than heartbeat
        }
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group_id.clone())))
            .with_generation_id(generation.generation_id)
            .with_member_id(StrBytes::from_string(generation.member_id.clone()))
            .with_group_instance_id(instance_id.clone().map(StrBytes::from_string));
        let result = match cluster.coordinator(&group_id).await {
            Ok(conn) => conn
                .send(&request)
                .await
                .and_then(|r| Error::broker(r.error_code, "heartbeat").map_or(Ok(()), Err)),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(e) if rejoin_error(&e) => {
                tracing::debug!(group = %group_id, %e, "rebalance: rejoin needed");
                if fenced(&e) {
                    liveness.lost.store(true, Ordering::Release);
                }
                liveness.rejoin.store(true, Ordering::Release);
                return;
            }
            Err(e) => {
                if e.invalidates_metadata() {
                    cluster.invalidate_coordinator(&group_id);
                }
                tracing::debug!(group = %group_id, %e, "heartbeat failed; retrying");
            }
        }
    }
}
