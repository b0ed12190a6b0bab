//! Partition leader elections and in-sync set changes the controller makes when brokers are
//! fenced or come back, as Kafka's PartitionChangeBuilder makes them.
//!
//! A fenced broker leaves every in-sync set it is in, except the last member of one: when all
//! in-sync replicas are gone, the set is kept as it was, and its members are the replicas
//! eligible to lead again (they held every committed record: KIP-966's eligible leader
//! replicas). A partition whose leader is fenced gets the first unfenced in-sync replica in
//! replica order, at the next leader epoch; with none, it has no leader (-1) until one of its
//! eligible replicas is back, unless `unclean.leader.election.enable` lets any live replica lead
//! (its log becoming the partition's).
//!
//! Invariants: a new leader comes from the in-sync set unless unclean election is enabled for
//! the topic; every change raises the partition epoch; a change of leader raises the leader
//! epoch; a function of the image alone, so every controller computes the same changes.

use crate::image::{MetadataImage, PartitionImage};
use crate::metadata_log::record::{MetadataRecord, PartitionRecord};

/// The topic config key that allows unclean elections.
const UNCLEAN_KEY: &str = "unclean.leader.election.enable";

/// The partition changes `broker_changes` (registrations and fencing) call for, applied after
/// them in the same batch. `unclean_default` is the broker's `unclean.leader.election.enable`.
pub fn after_broker_changes(
    image: &MetadataImage,
    broker_changes: &[MetadataRecord],
    unclean_default: bool,
) -> Vec<MetadataRecord> {
    let mut next = image.clone();
    if next.apply_all(broker_changes).is_err() {
        return Vec::new();
    }
    let fenced = |b: i32| next.broker(b).is_none_or(|x| x.fenced);
    let mut changes = Vec::new();
    for topic in next.topics() {
        let unclean = topic
            .configs
            .get(UNCLEAN_KEY)
            .map_or(unclean_default, |v| v.eq_ignore_ascii_case("true"));
        for (index, p) in topic.partitions.iter().enumerate() {
            if let Some(changed) = partition_change(p, &fenced, unclean) {
                changes.push(record(&topic.name, index as i32, changed));
            }
        }
    }
    changes
}

/// What `p` becomes with the brokers `fenced` says are gone, if anything changes.
pub fn partition_change(
    p: &PartitionImage,
    fenced: &impl Fn(i32) -> bool,
    unclean: bool,
) -> Option<PartitionImage> {
    let live_isr: Vec<i32> = p.isr.iter().copied().filter(|b| !fenced(*b)).collect();
    // The last in-sync replicas stay in the set (eligible to lead) when all are gone.
    let mut isr = match live_isr.is_empty() {
        true => p.isr.clone(),
        false => live_isr,
    };
    let keeps_leader = p.leader >= 0 && !fenced(p.leader) && isr.contains(&p.leader);
    let leader = if keeps_leader {
        p.leader
    } else if let Some(clean) = p
        .replicas
        .iter()
        .copied()
        .find(|b| isr.contains(b) && !fenced(*b))
    {
        clean
    } else if let Some(any) = p.replicas.iter().copied().find(|b| unclean && !fenced(*b)) {
        isr = vec![any];
        any
    } else {
        -1
    };
    if leader == p.leader && isr == p.isr {
        return None;
    }
    Some(PartitionImage {
        replicas: p.replicas.clone(),
        isr,
        leader,
        leader_epoch: p.leader_epoch + i32::from(leader != p.leader),
        partition_epoch: p.partition_epoch + 1,
        adding_replicas: p.adding_replicas.clone(),
        removing_replicas: p.removing_replicas.clone(),
    })
}

pub fn record(topic: &str, partition: i32, p: PartitionImage) -> MetadataRecord {
    MetadataRecord::Partition(PartitionRecord {
        topic: topic.to_string(),
        partition,
        replicas: p.replicas,
        isr: p.isr,
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        adding_replicas: p.adding_replicas,
        removing_replicas: p.removing_replicas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(leader: i32, isr: &[i32]) -> PartitionImage {
        PartitionImage {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader,
            leader_epoch: 4,
            partition_epoch: 9,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    #[test]
    fn a_fenced_leader_is_replaced_from_the_in_sync_replicas() {
        let gone = |b: i32| b == 1;
        let changed = partition_change(&p(1, &[1, 2, 3]), &gone, false).unwrap();
        assert_eq!((changed.leader, changed.isr.clone()), (2, vec![2, 3]));
        assert_eq!((changed.leader_epoch, changed.partition_epoch), (5, 10));
        // A fenced follower only leaves the in-sync set.
        let follower_gone = |b: i32| b == 3;
        let changed = partition_change(&p(1, &[1, 2, 3]), &follower_gone, false).unwrap();
        assert_eq!(
            (changed.leader, changed.isr, changed.leader_epoch),
            (1, vec![1, 2], 4)
        );
        assert_eq!(
            partition_change(&p(1, &[1, 2]), &follower_gone, false),
            None
        );
    }

    #[test]
    fn without_a_live_in_sync_replica_there_is_no_leader_unless_unclean() {
        let all_but_3 = |b: i32| b != 3;
        let offline = partition_change(&p(1, &[1, 2]), &all_but_3, false).unwrap();
        assert_eq!((offline.leader, offline.isr.clone()), (-1, vec![1, 2]));
        // One of the last in-sync replicas comes back: it leads.
        let only_2 = |b: i32| b != 2;
        let back = partition_change(&offline, &only_2, false).unwrap();
        assert_eq!((back.leader, back.isr, back.leader_epoch), (2, vec![2], 6));
        let unclean = partition_change(&p(1, &[1, 2]), &all_but_3, true).unwrap();
        assert_eq!((unclean.leader, unclean.isr), (3, vec![3]));
    }
}
