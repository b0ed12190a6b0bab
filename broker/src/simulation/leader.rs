//! A simulated broker's leader side, as the real API handlers and tasks do it: OffsetForLeaderEpoch
//! answered from the real epoch cache; Fetch from a follower recorded in the replica set
//! (`api::fetch`), answered with the records from the fetch offset to the log end and the high
//! watermark, or parked up to `replica.fetch.wait.max.ms` when there is nothing new; ListOffsets;
//! acks=all produces (`api::produce`: refused with too few in-sync replicas, acknowledged when
//! committed); and in-sync set proposals every `min(lag / 2, 250 ms)` as
//! `alter_partition_manager` makes them, sent with the real request builder and settled by the
//! real `alter_partition_manager::settled` (refused: ended; accepted: in flight until its record
//! arrives; unknown: sent again).
//!
//! Invariant: every answer is computed from this broker's state when the request is handled,
//! checked against the request's leader epoch as `ReplicaManager::leader_partition` checks it;
//! at most one AlterPartition is in flight.

use quipu_protocol::ResponseError;

use super::messages::{Fetched, Msg, NodeId, Outbox, Timer, CONTROLLER};
use super::node::{Broker, Pending};
use super::partition::Parked;
use super::TOPIC;
use crate::quorum::alter_partition::{self, Proposal};

impl Broker {
    /// Requests from followers and producers.
    pub(super) fn serve(&mut self, from: NodeId, msg: Msg, now_ms: i64, out: &mut Outbox) {
        match msg {
            Msg::EpochAsk {
                id,
                partition,
                current_leader_epoch,
                epoch,
            } => {
                let p = &self.partitions[partition];
                let answer = p
                    .admit(current_leader_epoch, true)
                    .map(|()| p.log.end_offset_for_epoch(epoch).unwrap_or((-1, -1)));
                out.send(
                    from,
                    Msg::EpochAnswer {
                        id,
                        partition,
                        answer,
                    },
                );
            }
            Msg::Fetch {
                id,
                partition,
                current_leader_epoch,
                fetch_offset,
            } => {
                let fetch = Parked {
                    id,
                    follower: from,
                    fetch_offset,
                };
                self.on_fetch(partition, current_leader_epoch, fetch, now_ms, out);
            }
            Msg::ListOffsets {
                id,
                partition,
                current_leader_epoch,
            } => {
                let p = &self.partitions[partition];
                let answer = p
                    .admit(current_leader_epoch, true)
                    .map(|()| (p.log.log_end_offset(), 0));
                out.send(
                    from,
                    Msg::ListOffsetsAnswer {
                        id,
                        partition,
                        answer,
                    },
                );
            }
            Msg::Produce {
                id,
                partition,
                value,
            } => self.on_produce((from, id), partition, value, out),
            other => unreachable!("a broker is not sent {other:?}"),
        }
    }

    fn on_fetch(
        &mut self,
        partition: usize,
        current_leader_epoch: i32,
        fetch: Parked,
        now_ms: i64,
        out: &mut Outbox,
    ) {
        let p = &mut self.partitions[partition];
        let recorded = p
            .admit(current_leader_epoch, true)
            .and_then(|()| p.record_follower_fetch(fetch.follower, fetch.fetch_offset, now_ms));
        if let Err(e) = recorded {
            let answer = Err(e);
            out.send(
                fetch.follower,
                Msg::FetchAnswer {
                    id: fetch.id,
                    partition,
                    answer,
                },
            );
            return;
        }
        self.settle(partition, out);
        let p = &mut self.partitions[partition];
        if fetch.fetch_offset == p.log.log_end_offset() {
            // Nothing new: wait for an append, as a long poll with min_bytes 1 does.
            p.park(fetch);
            let wait_ms = self.config.replica_fetch_wait_max_ms;
            out.after(
                wait_ms,
                Timer::FetchWaitOver {
                    partition,
                    id: fetch.id,
                },
            );
            return;
        }
        self.answer_fetch(partition, fetch, out);
    }

    /// Reads from the fetch offset to the log end (at most `fetch_max_records`).
    fn answer_fetch(&self, partition: usize, fetch: Parked, out: &mut Outbox) {
        let p = &self.partitions[partition];
        let max = self.config.fetch_max_records;
        let answer = p.admit(-1, true).and_then(|()| {
            let entries = p
                .log
                .read(fetch.fetch_offset, max)
                .ok_or(ResponseError::OffsetOutOfRange)?;
            Ok(Fetched {
                entries,
                high_watermark: p.high_watermark(),
            })
        });
        out.send(
            fetch.follower,
            Msg::FetchAnswer {
                id: fetch.id,
                partition,
                answer,
            },
        );
    }

    pub(super) fn fetch_wait_over(&mut self, partition: usize, id: u64, out: &mut Outbox) {
        for fetch in self.partitions[partition].unpark(Some(id)) {
            self.answer_fetch(partition, fetch, out);
        }
    }

