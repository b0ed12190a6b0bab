//! A simulated broker's partition: what `crate::partition::Partition` does, over a [`SimLog`],
//! driving the real [`ReplicaSet`] the same way: leadership taken from committed states (a
//! stale one ignored, the log's stamp raised), the high watermark moved only forward as leader
//! (to what the replica set allows, after every append and follower fetch) and as follower (the
//! leader's, as far as this log reaches), clamped by a truncation; produces refused before the
//! append with too few in-sync replicas and acknowledged, as `wait_replicated` does, once the
//! high watermark passes them while this broker still leads in the epoch they were written in.
//!
//! A crash keeps the log (kill -9 keeps the page cache) and loses the rest: the replica set,
//! the waiting produces and fetches; the high watermark restarts at its checkpoint.
//!
//! Invariants: `0 <= high_watermark <= log_end_offset`; as leader the high watermark never
//! moves back; only a leader at its current epoch appends produced records; nothing written
//! under an epoch this broker no longer leads is acknowledged.

use quipu_protocol::ResponseError;

use super::log::{Entry, SimLog};
use super::messages::{Ack, NodeId};
use crate::image::PartitionImage;
use crate::replica_set::{IsrProposal, NotAReplica, ReplicaSet, Settled};

/// An acks=all produce waiting for the high watermark.
#[derive(Debug, Clone, Copy)]
pub struct Waiter {
    pub id: u64,
    pub client: NodeId,
    pub offset: i64,
    pub leader_epoch: i32,
    pub value: u64,
}

/// A follower's fetch parked at the leader until records come or its wait is over.
#[derive(Debug, Clone, Copy)]
pub struct Parked {
    pub id: u64,
    pub follower: NodeId,
    pub fetch_offset: i64,
}

pub struct SimPartition {
    pub index: usize,
    node: NodeId,
    /// Survives a crash.
    pub log: SimLog,
    leader: i32,
    leader_epoch: i32,
    isr_size: usize,
    high_watermark: i64,
    replicas: ReplicaSet,
    caught_up: bool,
    waiters: Vec<Waiter>,
    parked: Vec<Parked>,
}

impl SimPartition {
    pub fn new(index: usize, node: NodeId) -> Self {
        Self {
            index,
            node,
            log: SimLog::new(),
            leader: -1,
            leader_epoch: -1,
            isr_size: 0,
            high_watermark: 0,
            replicas: ReplicaSet::new(node),
            caught_up: false,
            waiters: Vec::new(),
            parked: Vec::new(),
        }
    }

    /// As `Partition::new` at a (re)start: the high watermark from its checkpoint (or the log
    /// start), everything else fresh, then the leadership `state` gives.
    pub fn open(&mut self, state: &PartitionImage, checkpoint: Option<i64>, now_ms: i64) {
        self.log.reopen();
        let end = self.log.log_end_offset();
        let fallback = if state.replicas.len() <= 1 { end } else { 0 };
        self.high_watermark = checkpoint.unwrap_or(fallback).clamp(0, end);
        self.leader = state.leader;
        self.leader_epoch = -1;
        self.isr_size = 0;
        self.replicas = ReplicaSet::new(self.node);
        self.caught_up = false;
        self.waiters.clear();
        self.parked.clear();
        self.set_leadership(state, now_ms);
    }

    /// As `Partition::set_leadership`.
    pub fn set_leadership(&mut self, state: &PartitionImage, now_ms: i64) {
        if state.leader_epoch < self.leader_epoch {
            return;
        }
        if state.leader_epoch > self.log.leader_epoch() {
            self.log.set_leader_epoch(state.leader_epoch);
        }
        let log_end_offset = self.log.log_end_offset();
        self.replicas.update(state, log_end_offset, now_ms);
        self.leader = state.leader;
        self.leader_epoch = state.leader_epoch;
        self.isr_size = state.isr.len();
        self.advance_high_watermark();
    }

    /// The broker's image caught up with its registration: its leadership is current.
    pub fn set_caught_up(&mut self) {
        self.caught_up = true;
    }

    pub fn is_leader(&self) -> bool {
        self.leader == self.node && self.caught_up
    }

