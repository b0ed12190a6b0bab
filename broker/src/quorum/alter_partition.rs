//! AlterPartition (56, KIP-497) on the controller listener: a partition leader's proposed change
//! of its in-sync set, as the active controller checks and commits it, and as a leader sends it.
//!
//! The controller answers in Kafka's order: NOT_CONTROLLER; STALE_BROKER_EPOCH for a sender not
//! at its registered epoch; then per partition UNKNOWN_TOPIC_ID or UNKNOWN_TOPIC_OR_PARTITION,
//! NOT_LEADER_OR_FOLLOWER from a broker that does not lead it, FENCED_LEADER_EPOCH for another
//! leader epoch, INVALID_UPDATE_VERSION for another partition epoch, INVALID_REQUEST for a set
//! without the leader or with a broker that is not a replica, INELIGIBLE_REPLICA for a joining
//! broker that is fenced or at another broker epoch. The accepted changes are committed as one
//! batch at the next partition epoch; the answer is the state committed.
//!
//! Invariants: a change takes effect only as a committed record, checked against the partition
//! epoch it was made from (by the image, again, when the batch applies); the leader acts on it
//! only once its own image has it.

use std::time::Duration;

use quipu_protocol::messages::alter_partition_request::{BrokerState, PartitionData, TopicData};
use quipu_protocol::messages::alter_partition_response::{
    PartitionData as PartitionAnswer, TopicData as TopicAnswer,
};
use quipu_protocol::messages::{AlterPartitionRequest, AlterPartitionResponse, ApiKey, BrokerId};
use quipu_protocol::ResponseError;

use super::{is_leader, Server};
use crate::image::{MetadataImage, PartitionImage, TopicImage};
use crate::metadata_log::record::MetadataRecord;

/// The version this controller answers up to and its leaders send.
pub const VERSION: i16 = 3;

/// A leader's proposal for one partition.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The new in-sync set, each with the broker epoch the leader knows it at.
    pub isr: Vec<(i32, i64)>,
}

impl Server {
    pub(super) async fn alter_partition(&self, r: AlterPartitionRequest) -> AlterPartitionResponse {
        if !is_leader(&self.raft) {
            let mut response = AlterPartitionResponse::default();
            response.error_code = ResponseError::NotController.code();
            return response;
        }
        let image = self.machine.applier().metadata().image();
        let (mut response, records) = decide(&image, &r);
        if !records.is_empty() {
            if let Err(e) = self.commit(records).await {
                refuse_uncommitted(&mut response, e);
            }
        }
        response
    }
}

/// The active controller's answer to `r` over `image`, and the records to commit for it (one
/// batch): everything AlterPartition does but the NOT_CONTROLLER check and the commit. Pure, so
/// that the replication simulation answers with the same code.
pub(crate) fn decide(
    image: &MetadataImage,
    r: &AlterPartitionRequest,
) -> (AlterPartitionResponse, Vec<MetadataRecord>) {
    let mut response = AlterPartitionResponse::default();
    let sender = image.broker(r.broker_id.0);
    if sender.is_none_or(|b| b.broker_epoch != r.broker_epoch) {
        response.error_code = ResponseError::StaleBrokerEpoch.code();
        return (response, Vec::new());
    }
    let mut records = Vec::new();
    for t in &r.topics {
        let mut answer = TopicAnswer::default();
        answer.topic_id = t.topic_id;
        let topic = image.topic_by_id(t.topic_id);
        for p in &t.partitions {
            let outcome = match topic {
                None => Err(ResponseError::UnknownTopicId),
                Some(topic) => check(image, topic, r.broker_id.0, p),
            };
            let mut pa = PartitionAnswer::default();
            pa.partition_index = p.partition_index;
            match outcome {
                Ok((changed, record)) => {
                    fill(&mut pa, &changed);
                    records.extend(record);
                }
                Err(e) => pa.error_code = e.code(),
            }
            answer.partitions.push(pa);
        }
        response.topics.push(answer);
    }
    (response, records)
}

/// The batch of `response`'s changes was refused whole (a partition changed meanwhile) or not
/// committed (`e`): nothing took, and every change it accepted says so.
pub(crate) fn refuse_uncommitted(response: &mut AlterPartitionResponse, e: ResponseError) {
    let code = match e {
        ResponseError::UnknownServerError => ResponseError::InvalidUpdateVersion,
        other => other,
    };
    for pa in response
        .topics
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
    {
        if pa.error_code == 0 {
            pa.error_code = code.code();
        }
    }
}

