//! Partition reassignment (KIP-455) as the controller records it: while it runs, the partition's
//! replicas are the target ones followed by those being removed, with the target replicas not
//! yet placed listed as adding and the ones leaving as removing. The new replicas fetch like any
//! follower; once every target replica is in sync, the reassignment completes: the replicas
//! become the target, the removed ones leave the in-sync set, and a leader being removed hands
//! over to an in-sync target replica.
//!
//! Invariants: a pure function of the partition's state (every controller computes the same);
//! the removed replicas leave only once every target replica holds the log (is in sync); every
//! change raises the partition epoch, and a change of leader the leader epoch.

use crate::image::PartitionImage;

/// The replicas before the reassignment in progress, if any, began.
pub fn original_replicas(p: &PartitionImage) -> Vec<i32> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| !p.adding_replicas.contains(r))
        .collect()
}

/// The replicas a reassignment in progress moves to (the current ones otherwise).
pub fn target_replicas(p: &PartitionImage) -> Vec<i32> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| !p.removing_replicas.contains(r))
        .collect()
}

/// `p` moving to `target` (replacing a reassignment in progress), completed at once when every
/// target replica is already in sync.
pub fn start(p: &PartitionImage, target: &[i32], fenced: &impl Fn(i32) -> bool) -> PartitionImage {
    let original = original_replicas(p);
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !original.contains(r))
        .collect();
    let removing: Vec<i32> = original
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let replicas: Vec<i32> = target.iter().chain(&removing).copied().collect();
    let started = PartitionImage {
        isr: p
            .isr
            .iter()
            .copied()
            .filter(|r| replicas.contains(r))
            .collect(),
        replicas,
        adding_replicas: adding,
        removing_replicas: removing,
        partition_epoch: p.partition_epoch + 1,
        ..p.clone()
    };
    complete_if_ready(started, fenced)
}

/// `p` back on its original replicas (a cancelled reassignment).
pub fn cancel(p: &PartitionImage, fenced: &impl Fn(i32) -> bool) -> PartitionImage {
    let original = original_replicas(p);
    let cancelled = PartitionImage {
        isr: p
            .isr
            .iter()
            .copied()
            .filter(|r| original.contains(r))
            .collect(),
        replicas: original,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        partition_epoch: p.partition_epoch + 1,
        ..p.clone()
    };
    keep_a_leader(cancelled, fenced)
}

/// `p` with its reassignment completed if every target replica is in sync; `p` otherwise.
pub fn complete_if_ready(p: PartitionImage, fenced: &impl Fn(i32) -> bool) -> PartitionImage {
    if !p.is_reassigning() {
        return p;
    }
    let target = target_replicas(&p);
    if !target.iter().all(|r| p.isr.contains(r)) {
        return p;
    }
    let completed = PartitionImage {
        isr: p
            .isr
            .iter()
            .copied()
            .filter(|r| target.contains(r))
            .collect(),
        replicas: target,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        ..p
    };
    keep_a_leader(completed, fenced)
}

/// A leader no longer among the replicas (or in sync) hands over to the first in-sync replica.
fn keep_a_leader(mut p: PartitionImage, fenced: &impl Fn(i32) -> bool) -> PartitionImage {
    if p.isr.contains(&p.leader) && !fenced(p.leader) {
        return p;
    }
    let next = p
        .replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && !fenced(*r))
        .unwrap_or(-1);
    if next != p.leader {
        p.leader = next;
        p.leader_epoch += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(replicas: &[i32]) -> PartitionImage {
        PartitionImage {
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: 2,
            partition_epoch: 5,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    #[test]
    fn a_move_adds_first_and_removes_once_the_new_replica_is_in_sync() {
        let none = |_: i32| false;
        let moving = start(&on(&[1, 2, 3]), &[2, 3, 4], &none);
        assert_eq!(moving.replicas, vec![2, 3, 4, 1]);
        assert_eq!(
            (
                moving.adding_replicas.clone(),
                moving.removing_replicas.clone()
            ),
            (vec![4], vec![1])
        );
        assert_eq!((moving.leader, moving.partition_epoch), (1, 6));
        assert_eq!(original_replicas(&moving), vec![2, 3, 1]);
        assert_eq!(target_replicas(&moving), vec![2, 3, 4]);
        // Not in sync yet: nothing changes.
        assert_eq!(complete_if_ready(moving.clone(), &none), moving);
        // Replica 4 joins the in-sync set: broker 1 leaves, and leadership moves off it.
        let caught_up = PartitionImage {
            isr: vec![1, 2, 3, 4],
            ..moving.clone()
        };
        let done = complete_if_ready(caught_up, &none);
        assert_eq!(
            (done.replicas.clone(), done.isr.clone()),
            (vec![2, 3, 4], vec![2, 3, 4])
        );
        assert!(!done.is_reassigning());
        assert_eq!((done.leader, done.leader_epoch), (2, 3));
        // Cancelled before it completes: back on 1, 2, 3.
        let back = cancel(&moving, &none);
        assert_eq!(
            (back.replicas.clone(), back.leader, back.is_reassigning()),
            (vec![2, 3, 1], 1, false)
        );
    }

    #[test]
    fn a_shrink_whose_target_is_in_sync_completes_at_once() {
        let done = start(&on(&[1, 2, 3]), &[2, 3], &|_| false);
        assert_eq!(
            (done.replicas.clone(), done.leader, done.is_reassigning()),
            (vec![2, 3], 2, false)
        );
    }
}
