//! The consumer's fetches: one Fetch request per leader for the partitions it leads, each in a
//! task of its own, and the reading of their answers into the subscription.
//!
//! Invariants: at most one fetch per leader is out at a time; an answer counts for a partition
//! only if the partition is still assigned, not paused, and at the offset the fetch asked from,
//! so a seek, a pause or a rebalance while a fetch is out never yields stale records.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use quipu_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use quipu_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use quipu_protocol::{ResponseError, StrBytes};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::config::ConsumerConfig;
use crate::error::{Error, Result};
use crate::topic_partition::TopicPartition;

use super::record::decode_records;
use super::subscription::Subscription;

/// Highest Fetch version used: v13 names topics by id.
const MAX_FETCH_VERSION: i16 = 12;

/// A fetch that came back: its leader, the partitions and offsets it asked, and the answer.
pub(super) struct FetchDone {
    pub leader: i32,
    pub asked: Vec<(TopicPartition, i64)>,
    pub response: Result<FetchResponse>,
}

/// What waiting for the fetches out gave.
pub(super) enum Waited {
    /// No fetch came back in time.
    Nothing,
    /// A fetch task ended without an answer (it was aborted).
    Lost,
    /// A fetch came back.
    Done(FetchDone),
}

#[derive(Default)]
pub(super) struct Fetcher {
    fetches: Vec<JoinHandle<FetchDone>>,
    /// Leaders with a fetch out.
    fetching: Vec<i32>,
    /// One name per topic, shared by all its records.
    topic_names: HashMap<String, Arc<str>>,
}

impl Fetcher {
    /// Starts a fetch for every leader that has fetchable partitions and no fetch out.
    pub async fn start(
        &mut self,
        cluster: &Arc<Cluster>,
        config: &ConsumerConfig,
        subscription: &Subscription,
    ) {
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for (tp, position) in subscription.to_fetch() {
            match cluster.leader(&tp.topic, tp.partition).await {
                Ok((leader, _)) => by_leader.entry(leader).or_default().push((tp, position)),
                Err(e) => tracing::debug!(%tp, %e, "no leader"),
            }
        }
        for (leader, asked) in by_leader {
            if self.fetching.contains(&leader) {
                continue;
            }
            self.fetching.push(leader);
            let request = fetch_request(config, &asked);
            let cluster = cluster.clone();
            self.fetches.push(tokio::spawn(async move {
                let response = async {
                    let conn = cluster.connection(leader).await?;
                    let version = conn.version_for::<FetchRequest>()?.min(MAX_FETCH_VERSION);
                    conn.send_version(&request, version).await
                }
                .await;
                FetchDone {
                    leader,
                    asked,
                    response,
                }
            }));
        }
    }

    /// Whether no fetch is out.
    pub fn is_idle(&self) -> bool {
        self.fetches.is_empty()
    }

    /// Waits up to `wait` for the first fetch to come back.
    pub async fn next(&mut self, wait: Duration) -> Waited {
        let any = futures_util::future::select_all(self.fetches.iter_mut());
        let (done, index) = match tokio::time::timeout(wait, any).await {
            Ok((done, index, _)) => (done, index),
            Err(_) => return Waited::Nothing,
        };
        self.fetches.swap_remove(index);
        let Ok(done) = done else {
            return Waited::Lost;
        };
        self.fetching.retain(|l| *l != done.leader);
        Waited::Done(done)
    }

