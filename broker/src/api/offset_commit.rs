//! OffsetCommit: a group's committed offsets, kept by the group coordinator in
//! `__consumer_offsets`, answered once the commit is replicated to the partition's in-sync
//! replicas. Partitions that do not exist get UNKNOWN_TOPIC_OR_PARTITION, as in Kafka.

use quipu_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use quipu_protocol::messages::*;

use crate::group::state::{NONE, UNKNOWN_TOPIC_OR_PARTITION};
use crate::group::CommitEntry;
use crate::request_context::RequestContext;

/// How long a commit waits to be replicated (Kafka's `offsets.commit.timeout.ms` default).
const OFFSET_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// OffsetCommit: partitions of topics or partitions that do not exist get
/// UNKNOWN_TOPIC_OR_PARTITION, as in Kafka, whatever the group says; the rest go to the
/// coordinator, which is not asked at all when nothing is left.
pub async fn offset_commit(
    ctx: &RequestContext,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let exists = |topic: &str, partition: i32| {
        ctx.metadata
            .topic(topic)
            .is_some_and(|t| (0..t.partition_count).contains(&partition))
    };
    let known: Vec<Vec<bool>> = request
        .topics
        .iter()
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| exists(&t.name.0, p.partition_index))
                .collect()
        })
        .collect();
    let entries = entries_of(&request, &known);
    let (mut errors, appended) = if entries.is_empty() {
        (Vec::new(), None)
    } else {
        ctx.groups.commit(
            &request.group_id.0,
            request.generation_id_or_member_epoch,
            &request.member_id,
            request.group_instance_id.as_deref(),
            entries,
            version,
        )
    };
    if let Some(appended) = appended {
        replicated(ctx, appended, &mut errors).await;
    }
    let mut errors = errors.into_iter();
    let mut response = OffsetCommitResponse::default();
    for (t, known) in request.topics.iter().zip(&known) {
        let mut rt = OffsetCommitResponseTopic::default();
        rt.name = t.name.clone();
        for (p, known) in t.partitions.iter().zip(known) {
            let mut rp = OffsetCommitResponsePartition::default();
            rp.partition_index = p.partition_index;
            rp.error_code = if *known {
                errors.next().unwrap_or(NONE)
            } else {
                UNKNOWN_TOPIC_OR_PARTITION
            };
            rt.partitions.push(rp);
        }
        response.topics.push(rt);
    }
    response
}

/// The entries of the partitions that exist (`known`), for the coordinator.
fn entries_of(request: &OffsetCommitRequest, known: &[Vec<bool>]) -> Vec<CommitEntry> {
    request
        .topics
        .iter()
        .zip(known)
        .flat_map(|(t, known)| {
            t.partitions
                .iter()
                .zip(known)
                .filter(|(_, known)| **known)
                .map(|(p, _)| CommitEntry {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
        })
        .collect()
}

/// Acknowledged once replicated, as Kafka's coordinator answers a commit once its append
/// completes with acks=all: the accepted entries get the coordinator's error otherwise.
async fn replicated(ctx: &RequestContext, appended: crate::group::Appended, errors: &mut [i16]) {
    let timeout = std::time::Duration::from_millis(OFFSET_COMMIT_TIMEOUT_MS);
    let min_insync = ctx
        .metadata
        .topic(crate::group::offsets_topic::TOPIC)
        .map_or(1, |t| t.config.min_insync_replicas);
    let code = appended.replicated(min_insync, timeout).await;
    if code != NONE {
        for e in errors.iter_mut().filter(|e| **e == NONE) {
            *e = code;
        }
    }
}

super::handler::api!(
    OffsetCommit,
    2..=9,
    OffsetCommitRequest,
    |ctx, request, meta| { meta.reply(&offset_commit(&ctx, request, meta.version).await) }
);
