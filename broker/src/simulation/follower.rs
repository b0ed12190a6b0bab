//! A follower's copy of one partition from its leader at one leader epoch, as `replica_fetcher`
//! does it: first the truncation (the real `first_step`, then OffsetForLeaderEpoch and the real
//! `truncation_point`, again until the logs agree on their last epoch), then fetches from the
//! log end, appending as follower and following the leader's high watermark; an offset out of
//! range is settled with ListOffsets; errors and lost requests wait `replica.fetch.backoff.ms`.
//!
//! One request is in flight at a time; an answer to any other request (late, duplicated, or
//! for an earlier leader epoch, whose follower has been replaced) is dropped.
//!
//! Invariant: records are written only as the leader of this epoch sent them, at the log end,
//! and only after the truncation agreed with that leader (or, in the broken variant the
//! can-fail test switches on, after a cut to the high watermark alone).

use quipu_protocol::ResponseError;

use super::log::LocalView;
use super::messages::{Fetched, Msg, NodeId, Outbox, Timer};
use super::partition::SimPartition;
use crate::replica_fetcher::{first_step, truncation_point, FirstStep};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// OffsetForLeaderEpoch for this epoch.
    Epoch(i32),
    Fetch,
    ListOffsets,
}

/// How a follower takes its next step: the id of the request it may send, and a broken
/// variant's switch.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub id: u64,
    pub backoff_ms: i64,
    pub timeout_ms: i64,
    pub truncate_to_high_watermark: bool,
}

pub struct Follower {
    pub leader: NodeId,
    pub leader_epoch: i32,
    truncated: bool,
    in_flight: Option<(u64, Asked)>,
}

impl Follower {
    pub fn new(leader: NodeId, leader_epoch: i32) -> Self {
        Self {
            leader,
            leader_epoch,
            truncated: false,
            in_flight: None,
        }
    }

    pub fn waits_for(&self, id: u64) -> bool {
        self.in_flight.is_some_and(|(i, _)| i == id)
    }

    /// The next request, unless one is in flight: an epoch question while not truncated, a
    /// fetch from the log end otherwise.
    pub fn step(&mut self, p: &mut SimPartition, step: Step, out: &mut Outbox) -> bool {
        if self.in_flight.is_some() {
            return false;
        }
        if !self.truncated {
            if step.truncate_to_high_watermark {
                p.truncate(p.high_watermark());
                self.truncated = true;
            } else {
                let view = LocalView {
                    log: &p.log,
                    high_watermark: p.high_watermark(),
                };
                match first_step(&view) {
                    FirstStep::Agreed => self.truncated = true,
                    FirstStep::CutTo(offset) => {
                        p.truncate(offset);
                        self.truncated = true;
                    }
                    FirstStep::Ask(epoch) => {
                        self.ask(p, (step.id, Asked::Epoch(epoch)), step, out);
                        return true;
                    }
                }
            }
        }
        self.ask(p, (step.id, Asked::Fetch), step, out);
        true
    }

    fn ask(&mut self, p: &SimPartition, (id, asked): (u64, Asked), step: Step, out: &mut Outbox) {
        let (partition, current_leader_epoch) = (p.index, self.leader_epoch);
        let msg = match asked {
            Asked::Epoch(epoch) => Msg::EpochAsk {
                id,
                partition,
                current_leader_epoch,
                epoch,
            },
            Asked::Fetch => Msg::Fetch {
                id,
                partition,
                current_leader_epoch,
                fetch_offset: p.log.log_end_offset(),
            },
            Asked::ListOffsets => Msg::ListOffsets {
                id,
                partition,
                current_leader_epoch,
            },
        };
        out.send(self.leader, msg);
        out.after(step.timeout_ms, Timer::RequestTimeout { id });
        self.in_flight = Some((id, asked));
    }

    /// The leader's OffsetForLeaderEpoch answer: cut where the real decision says.
    pub fn on_epoch_answer(
        &mut self,
        p: &mut SimPartition,
        answer: Result<(i32, i64), ResponseError>,
        backoff_ms: i64,
        out: &mut Outbox,
    ) {
        let Some((_, Asked::Epoch(asked))) = self.in_flight.take() else {
            return;
        };
        let answer = match answer {
            Ok(a) => a,
            Err(_) => return self.again(p, backoff_ms, out),
        };
        let view = LocalView {
            log: &p.log,
            high_watermark: p.high_watermark(),
        };
        let (offset, agreed) = truncation_point(asked, answer, &view);
        let end = p.log.log_end_offset();
        if offset < end {
            out.note(|| format!("    partition {} truncates {end} -> {offset} (asked {asked}, leader said {answer:?})", p.index));
        }
        p.truncate(offset);
        self.truncated = agreed;
        self.again(p, 0, out);
    }

    /// The leader's fetch answer: append, follow the high watermark, fetch again.
    pub fn on_fetch_answer(
        &mut self,
        p: &mut SimPartition,
        answer: Result<Fetched, ResponseError>,
        step: Step,
        out: &mut Outbox,
    ) {
        self.in_flight = None;
        match answer {
            Ok(f) => {
                match p.append_as_follower(&f.entries, self.leader_epoch) {
                    Ok(()) => p.follow_high_watermark(f.high_watermark),
                    Err(e) => {
                        out.note(|| format!("    partition {}: {e}: truncating again", p.index));
                        self.truncated = false;
                    }
                }
                self.again(p, 0, out);
            }
            Err(ResponseError::OffsetOutOfRange) => {
                self.ask(p, (step.id, Asked::ListOffsets), step, out);
            }
            Err(_) => self.again(p, step.backoff_ms, out),
        }
    }

    /// ListOffsets after OFFSET_OUT_OF_RANGE: a log past the leader's end is cut to it.
    pub fn on_list_offsets(
        &mut self,
        p: &mut SimPartition,
        answer: Result<(i64, i64), ResponseError>,
        backoff_ms: i64,
        out: &mut Outbox,
    ) {
        self.in_flight = None;
        match answer {
            Ok((latest, _earliest)) => {
                if p.log.log_end_offset() > latest {
                    p.truncate(latest);
                }
                self.again(p, 0, out);
            }
            Err(_) => self.again(p, backoff_ms, out),
        }
    }

    /// The request `id` was not answered in time.
    pub fn on_timeout(&mut self, p: &SimPartition, id: u64, backoff_ms: i64, out: &mut Outbox) {
        if self.waits_for(id) {
            self.in_flight = None;
            self.again(p, backoff_ms, out);
        }
    }

    fn again(&self, p: &SimPartition, delay_ms: i64, out: &mut Outbox) {
        out.after(delay_ms, Timer::Follow { partition: p.index });
    }
}
