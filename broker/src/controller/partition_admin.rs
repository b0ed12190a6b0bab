//! The controller's partition changes asked for by admins: leader elections (ElectLeaders,
//! preferred or unclean, and the automatic preferred-leader rebalance) and reassignments
//! (AlterPartitionReassignments, ListPartitionReassignments).
//!
//! Each change is computed from the current image and committed as one batch; a batch refused
//! because a partition changed meanwhile (its partition epoch moved) is computed again from the
//! new image, a few times.
//!
//! Invariants: a preferred election only moves leadership to the first replica when it is in
//! sync and unfenced; an unclean one only when no in-sync replica is live; a reassignment's
//! target replicas are distinct registered brokers.

use std::collections::BTreeMap;

use quipu_protocol::ResponseError;

use super::{Controller, COMMIT_ATTEMPTS};
use crate::commit_log::CommitError;
use crate::election;
use crate::image::{ApplyError, MetadataImage, PartitionImage};
use crate::metadata::MetadataError;
use crate::metadata_log::record::MetadataRecord;
use crate::reassignment;

/// ElectLeaders' election types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    Preferred,
    Unclean,
}

/// One partition's outcome: none, or Kafka's error and its message.
pub type PartitionOutcome = Result<(), (ResponseError, String)>;

/// A topic's partitions and their outcomes.
pub type ReassignmentOutcome = Vec<(String, Vec<(i32, PartitionOutcome)>)>;

/// Which partitions a request names: by topic, the indexes.
pub type Named = Vec<(String, Vec<i32>)>;

/// AlterPartitionReassignments' entries: by topic, each partition's target replicas (`None`:
/// cancel).
pub type Targets = Vec<(String, Vec<(i32, Option<Vec<i32>>)>)>;

impl Controller {
    /// ElectLeaders: elects the preferred (or, unclean, any live) replica of each partition
    /// named, or of every partition when `None` (then only those that changed or failed are
    /// answered, as Kafka answers).
    pub fn elect_leaders(
        &self,
        kind: ElectionType,
        named: Option<Named>,
    ) -> Result<ReassignmentOutcome, MetadataError> {
        let all = named.is_none();
        self.change_partitions(|image| {
            let named = named.clone().unwrap_or_else(|| every_partition(image));
            let mut outcomes = Vec::new();
            let mut records = Vec::new();
            for (topic, partitions) in named {
                let mut results = Vec::new();
                for index in partitions {
                    let outcome = match partition_of(image, &topic, index) {
                        Err(e) => Err(e),
                        Ok(p) => elect(image, p, kind),
                    };
                    match outcome {
                        Ok(changed) => {
                            records.push(election::record(&topic, index, changed));
                            results.push((index, Ok(())));
                        }
                        Err((ResponseError::ElectionNotNeeded, _)) if all => {}
                        Err(e) => results.push((index, Err(e))),
                    }
                }
                if !results.is_empty() {
                    outcomes.push((topic, results));
                }
            }
            (records, outcomes)
        })
    }

    /// AlterPartitionReassignments: starts (or, with `None`, cancels) the reassignment of each
    /// partition named. `allow_rf_change` false refuses a target of another size.
    pub fn alter_reassignments(
        &self,
        entries: Targets,
        allow_rf_change: bool,
    ) -> Result<ReassignmentOutcome, MetadataError> {
        self.change_partitions(|image| {
            let fenced = |b: i32| image.broker(b).is_none_or(|r| r.fenced);
            let mut outcomes = Vec::new();
            let mut records = Vec::new();
            for (topic, partitions) in &entries {
                let mut results = Vec::new();
                for (index, target) in partitions {
                    let outcome = partition_of(image, topic, *index).and_then(|p| match target {
                        None if !p.is_reassigning() => Err((
                            ResponseError::NoReassignmentInProgress,
                            "no reassignment is in progress".to_string(),
                        )),
                        None => Ok(reassignment::cancel(p, &fenced)),
                        Some(target) => check_target(image, p, target, allow_rf_change)
                            .map(|()| reassignment::start(p, target, &fenced)),
                    });
                    match outcome {
                        Ok(changed) => {
                            records.push(election::record(topic, *index, changed));
                            results.push((*index, Ok(())));
                        }
                        Err(e) => results.push((*index, Err(e))),
                    }
                }
                outcomes.push((topic.clone(), results));
            }
            (records, outcomes)
        })
    }

    /// ListPartitionReassignments: the reassignments in progress among the partitions named
    /// (every partition when `None`): replicas, adding and removing.
    pub fn list_reassignments(
        &self,
        named: Option<Named>,
    ) -> BTreeMap<String, Vec<(i32, PartitionImage)>> {
        let image = self.metadata.image();
        let named = named.unwrap_or_else(|| every_partition(&image));
        let mut out: BTreeMap<String, Vec<(i32, PartitionImage)>> = BTreeMap::new();
        for (topic, partitions) in named {
            for index in partitions {
                if let Ok(p) = partition_of(&image, &topic, index) {
                    if p.is_reassigning() {
                        out.entry(topic.clone())
                            .or_default()
                            .push((index, p.clone()));
                    }
                }
            }
        }
        out
    }