    fn on_produce(
        &mut self,
        (client, id): (NodeId, u64),
        partition: usize,
        value: u64,
        out: &mut Outbox,
    ) {
        let min_isr = self.config.min_insync_replicas;
        let produced = self.partitions[partition].produce((id, client, value), min_isr);
        match produced {
            Err(e) => out.send(client, Msg::ProduceAnswer { id, answer: Err(e) }),
            Ok(w) => {
                out.note(|| {
                    format!(
                        "    appends {value} at {} in epoch {}",
                        w.offset, w.leader_epoch
                    )
                });
                let timeout_ms = self.config.produce_timeout_ms;
                out.after(timeout_ms, Timer::ProduceTimeout { partition, id });
                for fetch in self.partitions[partition].unpark(None) {
                    self.answer_fetch(partition, fetch, out);
                }
                self.settle(partition, out);
            }
        }
    }

    pub(super) fn produce_timeout(&mut self, partition: usize, id: u64, out: &mut Outbox) {
        if let Some(w) = self.partitions[partition].take_waiter(id) {
            let answer = Err(ResponseError::RequestTimedOut);
            out.send(w.client, Msg::ProduceAnswer { id, answer });
        }
    }

    /// The waiting produces of `partition` that are settled now are answered; the acknowledged
    /// ones are recorded for the invariant checker.
    pub(super) fn settle(&mut self, partition: usize, out: &mut Outbox) {
        let p = &mut self.partitions[partition];
        for (w, outcome) in p.settle_waiters(self.config.min_insync_replicas) {
            let answer = match outcome {
                Ok(()) => {
                    out.acks.push(p.ack(&w));
                    out.note(|| {
                        format!(
                            "    acknowledges {} at {} (epoch {})",
                            w.value, w.offset, w.leader_epoch
                        )
                    });
                    Ok(w.offset)
                }
                Err(e) => Err(e),
            };
            out.send(w.client, Msg::ProduceAnswer { id: w.id, answer });
        }
    }

    /// As `alter_partition_manager::run`'s tick: the proposals of the partitions led here, in
    /// one AlterPartition, unless one is in flight or this run is not registered yet.
    pub(super) fn propose_isr(&mut self, now_ms: i64, out: &mut Outbox) {
        if self.broker_epoch < 0 || self.alter_in_flight.is_some() {
            return;
        }
        let lag_max_ms = self.config.replica_lag_time_max_ms;
        let image = &self.image;
        let topic = image.topic(TOPIC).expect("the topic exists");
        let eligible = |b: i32| image.broker(b).is_some_and(|r| !r.fenced);
        let epoch_of = |b: i32| image.broker(b).map_or(-1, |r| r.broker_epoch);
        let mut proposals = Vec::new();
        for p in self.partitions.iter_mut().filter(|p| p.is_leader()) {
            let Some(change) = p.isr_proposal(now_ms, lag_max_ms, &eligible) else {
                continue;
            };
            let proposal = Proposal {
                topic_id: topic.id,
                partition: p.index as i32,
                leader_epoch: change.leader_epoch,
                partition_epoch: change.partition_epoch,
                isr: change.isr.iter().map(|b| (*b, epoch_of(*b))).collect(),
            };
            proposals.push((p.index, proposal));
        }
        if proposals.is_empty() {
            return;
        }
        let sent: Vec<Proposal> = proposals.iter().map(|(_, p)| p.clone()).collect();
        let request = alter_partition::request((self.id, self.broker_epoch), &sent);
        let id = self.next_id();
        out.send(
            CONTROLLER,
            Msg::AlterPartition {
                id,
                request: Box::new(request),
            },
        );
        out.after(
            self.config.alter_partition_timeout_ms,
            Timer::RequestTimeout { id },
        );
        self.requests.insert(id, Pending::Alter(proposals));
        self.alter_in_flight = Some(id);
    }

    /// The controller answered: as the real manager does, each proposal is settled by its
    /// code (read with the real `alter_partition::codes`).
    pub(super) fn on_alter_answer(
        &mut self,
        id: u64,
        response: &quipu_protocol::messages::AlterPartitionResponse,
        out: &mut Outbox,
    ) {
        let Some(Pending::Alter(proposals)) = self.requests.remove(&id) else {
            return;
        };
        let sent: Vec<Proposal> = proposals.iter().map(|(_, p)| p.clone()).collect();
        let codes: Vec<Option<i16>> = match alter_partition::codes(response, &sent) {
            Ok(codes) => codes.into_iter().map(Some).collect(),
            Err(_) => vec![None; sent.len()],
        };
        out.note(|| format!("    AlterPartition answered: {codes:?}"));
        self.end_alter(&proposals, &codes);
    }
}
