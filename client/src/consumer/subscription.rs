//! What a consumer consumes and where it stands: the subscribed topics or the assigned
//! partitions, each partition's position, pause flag and high watermark, and the records
//! fetched but not returned yet.
//!
//! Invariants:
//! - A partition's position is the offset of the next record `poll` returns; it moves only by
//!   records returned, or by an explicit seek or reset (a committed offset, the reset policy).
//! - A partition's buffered records are exactly those from its position up to its `fetched_to`
//!   offset, in order; a seek, a pause or a reassignment drops them, and a partition with
//!   buffered records is not fetched again until they are returned.
//! - A poll takes at most `max.poll.records` of the buffer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::topic_partition::TopicPartition;

use super::record::ConsumerRecord;

#[derive(Debug, Clone, Default)]
pub(super) struct PartitionState {
    /// `None` until resolved from the committed offset or the reset policy.
    position: Option<i64>,
    paused: bool,
    high_watermark: i64,
    /// Records of this partition in the consumer's buffer.
    buffered: usize,
    /// While records are buffered: the offset after the last one fetched.
    fetched_to: Option<i64>,
}

impl PartitionState {
    /// Where the next fetch of this partition starts.
    fn fetch_offset(&self) -> Option<i64> {
        self.fetched_to.or(self.position)
    }

    /// The high watermark a fetch reported.
    pub(super) fn set_high_watermark(&mut self, high_watermark: i64) {
        self.high_watermark = high_watermark;
    }