    /// Reads the answer to a fetch of `asked` into `subscription`; returns the partitions whose
    /// offset was out of range, to be reset.
    pub fn read(
        &mut self,
        cluster: &Cluster,
        subscription: &mut Subscription,
        asked: &[(TopicPartition, i64)],
        response: FetchResponse,
    ) -> Result<Vec<TopicPartition>> {
        if let Some(e) = Error::broker(response.error_code, "fetch") {
            if e.is_retriable() {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        let mut records = Vec::new();
        let mut out_of_range = Vec::new();
        for t in response.responses {
            let topic = t.topic.0.to_string();
            let name = self
                .topic_names
                .entry(topic.clone())
                .or_insert_with(|| Arc::from(topic.as_str()))
                .clone();
            for p in t.partitions {
                let tp = TopicPartition::new(topic.clone(), p.partition_index);
                let Some((_, fetched_at)) = asked.iter().find(|(a, _)| *a == tp) else {
                    continue;
                };
                let Some(state) = subscription.fetched_state(&tp, *fetched_at) else {
                    continue; // no longer assigned, paused, or moved while the fetch was out
                };
                if let Some(e) = Error::broker(p.error_code, format!("fetch {tp}")) {
                    match e.broker_error() {
                        Some(ResponseError::OffsetOutOfRange) => out_of_range.push(tp),
                        _ if e.invalidates_metadata() => cluster.invalidate(&tp.topic),
                        _ if e.is_retriable() => {}
                        _ => return Err(e),
                    }
                    continue;
                }
                state.set_high_watermark(p.high_watermark);
                if let Some(bytes) = p.records {
                    let before = records.len();
                    let next =
                        decode_records(&name, tp.partition, &bytes, *fetched_at, &mut records)?;
                    state.fetched(records.len() - before, next);
                }
            }
        }
        subscription.buffer(records);
        Ok(out_of_range)
    }

    /// Gives up every fetch out.
    pub fn abort(&mut self) {
        self.fetches.drain(..).for_each(|h| h.abort());
        self.fetching.clear();
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.fetches.drain(..).for_each(|h| h.abort());
    }
}

/// The Fetch request of `asked` (sorted by topic), one entry per topic.
fn fetch_request(config: &ConsumerConfig, asked: &[(TopicPartition, i64)]) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (tp, offset) in asked {
        let partition = FetchPartition::default()
            .with_partition(tp.partition)
            .with_current_leader_epoch(-1)
            .with_fetch_offset(*offset)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(config.max_partition_fetch_bytes);
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == tp.topic => t.partitions.push(partition),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(config.fetch_max_wait_ms)
        .with_min_bytes(config.fetch_min_bytes)
        .with_max_bytes(config.fetch_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

#[cfg(test)]
mod tests {
    use quipu_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};

    use crate::config::ClientConfig;
    use crate::test_support::request_shape;

    use super::super::record::tests::batch;
    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    fn answer(partitions: Vec<PartitionData>) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions)])
    }

    fn data(partition: i32, offsets_from: i64, values: &[&str]) -> PartitionData {
        PartitionData::default()
            .with_partition_index(partition)
            .with_high_watermark(100)
            .with_records(Some(batch(offsets_from, 0, values).freeze()))
    }

    fn refused(partition: i32, error: ResponseError) -> PartitionData {
        PartitionData::default()
            .with_partition_index(partition)
            .with_error_code(error.code())
    }

    /// Partitions 0, 1 and 2 of `t`, all at offset 0, and the fetch that asked for them.
    fn at_zero() -> (Subscription, Vec<(TopicPartition, i64)>) {
        let mut subscription = Subscription::default();
        subscription.assign(vec![tp(0), tp(1), tp(2)]);
        for p in 0..3 {
            subscription.seek(&tp(p), 0).unwrap();
        }
        let asked = subscription.to_fetch();
        (subscription, asked)
    }

    fn cluster() -> Arc<Cluster> {
        Cluster::new(ClientConfig::new("localhost:1"), 1).unwrap()
    }

    #[test]
    fn a_fetch_asks_each_topic_once_from_each_partitions_offset() {
        let config = ConsumerConfig::new("localhost:1");
        let asked = [
            (TopicPartition::new("a", 0), 5),
            (TopicPartition::new("a", 1), 7),
            (TopicPartition::new("b", 0), 0),
        ];
        let request = fetch_request(&config, &asked);
        assert_eq!(request.max_bytes, config.fetch_max_bytes);
        assert_eq!(request.max_wait_ms, config.fetch_max_wait_ms);
        let shape = request_shape(
            &request.topics,
            |t| t.topic.0.as_str(),
            |t| &t.partitions,
            |p| (p.partition, p.fetch_offset),
        );
        assert_eq!(shape, [("a", vec![(0, 5), (1, 7)]), ("b", vec![(0, 0)])]);
    }

    #[test]
    fn an_answer_buffers_records_of_partitions_still_where_the_fetch_asked() {
        let (mut subscription, asked) = at_zero();
        // Partition 2 is moved while the fetch is out: its records are stale.
        subscription.seek(&tp(2), 50).unwrap();
        let response = answer(vec![
            data(0, 0, &["a", "b"]),
            refused(1, ResponseError::OffsetOutOfRange),
            data(2, 0, &["stale"]),
        ]);
        let mut fetcher = Fetcher::default();
        let out_of_range = fetcher
            .read(&cluster(), &mut subscription, &asked, response)
            .unwrap();
        assert_eq!(out_of_range, [tp(1)]);
        let records: Vec<(i32, i64)> = subscription
            .take_buffered(10)
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect();
        assert_eq!(records, [(0, 0), (0, 1)]);
        assert_eq!(subscription.position(&tp(0)), Some(2));
        assert_eq!(subscription.position(&tp(2)), Some(50));
        assert_eq!(subscription.high_watermark(&tp(0)), Some(100));
    }

    #[test]
    fn a_partition_error_no_retry_cures_fails_the_poll_and_a_retriable_one_is_skipped() {
        let (mut subscription, asked) = at_zero();
        let mut fetcher = Fetcher::default();
        let retriable = answer(vec![refused(0, ResponseError::NotLeaderOrFollower)]);
        assert_eq!(
            fetcher
                .read(&cluster(), &mut subscription, &asked, retriable)
                .unwrap(),
            []
        );
        let fatal = answer(vec![refused(0, ResponseError::TopicAuthorizationFailed)]);
        let e = fetcher
            .read(&cluster(), &mut subscription, &asked, fatal)
            .unwrap_err();
        assert_eq!(
            e.broker_error(),
            Some(ResponseError::TopicAuthorizationFailed)
        );
        let whole = answer(vec![data(0, 0, &["a"])])
            .with_error_code(ResponseError::NotLeaderOrFollower.code());
        fetcher
            .read(&cluster(), &mut subscription, &asked, whole)
            .unwrap();
        assert!(
            !subscription.has_buffered(),
            "a retriable top-level error reads nothing"
        );
    }
}
