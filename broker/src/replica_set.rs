//! A partition's replicas as its leader tracks them, as Kafka's Partition and ReplicaState do:
//! the replicas and the in-sync set the metadata last committed, the change of the in-sync set
//! proposed and not yet committed, and for each follower where its log ends and when it last
//! caught up with the leader. From these come the high watermark the leader may publish and the
//! in-sync set it should propose (KIP-497: proposed with AlterPartition, acted on once committed).
//!
//! It is a plain state machine (no I/O, no clock of its own), driven by the partition under its
//! lock, so it can be tested, and later simulated, step by step.
//!
//! Invariants: a follower counts toward the high watermark only after it fetched from this
//! leader in its current epoch (its log end is unknown until then); the high watermark is the
//! smallest log end over the in-sync set, the proposed additions included and the proposed
//! removals still counted, so that a change in flight never lets it pass what a committed
//! in-sync replica holds; at most one change of the in-sync set is in flight, and it stays in
//! flight (counted) until a committed state ends it or the controller refused it as it stands:
//! an accepted change whose record has not reached this broker yet, or one whose answer was
//! lost, may already be committed.

use std::collections::BTreeMap;

use crate::image::PartitionImage;

/// A follower's log end before it has fetched from this leader.
const UNKNOWN_OFFSET: i64 = -1;

#[derive(Debug, Clone, Copy)]
struct Follower {
    log_end_offset: i64,
    last_caught_up_ms: i64,
    last_fetch_ms: i64,
    /// The leader's log end at this follower's previous fetch.
    last_fetch_leader_log_end_offset: i64,
}

impl Follower {
    fn unknown(last_caught_up_ms: i64) -> Self {
        Self {
            log_end_offset: UNKNOWN_OFFSET,
            last_caught_up_ms,
            last_fetch_ms: -1,
            last_fetch_leader_log_end_offset: UNKNOWN_OFFSET,
        }
    }
}

/// A change of the in-sync set to send with AlterPartition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// What the controller's answer says of the change in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Committed: it ends when its committed record reaches this broker.
    Applied,
    /// Refused as it stands, checked against the current partition epoch: it was not applied.
    Refused,
    /// No answer, or one that does not say whether this send or an earlier one was applied: it
    /// may be committed, so it stays counted and is sent again.
    Unknown,
}

/// The replica a fetch names is not one of the partition's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAReplica;

#[derive(Debug)]
pub struct ReplicaSet {
    local: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    leader_epoch: i32,
    partition_epoch: i32,
    leading: bool,
    /// The log end offset when this broker became leader in its current epoch.
    leader_epoch_start_offset: i64,
    followers: BTreeMap<i32, Follower>,
    pending: Option<Vec<i32>>,
    /// The change in flight is to be sent again (its outcome is unknown).
    resend: bool,
}

impl ReplicaSet {
    /// The set of a partition hosted on broker `local`, before any metadata.
    pub fn new(local: i32) -> Self {
        Self {
            local,
            replicas: Vec::new(),
            isr: Vec::new(),
            leader_epoch: -1,
            partition_epoch: -1,
            leading: false,
            leader_epoch_start_offset: 0,
            followers: BTreeMap::new(),
            pending: None,
            resend: false,
        }
    }

    /// Takes a committed partition state. Leadership taken anew (a new epoch) forgets what was
    /// known of the followers: each counts again only once it fetched at this epoch. A state
    /// older than the one held is ignored. Returns whether this broker now leads.
    pub fn update(&mut self, state: &PartitionImage, log_end_offset: i64, now_ms: i64) -> bool {
        let older =
            (state.leader_epoch, state.partition_epoch) < (self.leader_epoch, self.partition_epoch);
        if older {
            return self.leading;
        }
        let leading = state.leader == self.local;
        let new_term = leading && (!self.leading || state.leader_epoch != self.leader_epoch);
        if new_term {
            self.leader_epoch_start_offset = log_end_offset;
            self.followers.clear();
        }
        if leading {
            self.followers.retain(|id, _| state.replicas.contains(id));
            for &id in state.replicas.iter().filter(|id| **id != self.local) {
                let caught_up_ms = if state.isr.contains(&id) { now_ms } else { -1 };
                self.followers
                    .entry(id)
                    .or_insert_with(|| Follower::unknown(caught_up_ms));
            }
        } else {
            self.followers.clear();
        }
        if state.partition_epoch != self.partition_epoch || new_term {
            self.pending = None;
            self.resend = false;
        }
        self.replicas = state.replicas.clone();
        self.isr = state.isr.clone();
        self.leader_epoch = state.leader_epoch;
        self.partition_epoch = state.partition_epoch;
        self.leading = leading;
        leading
    }

    pub fn is_leading(&self) -> bool {
        self.leading
    }

    pub fn isr(&self) -> &[i32] {
        &self.isr
    }

    pub fn replicas(&self) -> &[i32] {
        &self.replicas
    }