/// One partition's proposal checked against the image: the state it leads to and the record
/// that makes it (none when the set does not change).
fn check(
    image: &MetadataImage,
    topic: &TopicImage,
    sender: i32,
    p: &PartitionData,
) -> Result<(PartitionImage, Option<MetadataRecord>), ResponseError> {
    let current = usize::try_from(p.partition_index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    if current.leader != sender {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    if p.leader_epoch != current.leader_epoch {
        return Err(ResponseError::FencedLeaderEpoch);
    }
    if p.partition_epoch != current.partition_epoch {
        return Err(ResponseError::InvalidUpdateVersion);
    }
    let proposed: Vec<(i32, i64)> = match p.new_isr_with_epochs.is_empty() {
        false => p
            .new_isr_with_epochs
            .iter()
            .map(|b| (b.broker_id.0, b.broker_epoch))
            .collect(),
        true => p.new_isr.iter().map(|b| (b.0, -1)).collect(),
    };
    let isr: Vec<i32> = proposed.iter().map(|(b, _)| *b).collect();
    let valid = isr.contains(&sender) && isr.iter().all(|b| current.replicas.contains(b));
    if !valid {
        return Err(ResponseError::InvalidRequest);
    }
    for &(b, epoch) in &proposed {
        let joining = !current.isr.contains(&b);
        let registered = image.broker(b);
        let eligible =
            registered.is_some_and(|r| !r.fenced && (epoch < 0 || r.broker_epoch == epoch));
        if joining && !eligible {
            return Err(ResponseError::IneligibleReplica);
        }
    }
    if isr == current.isr {
        return Ok((current.clone(), None));
    }
    let changed = PartitionImage {
        isr,
        partition_epoch: current.partition_epoch + 1,
        ..current.clone()
    };
    // A reassignment whose target replicas are now all in sync completes in the same change.
    let fenced = |b: i32| image.broker(b).is_none_or(|r| r.fenced);
    let changed = crate::reassignment::complete_if_ready(changed, &fenced);
    let record = crate::election::record(&topic.name, p.partition_index, changed.clone());
    Ok((changed, Some(record)))
}

fn fill(pa: &mut PartitionAnswer, state: &PartitionImage) {
    pa.leader_id = BrokerId(state.leader);
    pa.leader_epoch = state.leader_epoch;
    pa.isr = state.isr.iter().map(|b| BrokerId(*b)).collect();
    pa.partition_epoch = state.partition_epoch;
}

/// Sends `proposals` from broker `(node_id, broker_epoch)` to the controller at `address`; the
/// error code of each proposal, in order, or the error of the whole request.
pub async fn send(
    address: &str,
    sender: (i32, i64),
    proposals: &[Proposal],
    timeout: Duration,
) -> std::io::Result<Result<Vec<i16>, ResponseError>> {
    let r = request(sender, proposals);
    let response: AlterPartitionResponse =
        super::broker_api::call(address, (ApiKey::AlterPartition, VERSION), &r, timeout).await?;
    Ok(codes(&response, proposals))
}

/// The AlterPartition request a leader sends for `proposals`, one topic entry per topic.
pub(crate) fn request(
    (node_id, broker_epoch): (i32, i64),
    proposals: &[Proposal],
) -> AlterPartitionRequest {
    let mut r = AlterPartitionRequest::default();
    r.broker_id = BrokerId(node_id);
    r.broker_epoch = broker_epoch;
    for p in proposals {
        let at = match r.topics.iter().position(|t| t.topic_id == p.topic_id) {
            Some(at) => at,
            None => {
                let mut t = TopicData::default();
                t.topic_id = p.topic_id;
                r.topics.push(t);
                r.topics.len() - 1
            }
        };
        let mut pd = PartitionData::default();
        pd.partition_index = p.partition;
        pd.leader_epoch = p.leader_epoch;
        pd.partition_epoch = p.partition_epoch;
        pd.new_isr_with_epochs = p
            .isr
            .iter()
            .map(|(b, e)| {
                let mut s = BrokerState::default();
                s.broker_id = BrokerId(*b);
                s.broker_epoch = *e;
                s
            })
            .collect();
        r.topics[at].partitions.push(pd);
    }
    r
}

/// The error code of each of `proposals` in `response`, in order, or the error of the whole.
pub(crate) fn codes(
    response: &AlterPartitionResponse,
    proposals: &[Proposal],
) -> Result<Vec<i16>, ResponseError> {
    if let Some(e) = ResponseError::try_from_code(response.error_code) {
        return Err(e);
    }
    let codes = proposals
        .iter()
        .map(|p| {
            response
                .topics
                .iter()
                .filter(|t| t.topic_id == p.topic_id)
                .flat_map(|t| t.partitions.iter())
                .find(|a| a.partition_index == p.partition)
                .map_or(ResponseError::UnknownServerError.code(), |a| a.error_code)
        })
        .collect();
    Ok(codes)
}