    /// A fetch brought `records` more records (now in the buffer) and the partition goes on at
    /// `next`.
    pub(super) fn fetched(&mut self, records: usize, next: i64) {
        debug_assert!(
            self.fetch_offset().is_none_or(|from| next >= from),
            "a fetch never moves a partition back"
        );
        self.buffered += records;
        if self.buffered == 0 {
            self.position = Some(next); // only control batches, or nothing
        } else {
            self.fetched_to = Some(next);
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Subscription {
    /// The subscribed topics, sorted, once each; `None` for partitions assigned directly.
    topics: Option<Vec<String>>,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    /// Fetched records not returned yet, in fetch order.
    buffer: VecDeque<ConsumerRecord>,
}

impl Subscription {
    /// Exactly `partitions`, without a subscription.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        self.topics = None;
        self.set_assignment(partitions);
    }

    /// Subscribes to `topics`; the partitions come from the group.
    pub fn subscribe(&mut self, topics: &[&str]) {
        let mut topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        self.topics = Some(topics);
    }

    /// The subscribed topics, when the partitions come from a group.
    pub fn topics(&self) -> Option<&[String]> {
        self.topics.as_deref()
    }

    /// The partitions currently assigned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// Whether no partition is assigned.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Assigns `partitions`; those assigned before keep their state, the others' buffered
    /// records are dropped.
    pub fn set_assignment(&mut self, partitions: Vec<TopicPartition>) {
        let mut next = BTreeMap::new();
        for tp in partitions {
            let state = self.partitions.remove(&tp).unwrap_or_default();
            next.insert(tp, state);
        }
        if !self.partitions.is_empty() {
            // Records of partitions no longer assigned are dropped.
            self.buffer
                .retain(|r| next.contains_key(&TopicPartition::new(&*r.topic, r.partition)));
        }
        self.partitions = next;
    }

    /// Gives every partition up, with its buffered records.
    pub fn revoke_all(&mut self) {
        self.partitions.clear();
        self.buffer.clear();
    }

    /// Moves `tp`'s position to `offset` (a seek, a reset, a committed offset), dropping what
    /// was buffered for it.
    pub fn set_position(&mut self, tp: &TopicPartition, offset: Option<i64>) -> Result<()> {
        self.state(tp)?.position = offset;
        self.drop_buffered(tp);
        Ok(())
    }

    /// The next `poll` returns `tp`'s records from `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(Error::InvalidArgument(format!(
                "seek to negative offset {offset}"
            )));
        }
        self.set_position(tp, Some(offset))
    }

    /// The offset of the next record `poll` returns for `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions.get(tp).and_then(|s| s.position)
    }

    /// The high watermark of `tp` as of the last fetch (for lag).
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions
            .get(tp)
            .map(|s| s.high_watermark)
            .filter(|h| *h >= 0)
    }

    /// The known positions of the assigned partitions.
    pub fn positions(&self) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter_map(|(tp, s)| s.position.map(|p| (tp.clone(), p)))
            .collect()
    }

    /// The known positions of `partitions`.
    pub fn positions_of(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        partitions
            .iter()
            .filter_map(|tp| self.position(tp).map(|p| (tp.clone(), p)))
            .collect()
    }

    /// The assigned partitions without a position yet.
    pub fn missing_positions(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, s)| s.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// An error unless every one of `partitions` is assigned.
    pub fn check_assigned(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            self.state(tp)?;
        }
        Ok(())
    }

    /// Stops returning records of `partitions` until they are resumed.
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            self.state(tp)?.paused = true;
            self.drop_buffered(tp);
        }
        Ok(())
    }

    /// Returns records of `partitions` again.
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            self.state(tp)?.paused = false;
        }
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The partitions to fetch and the offset to fetch each from: known positions, not paused,
    /// nothing buffered.
    pub fn to_fetch(&self) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter(|(_, s)| !s.paused && s.buffered == 0)
            .filter_map(|(tp, s)| s.fetch_offset().map(|offset| (tp.clone(), offset)))
            .collect()
    }

    /// The state of `tp` for a fetch of it from `fetched_at` that came back, if the fetch still
    /// counts: `tp` is assigned, not paused, and has not moved since.
    pub fn fetched_state(
        &mut self,
        tp: &TopicPartition,
        fetched_at: i64,
    ) -> Option<&mut PartitionState> {
        // No longer assigned, paused, or moved while the fetch was out: the fetch is stale.
        self.partitions
            .get_mut(tp)
            .filter(|s| !s.paused && s.fetch_offset() == Some(fetched_at))
    }

    /// Records fetched (counted in their partitions' states by [`PartitionState::fetched`]).
    pub fn buffer(&mut self, records: Vec<ConsumerRecord>) {
        self.buffer.extend(records);
    }

    /// Whether fetched records wait to be returned.
    pub fn has_buffered(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Up to `max_records` buffered records; positions move past them.
    pub fn take_buffered(&mut self, max_records: usize) -> Vec<ConsumerRecord> {
        let n = self.buffer.len().min(max_records);
        let out: Vec<ConsumerRecord> = self.buffer.drain(..n).collect();
        // Records come in runs of one partition: one position update per run.
        let mut run_start = 0;
        while run_start < out.len() {
            let first = &out[run_start];
            let run_len = out[run_start..]
                .iter()
                .take_while(|r| {
                    r.partition == first.partition && Arc::ptr_eq(&r.topic, &first.topic)
                })
                .count();
            let last = &out[run_start + run_len - 1];
            let tp = TopicPartition::new(&*first.topic, first.partition);
            let state = self
                .partitions
                .get_mut(&tp)
                .expect("buffered records belong to assigned partitions");
            assert!(state.buffered >= run_len, "buffer count of {tp}");
            debug_assert!(
                state.position.is_none_or(|p| first.offset >= p),
                "buffered records of {tp} start at its position"
            );
            state.buffered -= run_len;
            state.position = Some(last.offset + 1);
            if state.buffered == 0 {
                // Past whatever the fetch skipped after the last record (control batches).
                state.position = state.fetched_to.take().max(state.position);
            }
            run_start += run_len;
        }
        out
    }

    fn drop_buffered(&mut self, tp: &TopicPartition) {
        let Some(state) = self.partitions.get_mut(tp) else {
            return;
        };
        state.fetched_to = None;
        if std::mem::take(&mut state.buffered) > 0 {
            self.buffer
                .retain(|r| !(r.partition == tp.partition && *r.topic == *tp.topic));
        }
    }

    fn state(&mut self, tp: &TopicPartition) -> Result<&mut PartitionState> {
        self.partitions
            .get_mut(tp)
            .ok_or_else(|| Error::InvalidArgument(format!("partition {tp} is not assigned")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    fn record(topic: &Arc<str>, partition: i32, offset: i64) -> ConsumerRecord {
        ConsumerRecord {
            topic: topic.clone(),
            partition,
            offset,
            timestamp_ms: 0,
            log_append_time: false,
            key: None,
            value: None,
            headers: Vec::new(),
            leader_epoch: 0,
        }
    }

    /// A fetch of `tp(partition)` from `from` that brought `offsets` and goes on at `next`.
    fn fetch(
        s: &mut Subscription,
        topic: &Arc<str>,
        partition: i32,
        from: i64,
        offsets: &[i64],
        next: i64,
    ) {
        let state = s.fetched_state(&tp(partition), from).expect("fetch counts");
        state.set_high_watermark(next + 10);
        state.fetched(offsets.len(), next);
        s.buffer(
            offsets
                .iter()
                .map(|o| record(topic, partition, *o))
                .collect(),
        );
    }

    /// Partitions 0 and 1 of `t`, at offsets 0 and 5.
    fn two_partitions() -> Subscription {
        let mut s = Subscription::default();
        s.assign(vec![tp(0), tp(1)]);
        s.seek(&tp(0), 0).unwrap();
        s.seek(&tp(1), 5).unwrap();
        s
    }

    #[test]
    fn a_poll_takes_at_most_max_records_and_positions_move_only_past_those_returned() {
        let topic: Arc<str> = Arc::from("t");
        let mut s = two_partitions();
        fetch(&mut s, &topic, 0, 0, &[0, 1, 2], 3);
        // The fetch of partition 1 ended in a control batch: it goes on at 9.
        fetch(&mut s, &topic, 1, 5, &[5, 6], 9);
        assert_eq!(s.position(&tp(0)), Some(0), "nothing returned yet");

        let first: Vec<i64> = s.take_buffered(4).iter().map(|r| r.offset).collect();
        assert_eq!(first, [0, 1, 2, 5]);
        assert_eq!(s.position(&tp(0)), Some(3));
        assert_eq!(
            s.position(&tp(1)),
            Some(6),
            "its record 6 is still buffered"
        );

        let rest: Vec<i64> = s.take_buffered(4).iter().map(|r| r.offset).collect();
        assert_eq!(rest, [6]);
        assert_eq!(s.position(&tp(1)), Some(9), "past the control batch");
        assert!(!s.has_buffered());
        assert_eq!(s.high_watermark(&tp(1)), Some(19));
    }

    #[test]
    fn a_partition_with_buffered_records_is_not_fetched_until_they_are_returned() {
        let topic: Arc<str> = Arc::from("t");
        let mut s = two_partitions();
        assert_eq!(s.to_fetch(), [(tp(0), 0), (tp(1), 5)]);
        fetch(&mut s, &topic, 0, 0, &[0, 1], 2);
        assert_eq!(s.to_fetch(), [(tp(1), 5)]);
        s.take_buffered(10);
        assert_eq!(s.to_fetch(), [(tp(0), 2), (tp(1), 5)]);
    }

    #[test]
    fn a_seek_drops_the_partitions_buffered_records_and_fetches_from_the_new_offset() {
        let topic: Arc<str> = Arc::from("t");
        let mut s = two_partitions();
        fetch(&mut s, &topic, 0, 0, &[0, 1], 2);
        fetch(&mut s, &topic, 1, 5, &[5], 6);
        s.seek(&tp(0), 40).unwrap();
        assert_eq!(s.position(&tp(0)), Some(40));
        assert_eq!(s.to_fetch(), [(tp(0), 40)]);
        let left: Vec<(i32, i64)> = s
            .take_buffered(10)
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect();
        assert_eq!(left, [(1, 5)]);
        assert_eq!(s.position(&tp(0)), Some(40));
    }

    #[test]
    fn a_fetch_is_refused_once_its_partition_moved_paused_or_was_unassigned() {
        let mut s = two_partitions();
        assert!(s.fetched_state(&tp(0), 0).is_some());
        assert!(s.fetched_state(&tp(0), 1).is_none(), "asked from elsewhere");
        assert!(s.fetched_state(&tp(7), 0).is_none(), "not assigned");
        s.pause(&[tp(0)]).unwrap();
        assert!(s.fetched_state(&tp(0), 0).is_none(), "paused");
        assert_eq!(s.paused(), [tp(0)]);
        assert_eq!(s.to_fetch(), [(tp(1), 5)]);
        s.resume(&[tp(0)]).unwrap();
        assert!(
            s.fetched_state(&tp(0), 0).is_some(),
            "resumed, same position"
        );
    }

    #[test]
    fn a_pause_drops_buffered_records_and_keeps_the_position() {
        let topic: Arc<str> = Arc::from("t");
        let mut s = two_partitions();
        fetch(&mut s, &topic, 0, 0, &[0, 1], 2);
        s.pause(&[tp(0)]).unwrap();
        assert!(!s.has_buffered());
        assert_eq!(s.position(&tp(0)), Some(0));
        s.resume(&[tp(0)]).unwrap();
        assert_eq!(s.to_fetch(), [(tp(0), 0), (tp(1), 5)]);
    }

    #[test]
    fn a_fetch_of_nothing_but_control_batches_moves_the_position() {
        let topic: Arc<str> = Arc::from("t");
        let mut s = two_partitions();
        fetch(&mut s, &topic, 1, 5, &[], 8);
        assert_eq!(s.position(&tp(1)), Some(8));
        assert_eq!(s.to_fetch(), [(tp(0), 0), (tp(1), 8)]);
    }

    #[test]
    fn a_reassignment_keeps_the_state_of_partitions_kept_and_drops_the_rest() {
        let topic: Arc<str> = Arc::from("t");
        let mut s = two_partitions();
        fetch(&mut s, &topic, 0, 0, &[0], 1);
        fetch(&mut s, &topic, 1, 5, &[5], 6);
        s.set_assignment(vec![tp(1), tp(2)]);
        assert_eq!(s.assignment(), [tp(1), tp(2)]);
        assert_eq!(s.position(&tp(1)), Some(5));
        assert_eq!(s.missing_positions(), [tp(2)]);
        let left: Vec<i32> = s.take_buffered(10).iter().map(|r| r.partition).collect();
        assert_eq!(left, [1]);
        s.revoke_all();
        assert!(s.is_empty() && !s.has_buffered());
    }

    #[test]
    fn seeks_refuse_negative_offsets_and_partitions_not_assigned() {
        let mut s = two_partitions();
        assert!(matches!(s.seek(&tp(0), -1), Err(Error::InvalidArgument(_))));
        assert!(matches!(s.seek(&tp(9), 0), Err(Error::InvalidArgument(_))));
        assert!(s.check_assigned(&[tp(0), tp(9)]).is_err());
        assert!(s.check_assigned(&[tp(1), tp(0)]).is_ok());
        assert_eq!(s.positions_of(&[tp(1), tp(9)]), [(tp(1), 5)]);
        assert_eq!(s.positions(), [(tp(0), 0), (tp(1), 5)]);
    }

    #[test]
    fn subscribed_topics_are_sorted_once_each_and_an_assignment_ends_the_subscription() {
        let mut s = Subscription::default();
        s.subscribe(&["b", "a", "b"]);
        assert_eq!(s.topics(), Some(&["a".to_string(), "b".to_string()][..]));
        s.assign(vec![tp(0)]);
        assert_eq!(s.topics(), None);
    }
}