    /// A follower's fetch at `fetch_offset` (its log end), when the leader's log ended at
    /// `leader_log_end_offset`: as Kafka's `updateFollowerFetchState`, it has caught up now if
    /// it reached the leader's end, or at its previous fetch if it reached the end the leader had
    /// then.
    pub fn record_fetch(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        leader_log_end_offset: i64,
        now_ms: i64,
    ) -> Result<(), NotAReplica> {
        let f = self.followers.get_mut(&replica).ok_or(NotAReplica)?;
        if fetch_offset >= leader_log_end_offset {
            f.last_caught_up_ms = now_ms;
        } else if fetch_offset >= f.last_fetch_leader_log_end_offset && f.last_fetch_ms >= 0 {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.last_fetch_leader_log_end_offset = leader_log_end_offset;
        f.last_fetch_ms = now_ms;
        f.log_end_offset = fetch_offset;
        Ok(())
    }

    /// The high watermark the in-sync set allows, `None` when not leading: the smallest log end
    /// over the committed in-sync replicas and the proposed additions.
    pub fn high_watermark(&self, local_log_end_offset: i64) -> Option<i64> {
        if !self.leading {
            return None;
        }
        let counted = self.isr.iter().chain(self.pending.iter().flatten());
        let end_of = |id: &i32| match *id == self.local {
            true => local_log_end_offset,
            false => self
                .followers
                .get(id)
                .map_or(UNKNOWN_OFFSET, |f| f.log_end_offset),
        };
        counted.map(end_of).min()
    }

    /// The in-sync set to propose, if it should change and no change is in flight: followers
    /// behind for longer than `lag_max_ms` leave; `eligible` replicas (registered, unfenced)
    /// that reached the high watermark and this epoch's start, fetching within `lag_max_ms`,
    /// join. The proposal is then in flight until a committed state (at another partition
    /// epoch) or a refusal ([`ReplicaSet::settle_proposal`]) ends it; while its outcome is
    /// unknown, it is what this returns again.
    pub fn isr_proposal(
        &mut self,
        high_watermark: i64,
        (now_ms, lag_max_ms): (i64, i64),
        eligible: &dyn Fn(i32) -> bool,
    ) -> Option<IsrProposal> {
        if !self.leading {
            return None;
        }
        if let Some(isr) = &self.pending {
            if !std::mem::take(&mut self.resend) {
                return None;
            }
            return Some(IsrProposal {
                leader_epoch: self.leader_epoch,
                partition_epoch: self.partition_epoch,
                isr: isr.clone(),
            });
        }
        let in_sync = |id: &i32| -> bool {
            if *id == self.local {
                return true;
            }
            let Some(f) = self.followers.get(id) else {
                return false;
            };
            let lagging = now_ms - f.last_caught_up_ms > lag_max_ms;
            if self.isr.contains(id) {
                return !lagging;
            }
            !lagging
                && eligible(*id)
                && f.log_end_offset >= high_watermark
                && f.log_end_offset >= self.leader_epoch_start_offset
        };
        let isr: Vec<i32> = self.replicas.iter().copied().filter(in_sync).collect();
        let mut current = self.isr.clone();
        current.sort_unstable();
        let mut next = isr.clone();
        next.sort_unstable();
        if current == next {
            return None;
        }
        self.pending = Some(isr.clone());
        Some(IsrProposal {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
        })
    }

    /// What the controller's answer (or its absence) says of the proposal in flight: refused,
    /// another may be made; applied, it waits for its committed record; unknown, it is sent
    /// again. Ending an applied change before its record arrives would let the high watermark
    /// pass what a replica the controller already counts in sync holds.
    pub fn settle_proposal(&mut self, settled: Settled) {
        if self.pending.is_none() {
            return;
        }
        match settled {
            Settled::Applied => self.resend = false,
            Settled::Refused => {
                self.pending = None;
                self.resend = false;
            }
            Settled::Unknown => self.resend = true,
        }
    }

    /// Followers' log ends, for DescribeQuorum-like views and tests.
    pub fn follower_log_end_offset(&self, replica: i32) -> Option<i64> {
        self.followers.get(&replica).map(|f| f.log_end_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: i32, leader_epoch: i32, isr: &[i32], partition_epoch: i32) -> PartitionImage {
        PartitionImage {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader,
            leader_epoch,
            partition_epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    #[test]
    fn the_high_watermark_waits_for_every_in_sync_follower_of_this_epoch() {
        let mut set = ReplicaSet::new(1);
        assert!(set.update(&state(1, 5, &[1, 2, 3], 0), 10, 0));
        // Nobody has fetched at this epoch: nothing may be committed past what was.
        assert_eq!(set.high_watermark(12), Some(UNKNOWN_OFFSET));
        set.record_fetch(2, 12, 12, 1).unwrap();
        assert_eq!(set.high_watermark(12), Some(UNKNOWN_OFFSET));
        set.record_fetch(3, 11, 12, 1).unwrap();
        assert_eq!(set.high_watermark(12), Some(11));
        assert_eq!(set.record_fetch(4, 0, 12, 1), Err(NotAReplica));
        // A new epoch forgets the followers again.
        set.update(&state(1, 6, &[1, 2, 3], 1), 12, 2);
        assert_eq!(set.high_watermark(12), Some(UNKNOWN_OFFSET));
        // A follower knows no high watermark of its own making.
        set.update(&state(2, 7, &[1, 2, 3], 2), 12, 3);
        assert_eq!(set.high_watermark(12), None);
        // An older state is ignored.
        assert!(!set.update(&state(1, 6, &[1, 2, 3], 1), 12, 4));
    }

    #[test]
    fn a_lagging_follower_leaves_and_a_caught_up_one_joins_one_change_at_a_time() {
        let mut set = ReplicaSet::new(1);
        set.update(&state(1, 1, &[1, 2, 3], 0), 0, 0);
        set.record_fetch(2, 100, 100, 1_000).unwrap();
        set.record_fetch(3, 50, 100, 1_000).unwrap();
        assert_eq!(set.isr_proposal(50, (20_000, 30_000), &|_| true), None);
        // Follower 3 never reaches the end; after the lag time it leaves.
        set.record_fetch(2, 100, 100, 31_000).unwrap();
        let shrink = set.isr_proposal(50, (31_001, 30_000), &|_| true).unwrap();
        assert_eq!(shrink.isr, vec![1, 2]);
        assert_eq!((shrink.leader_epoch, shrink.partition_epoch), (1, 0));
        assert_eq!(
            set.isr_proposal(50, (31_001, 30_000), &|_| true),
            None,
            "one change in flight"
        );
        // While the shrink is in flight, 3 still counts toward the high watermark.
        assert_eq!(set.high_watermark(100), Some(50));
        set.update(&state(1, 1, &[1, 2], 1), 100, 31_002);
        assert_eq!(set.high_watermark(100), Some(100));
        // 3 catches up to the high watermark and comes back.
        set.record_fetch(3, 100, 100, 32_000).unwrap();
        let expand = set.isr_proposal(100, (32_001, 30_000), &|_| true).unwrap();
        assert_eq!(expand.isr, vec![1, 2, 3]);
        set.settle_proposal(Settled::Refused);
        assert!(set.isr_proposal(100, (32_001, 30_000), &|_| true).is_some());
    }

    #[test]
    fn a_follower_that_reached_the_leaders_previous_end_caught_up_at_that_fetch() {
        let mut set = ReplicaSet::new(1);
        set.update(&state(1, 1, &[1, 2], 0), 0, 0);
        set.record_fetch(2, 10, 20, 1_000).unwrap();
        // At 25 s it reaches 20, the leader's end at its previous fetch (1 s).
        set.record_fetch(2, 20, 30, 25_000).unwrap();
        assert_eq!(set.isr_proposal(0, (30_500, 30_000), &|_| true), None);
        assert!(set.isr_proposal(0, (31_500, 30_000), &|_| true).is_some());
    }

    /// Found by the replication simulation (seed 15): the leader ended an expansion when the
    /// controller's answer came, before the committed record did, and published a high
    /// watermark past the log end of a replica the controller already had in sync (which an
    /// election could then pick, losing acknowledged records).
    #[test]
    fn an_accepted_or_unanswered_expansion_counts_until_its_record_arrives() {
        let mut set = ReplicaSet::new(1);
        set.update(&state(1, 1, &[1, 2], 0), 10, 0);
        set.record_fetch(2, 10, 10, 1_000).unwrap();
        set.record_fetch(3, 10, 10, 1_000).unwrap();
        let expand = set.isr_proposal(10, (1_001, 30_000), &|_| true).unwrap();
        assert_eq!(expand.isr, vec![1, 2, 3]);
        // Accepted: the committed record is on its way. Appends replicate to 2 only.
        set.settle_proposal(Settled::Applied);
        set.record_fetch(2, 12, 12, 1_100).unwrap();
        assert_eq!(
            set.high_watermark(12),
            Some(10),
            "3 is in sync at the controller"
        );
        assert_eq!(set.isr_proposal(10, (1_101, 30_000), &|_| true), None);
        // The answer of a change is lost: sent again, counted meanwhile.
        set.settle_proposal(Settled::Unknown);
        assert_eq!(
            set.isr_proposal(10, (1_102, 30_000), &|_| true),
            Some(expand)
        );
        assert_eq!(set.high_watermark(12), Some(10));
        // The record arrives: 3 counts as a member.
        set.update(&state(1, 1, &[1, 2, 3], 1), 12, 1_200);
        assert_eq!(set.high_watermark(12), Some(10));
        set.record_fetch(3, 12, 12, 1_300).unwrap();
        assert_eq!(set.high_watermark(12), Some(12));
    }
}
