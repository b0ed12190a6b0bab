//! The simulated clock and its queue of events: each event happens at a millisecond, and
//! events of the same millisecond happen in the order they were scheduled, so a run is one
//! total order that the seed alone decides.
//!
//! Invariant: time never goes back; an event is popped once.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::faults::Fault;
use super::messages::{Msg, NodeId, Timer};

#[derive(Debug)]
pub enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: Msg,
    },
    /// A node's timer, set by run `incarnation` of it.
    Timer {
        node: NodeId,
        incarnation: u32,
        timer: Timer,
    },
    /// The client produces a record.
    Produce,
    /// The next fault is drawn.
    NextFault,
    Fault(Fault),
    Resume {
        node: NodeId,
    },
    Restart {
        node: NodeId,
    },
    /// Faults end; the run settles.
    Settle,
}

impl Event {
    /// The node the event happens at, if one.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            Event::Deliver { to, .. } => Some(*to),
            Event::Timer { node, .. } | Event::Resume { node } | Event::Restart { node } => {
                Some(*node)
            }
            _ => None,
        }
    }

    /// A small number naming the kind of event, for the trace hash.
    pub fn tag(&self) -> u64 {
        match self {
            Event::Deliver { msg, .. } => 100 + u64::from(msg.tag()),
            Event::Timer { timer, .. } => 200 + timer_tag(timer),
            Event::Produce => 1,
            Event::NextFault => 2,
            Event::Fault(_) => 3,
            Event::Resume { .. } => 4,
            Event::Restart { .. } => 5,
            Event::Settle => 6,
        }
    }
}

fn timer_tag(t: &Timer) -> u64 {
    match t {
        Timer::Heartbeat => 1,
        Timer::IsrCheck => 2,
        Timer::MetadataPoll => 3,
        Timer::HighWatermarkCheckpoint => 4,
        Timer::Register => 5,
        Timer::Follow { .. } => 6,
        Timer::RequestTimeout { .. } => 7,
        Timer::FetchWaitOver { .. } => 8,
        Timer::ProduceTimeout { .. } => 9,
        Timer::Fencing => 10,
    }
}

struct Scheduled {
    time_ms: i64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time_ms, self.seq) == (other.time_ms, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time_ms, other.seq).cmp(&(self.time_ms, self.seq))
    }
}

#[derive(Default)]
pub struct Queue {
    heap: BinaryHeap<Scheduled>,
    seq: u64,
    now_ms: i64,
}

impl Queue {
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    pub fn at(&mut self, time_ms: i64, event: Event) {
        assert!(time_ms >= self.now_ms, "an event in the past");
        self.seq += 1;
        self.heap.push(Scheduled {
            time_ms,
            seq: self.seq,
            event,
        });
    }

    pub fn after(&mut self, delay_ms: i64, event: Event) {
        self.at(self.now_ms + delay_ms, event);
    }

    /// The next event; the clock moves to its time.
    pub fn pop(&mut self) -> Option<Event> {
        let next = self.heap.pop()?;
        assert!(next.time_ms >= self.now_ms, "time never goes back");
        self.now_ms = next.time_ms;
        Some(next.event)
    }
}
