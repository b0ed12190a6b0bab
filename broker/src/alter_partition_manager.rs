//! The leader's side of in-sync set changes, as Kafka's AlterPartitionManager: every
//! `replica.lag.time.max.ms / 2` (at most every 250 ms) it asks each partition this broker leads
//! whether its in-sync set should change, and sends the proposals to the active controller in
//! one AlterPartition request. A partition acts on a change only once its committed record
//! reaches this broker's image (KIP-497). The answer only settles the proposal in flight: a
//! refusal ends it; an acceptance leaves it in flight (still counted toward the high watermark)
//! until the committed record arrives; no answer, or one that does not say whether it was
//! applied, has it sent again, as Kafka's AlterPartitionManager retries.
//!
//! Invariant: at most one proposal per partition is in flight, and it is ended only by its
//! committed state or by a refusal that proves it was not applied; nothing is proposed before
//! this broker is registered (it has no broker epoch to send).

use std::sync::Arc;
use std::time::Duration;

use crate::metadata::Metadata;
use crate::partition::Partition;
use crate::quorum::alter_partition::{self, Proposal};
use crate::quorum::Quorum;
use crate::replica_manager::ReplicaManager;
use crate::replica_set::Settled;
use quipu_protocol::ResponseError;

/// How long one AlterPartition may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until its task is aborted.
pub async fn run(
    replicas: Arc<ReplicaManager>,
    metadata: Arc<Metadata>,
    quorum: Quorum,
    lag_max_ms: i64,
) {
    let period = Duration::from_millis((lag_max_ms / 2).clamp(10, 250) as u64);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let broker_epoch = quorum.broker_epoch();
        if broker_epoch < 0 {
            continue;
        }
        let proposals = proposals(&replicas, &metadata, lag_max_ms);
        if proposals.is_empty() {
            continue;
        }
        let node_id = replicas.node_id();
        let sent: Vec<Proposal> = proposals.iter().map(|(_, p)| p.clone()).collect();
        let answer = match quorum.controller_address() {
            Some(address) => Some(
                alter_partition::send(&address, (node_id, broker_epoch), &sent, REQUEST_TIMEOUT)
                    .await,
            ),
            None => None,
        };
        let codes: Vec<Option<i16>> = match &answer {
            Some(Ok(Ok(codes))) => codes.iter().copied().map(Some).collect(),
            other => {
                crate::warn_limited!(answer = ?other, "AlterPartition not answered");
                vec![None; proposals.len()]
            }
        };
        for ((partition, p), code) in proposals.iter().zip(codes) {
            match code {
                Some(0) => {
                    tracing::info!(topic = partition.topic(), partition = partition.index(), isr = ?p.isr, "in-sync replicas changed")
                }
                Some(code) => {
                    tracing::info!(topic = partition.topic(), partition = partition.index(), isr = ?p.isr, code, "in-sync replica change refused")
                }
                None => {}
            }
            partition.settle_isr_proposal(settled(code));
        }
    }
}

/// What the answer `code` to one proposal (`None`: no answer) says of it. Only a refusal
/// checked against the partition epoch the proposal was made from, before anything was written,
/// proves that neither this send nor an earlier one of it was applied; INVALID_UPDATE_VERSION,
/// FENCED_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER (the partition moved, perhaps by an earlier send)
/// and a commit that failed do not.
pub(crate) fn settled(code: Option<i16>) -> Settled {
    let Some(code) = code else {
        return Settled::Unknown;
    };
    match ResponseError::try_from_code(code) {
        None => Settled::Applied,
        Some(
            ResponseError::IneligibleReplica
            | ResponseError::InvalidRequest
            | ResponseError::UnknownTopicId
            | ResponseError::UnknownTopicOrPartition,
        ) => Settled::Refused,
        Some(_) => Settled::Unknown,
    }
}

/// The changes of the in-sync sets this broker's partitions want now.
fn proposals(
    replicas: &ReplicaManager,
    metadata: &Metadata,
    lag_max_ms: i64,
) -> Vec<(Arc<Partition>, Proposal)> {
    let now_ms = crate::clock::now_ms();
    let image = metadata.image();
    let mut out = Vec::new();
    for partition in replicas.all() {
        if !partition.is_leader() || partition.is_offline() {
            continue;
        }
        let eligible = |b: i32| image.broker(b).is_some_and(|r| !r.fenced);
        let Some(change) = partition.isr_proposal(now_ms, lag_max_ms, &eligible) else {
            continue;
        };
        let Some(topic) = image.topic(partition.topic()) else {
            partition.settle_isr_proposal(Settled::Refused);
            continue;
        };
        let epoch_of = |b: i32| image.broker(b).map_or(-1, |r| r.broker_epoch);
        let proposal = Proposal {
            topic_id: topic.id,
            partition: partition.index(),
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            isr: change.isr.iter().map(|b| (*b, epoch_of(*b))).collect(),
        };
        out.push((partition, proposal));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_that_proves_nothing_was_applied_ends_a_proposal() {
        assert_eq!(settled(Some(0)), Settled::Applied);
        assert_eq!(settled(None), Settled::Unknown);
        let code = |e: ResponseError| Some(e.code());
        assert_eq!(
            settled(code(ResponseError::IneligibleReplica)),
            Settled::Refused
        );
        assert_eq!(
            settled(code(ResponseError::InvalidRequest)),
            Settled::Refused
        );
        // The partition epoch moved: perhaps by an earlier send of this very proposal.
        assert_eq!(
            settled(code(ResponseError::InvalidUpdateVersion)),
            Settled::Unknown
        );
        assert_eq!(
            settled(code(ResponseError::NotController)),
            Settled::Unknown
        );
    }
}
