//! DescribeQuorum (API 55, KIP-595, KIP-836, KIP-853): the metadata quorum as its leader sees it
//! (leader, epoch, high watermark, each voter's log end and last fetch), for
//! `kafka-metadata-quorum --describe --status` and `--replication`. Any broker answers: a node
//! that does not lead asks the leader, as Kafka's brokers forward the request to the controller.
//!
//! Invariants: only `__cluster_metadata` partition 0 is described (another partition gets
//! UNKNOWN_TOPIC_OR_PARTITION, as in Kafka); with no leader known the partition gets
//! NOT_LEADER_OR_FOLLOWER. A single node is the one voter of its quorum.

use quipu_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use quipu_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use quipu_protocol::{ResponseError, StrBytes};

use crate::metadata::METADATA_DIR;
use crate::quorum::rpc::{QuorumDescription, VoterProgress};
use crate::request_context::RequestContext;

fn replica(v: &VoterProgress) -> ReplicaState {
    let mut r = ReplicaState::default();
    r.replica_id = BrokerId(v.node_id);
    r.log_end_offset = v.log_end_offset;
    r.last_fetch_timestamp = v.last_fetch_ms;
    r.last_caught_up_timestamp = v.last_caught_up_ms;
    r
}

fn partition(description: &Result<QuorumDescription, String>) -> PartitionData {
    let mut p = PartitionData::default();
    match description {
        Ok(d) => {
            p.leader_id = BrokerId(d.leader_id);
            p.leader_epoch = d.leader_epoch;
            p.high_watermark = d.high_watermark;
            p.current_voters = d.voters.iter().map(replica).collect();
            p.observers = d.observers.iter().map(replica).collect();
        }
        Err(why) => {
            p.error_code = ResponseError::NotLeaderOrFollower.code();
            p.error_message = Some(StrBytes::from_string(why.clone()));
            p.leader_id = BrokerId(-1);
            p.leader_epoch = -1;
        }
    }
    p
}

fn nodes(description: &QuorumDescription) -> Vec<Node> {
    description
        .listeners
        .iter()
        .map(|(id, host, port)| {
            let mut l = Listener::default();
            l.name = StrBytes::from_static_str("CONTROLLER");
            l.host = StrBytes::from_string(host.clone());
            l.port = *port;
            let mut n = Node::default();
            n.node_id = BrokerId(*id);
            n.listeners = vec![l];
            n
        })
        .collect()
}

async fn handle(
    ctx: &RequestContext,
    request: DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    let description = ctx.quorum.describe().await;
    let mut response = DescribeQuorumResponse::default();
    for t in request.topics {
        let mut topic = TopicData::default();
        for requested in t.partitions {
            let mut p = if &**t.topic_name == METADATA_DIR && requested.partition_index == 0 {
                partition(&description)
            } else {
                let mut p = PartitionData::default();
                p.error_code = ResponseError::UnknownTopicOrPartition.code();
                p
            };
            p.partition_index = requested.partition_index;
            topic.partitions.push(p);
        }
        topic.topic_name = t.topic_name;
        response.topics.push(topic);
    }
    // The voters' listeners are a field of v2 (KIP-853).
    if let (Ok(d), true) = (&description, version >= 2) {
        response.nodes = nodes(d);
    }
    response
}

super::handler::api!(
    DescribeQuorum,
    0..=2,
    DescribeQuorumRequest,
    |ctx, request, meta| {
        let version = meta.version;
        meta.reply(&handle(&ctx, request, version).await)
    }
);