    pub fn leader(&self) -> i32 {
        self.leader
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    fn advance_high_watermark(&mut self) {
        let Some(allowed) = self.replicas.high_watermark(self.log.log_end_offset()) else {
            return;
        };
        if allowed > self.high_watermark {
            self.high_watermark = allowed;
        }
        self.assert_bounds();
    }

    fn assert_bounds(&self) {
        assert!(
            (0..=self.log.log_end_offset()).contains(&self.high_watermark),
            "node {} partition {}: high watermark {} outside the log (end {})",
            self.node,
            self.index,
            self.high_watermark,
            self.log.log_end_offset()
        );
    }

    /// As `ReplicaManager::leader_partition`'s checks of a request's leader epoch (-1: none)
    /// and, for `leader_only`, of leadership.
    pub fn admit(&self, current_leader_epoch: i32, leader_only: bool) -> Result<(), ResponseError> {
        match current_leader_epoch {
            e if e >= 0 && e < self.leader_epoch => return Err(ResponseError::FencedLeaderEpoch),
            e if e > self.leader_epoch => return Err(ResponseError::UnknownLeaderEpoch),
            _ => {}
        }
        if leader_only && !self.is_leader() {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        Ok(())
    }

    /// An acks=all produce of `value`; the waiter once appended.
    pub fn produce(
        &mut self,
        (id, client, value): (u64, NodeId, u64),
        min_isr: usize,
    ) -> Result<Waiter, ResponseError> {
        self.admit(-1, true)?;
        if min_isr > self.isr_size {
            return Err(ResponseError::NotEnoughReplicas);
        }
        let offset = self.log.append_as_leader(value);
        let waiter = Waiter {
            id,
            client,
            offset,
            leader_epoch: self.leader_epoch,
            value,
        };
        self.waiters.push(waiter);
        self.advance_high_watermark();
        Ok(waiter)
    }

    /// As `Partition::record_follower_fetch`.
    pub fn record_follower_fetch(
        &mut self,
        replica: NodeId,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        let log_end_offset = self.log.log_end_offset();
        self.replicas
            .record_fetch(replica, fetch_offset, log_end_offset, now_ms)
            .map_err(|NotAReplica| ResponseError::NotLeaderOrFollower)?;
        self.advance_high_watermark();
        Ok(())
    }

    /// As `Partition::isr_proposal`.
    pub fn isr_proposal(
        &mut self,
        now_ms: i64,
        lag_max_ms: i64,
        eligible: &dyn Fn(i32) -> bool,
    ) -> Option<IsrProposal> {
        let high_watermark = self.high_watermark;
        self.replicas
            .isr_proposal(high_watermark, (now_ms, lag_max_ms), eligible)
    }

    /// As `Partition::settle_isr_proposal`.
    pub fn settle_isr_proposal(&mut self, settled: Settled) {
        self.replicas.settle_proposal(settled);
    }

    /// As `Partition::append_as_follower` and `Log::append_as_follower`: refused once leadership
    /// moved, or when the records do not continue this log (below its end, or an older epoch).
    pub fn append_as_follower(
        &mut self,
        entries: &[Entry],
        leader_epoch: i32,
    ) -> Result<(), String> {
        if self.leader_epoch != leader_epoch || self.leader == self.node {
            return Err(format!(
                "fetched in leader epoch {leader_epoch}, but the partition is now at {} led by {}",
                self.leader_epoch, self.leader
            ));
        }
        for e in entries {
            let log_end_offset = self.log.log_end_offset();
            if e.offset < log_end_offset {
                return Err(format!(
                    "offset {} below the log end {log_end_offset}",
                    e.offset
                ));
            }
            let latest = self.log.epoch_entries().last().map(|x| x.epoch);
            if latest.is_some_and(|latest| e.epoch < latest) {
                return Err(format!("epoch {} below the log's latest", e.epoch));
            }
            self.log.append(*e);
        }
        Ok(())
    }

    /// As `Partition::follow_high_watermark`.
    pub fn follow_high_watermark(&mut self, leader_high_watermark: i64) {
        let allowed = leader_high_watermark.min(self.log.log_end_offset());
        if allowed > self.high_watermark {
            self.high_watermark = allowed;
        }
        self.assert_bounds();
    }

    /// As `Partition::truncate`: the high watermark follows down.
    pub fn truncate(&mut self, offset: i64) {
        self.log.truncate_to(offset);
        self.high_watermark = self.high_watermark.clamp(0, self.log.log_end_offset());
    }

    /// The waiting produces settled now, as `Partition::wait_replicated` settles them: lost
    /// leadership or epoch, or committed (with enough in-sync replicas, or not).
    pub fn settle_waiters(&mut self, min_isr: usize) -> Vec<(Waiter, Result<(), ResponseError>)> {
        let mut settled = Vec::new();
        let (leading, epoch, hw, isr) = (
            self.is_leader(),
            self.leader_epoch,
            self.high_watermark,
            self.isr_size,
        );
        self.waiters.retain(|w| {
            let outcome = if !leading || epoch != w.leader_epoch {
                Some(Err(ResponseError::NotLeaderOrFollower))
            } else if hw > w.offset {
                Some(match isr < min_isr {
                    true => Err(ResponseError::NotEnoughReplicasAfterAppend),
                    false => Ok(()),
                })
            } else {
                None
            };
            match outcome {
                Some(o) => {
                    settled.push((*w, o));
                    false
                }
                None => true,
            }
        });
        settled
    }

    /// The waiter `id`, if it still waits (its timeout came).
    pub fn take_waiter(&mut self, id: u64) -> Option<Waiter> {
        let at = self.waiters.iter().position(|w| w.id == id)?;
        Some(self.waiters.remove(at))
    }

    pub fn park(&mut self, fetch: Parked) {
        self.parked.push(fetch);
    }

    /// Parked fetches to answer now: all of them after an append, or the one whose wait is over.
    pub fn unpark(&mut self, id: Option<u64>) -> Vec<Parked> {
        match id {
            None => std::mem::take(&mut self.parked),
            Some(id) => {
                let (done, kept) = self.parked.iter().partition(|p| p.id == id);
                self.parked = kept;
                done
            }
        }
    }

    /// An acknowledgement of `w` by this leader.
    pub fn ack(&self, w: &Waiter) -> Ack {
        Ack {
            partition: self.index,
            offset: w.offset,
            leader_epoch: w.leader_epoch,
            value: w.value,
            leader: self.node,
        }
    }
}