    /// The automatic rebalance (`auto.leader.rebalance.enable`): preferred elections for the
    /// partitions of every broker whose share of partitions led by another broker is above
    /// `imbalance_percentage`. Returns how many partitions moved.
    pub fn rebalance_leaders(&self, imbalance_percentage: i32) -> Result<usize, MetadataError> {
        let image = self.metadata.image();
        let mut per_broker: BTreeMap<i32, (usize, Named)> = BTreeMap::new();
        for topic in image.topics() {
            for (index, p) in topic.partitions.iter().enumerate() {
                let Some(&preferred) = p.replicas.first() else {
                    continue;
                };
                let entry = per_broker.entry(preferred).or_default();
                entry.0 += 1;
                if p.leader != preferred {
                    push(&mut entry.1, &topic.name, index as i32);
                }
            }
        }
        let mut named: Named = Vec::new();
        for (total, off) in per_broker.into_values() {
            let misled: usize = off.iter().map(|(_, p)| p.len()).sum();
            if misled * 100 > total * imbalance_percentage.max(0) as usize {
                for (topic, partitions) in off {
                    for p in partitions {
                        push(&mut named, &topic, p);
                    }
                }
            }
        }
        if named.is_empty() {
            return Ok(0);
        }
        let outcomes = self.elect_leaders(ElectionType::Preferred, Some(named))?;
        Ok(outcomes
            .iter()
            .flat_map(|(_, p)| p.iter())
            .filter(|(_, o)| o.is_ok())
            .count())
    }

    /// Computes the records and outcomes from the current image with `change`, and commits the
    /// records; computed again if a partition changed meanwhile.
    fn change_partitions<T>(
        &self,
        change: impl Fn(&MetadataImage) -> (Vec<MetadataRecord>, T),
    ) -> Result<T, MetadataError> {
        let _change = self.changes.lock().expect("metadata change lock");
        let mut attempts = 0;
        loop {
            let image = self.metadata.image();
            let (records, outcome) = change(&image);
            if records.is_empty() {
                return Ok(outcome);
            }
            match self.log.commit(&records) {
                Ok(()) => return Ok(outcome),
                Err(CommitError::Refused(ApplyError::StalePartitionEpoch { .. }))
                    if attempts < COMMIT_ATTEMPTS =>
                {
                    attempts += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn push(named: &mut Named, topic: &str, partition: i32) {
    match named.iter_mut().find(|(t, _)| t == topic) {
        Some((_, p)) => p.push(partition),
        None => named.push((topic.to_string(), vec![partition])),
    }
}

fn every_partition(image: &MetadataImage) -> Named {
    image
        .topics()
        .map(|t| (t.name.to_string(), (0..t.partitions.len() as i32).collect()))
        .collect()
}

fn partition_of<'a>(
    image: &'a MetadataImage,
    topic: &str,
    index: i32,
) -> Result<&'a PartitionImage, (ResponseError, String)> {
    image
        .topic(topic)
        .and_then(|t| t.partitions.get(usize::try_from(index).ok()?))
        .ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition,
                format!("the partition {topic}-{index} does not exist"),
            )
        })
}

/// One partition's election, as Kafka's controller makes it.
fn elect(
    image: &MetadataImage,
    p: &PartitionImage,
    kind: ElectionType,
) -> Result<PartitionImage, (ResponseError, String)> {
    let live = |b: i32| image.broker(b).is_some_and(|r| !r.fenced);
    let leader = match kind {
        ElectionType::Preferred => {
            let preferred = p.replicas.first().copied().unwrap_or(-1);
            if p.leader == preferred {
                return Err((
                    ResponseError::ElectionNotNeeded,
                    "the preferred replica leads".into(),
                ));
            }
            if !p.isr.contains(&preferred) || !live(preferred) {
                return Err((
                    ResponseError::PreferredLeaderNotAvailable,
                    format!("the preferred replica {preferred} is not in sync or not live"),
                ));
            }
            preferred
        }
        ElectionType::Unclean => {
            if p.leader >= 0 && live(p.leader) {
                return Err((
                    ResponseError::ElectionNotNeeded,
                    "the partition has a live leader".into(),
                ));
            }
            let any = p.replicas.iter().copied().find(|b| live(*b));
            any.ok_or((
                ResponseError::EligibleLeadersNotAvailable,
                "no replica is live".into(),
            ))?
        }
    };
    let isr = match p.isr.contains(&leader) {
        true => p.isr.clone(),
        false => vec![leader],
    };
    Ok(PartitionImage {
        isr,
        leader,
        leader_epoch: p.leader_epoch + 1,
        partition_epoch: p.partition_epoch + 1,
        ..p.clone()
    })
}

/// A reassignment's target: distinct registered brokers, of the partition's size unless its
/// factor may change.
fn check_target(
    image: &MetadataImage,
    p: &PartitionImage,
    target: &[i32],
    allow_rf_change: bool,
) -> Result<(), (ResponseError, String)> {
    let invalid = |m: String| Err((ResponseError::InvalidReplicaAssignment, m));
    if target.is_empty() {
        return invalid("the target replica list is empty".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for &b in target {
        if !seen.insert(b) {
            return invalid(format!(
                "the target replicas name broker {b} more than once"
            ));
        }
        if image.broker(b).is_none() {
            return invalid(format!(
                "the target replicas name broker {b}, which is not registered"
            ));
        }
    }
    let size = reassignment::original_replicas(p).len();
    if !allow_rf_change && target.len() != size {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!("the target has {} replicas, the partition {size}, and its replication factor may not change", target.len()),
        ));
    }
    Ok(())
}
