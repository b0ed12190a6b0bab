//! A group rebalance as the application sees it: the [`RebalanceListener`] callbacks, and which
//! partitions a new assignment takes away or hands over.
//!
//! Invariants: eagerly, every owned partition is revoked (or lost) before the join and the whole
//! new assignment is announced after it; cooperatively, only the partitions the new assignment
//! takes away are revoked and only those not owned before are announced, so no partition is
//! both.

use std::collections::BTreeSet;

use crate::topic_partition::TopicPartition;

/// Called when a group rebalance takes partitions away or hands them over. With automatic
/// commits on, positions are committed before `on_partitions_revoked` runs.
pub trait RebalanceListener: Send {
    /// The member gives these partitions up (before it rejoins the group).
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
    /// The member lost these partitions without giving them up: it was fenced out of the group,
    /// or left it because `poll` was not called within `max.poll.interval.ms`. Other members may
    /// own them already, so nothing is committed. By default, the same as a revocation.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions);
    }
    /// The member now consumes these partitions (after the group's assignment).
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
}

/// What a cooperative member's new assignment changes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Handover {
    /// Owned, and not in the new assignment.
    pub revoked: Vec<TopicPartition>,
    /// In the new assignment, and not owned.
    pub added: Vec<TopicPartition>,
}

impl Handover {
    /// From the partitions `owned` to those `assigned`; each list keeps its input's order.
    pub fn between(owned: &[TopicPartition], assigned: &[TopicPartition]) -> Self {
        let owned_set: BTreeSet<&TopicPartition> = owned.iter().collect();
        let assigned_set: BTreeSet<&TopicPartition> = assigned.iter().collect();
        Self {
            revoked: owned
                .iter()
                .filter(|tp| !assigned_set.contains(tp))
                .cloned()
                .collect(),
            added: assigned
                .iter()
                .filter(|tp| !owned_set.contains(tp))
                .cloned()
                .collect(),
        }
    }
}

/// Tells `listener` that `owned` partitions are gone before a join: revoked, or lost when the
/// member was out of its generation. Nothing is said for no partitions.
pub(super) fn given_up(
    listener: Option<&mut (dyn RebalanceListener + 'static)>,
    owned: &[TopicPartition],
    lost: bool,
) {
    let Some(l) = listener else { return };
    match (owned.is_empty(), lost) {
        (true, _) => {}
        (false, false) => l.on_partitions_revoked(owned),
        (false, true) => l.on_partitions_lost(owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tps(partitions: &[i32]) -> Vec<TopicPartition> {
        partitions
            .iter()
            .map(|p| TopicPartition::new("t", *p))
            .collect()
    }

    /// What a listener was told, in order.
    #[derive(Default)]
    struct Told(Vec<(&'static str, Vec<TopicPartition>)>);

    impl RebalanceListener for Told {
        fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
            self.0.push(("revoked", partitions.to_vec()));
        }
        fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
            self.0.push(("assigned", partitions.to_vec()));
        }
    }

    #[test]
    fn a_handover_revokes_only_what_moves_away_and_adds_only_what_is_new() {
        let h = Handover::between(&tps(&[0, 1, 2, 3]), &tps(&[5, 1, 3, 4]));
        assert_eq!(h.revoked, tps(&[0, 2]));
        assert_eq!(h.added, tps(&[5, 4]));
        let same = Handover::between(&tps(&[0, 1]), &tps(&[1, 0]));
        assert!(same.revoked.is_empty() && same.added.is_empty());
    }

    #[test]
    fn partitions_given_up_are_revoked_or_lost_and_none_is_not_announced() {
        let mut told = Told::default();
        given_up(Some(&mut told), &tps(&[1]), false);
        given_up(Some(&mut told), &[], true);
        // on_partitions_lost defaults to a revocation.
        given_up(Some(&mut told), &tps(&[2]), true);
        given_up(None, &tps(&[3]), false);
        assert_eq!(told.0, [("revoked", tps(&[1])), ("revoked", tps(&[2]))]);
    }
}
