//! The faults a run injects, drawn from its seed: a cut between two nodes (brokers or the
//! controller) or around one broker, a broker's crash and restart (kill -9: the log survives),
//! a broker's pause (SIGSTOP: it then resumes with the beliefs it had, a zombie), and a
//! controller failover. Message loss, delay and reordering come with the network itself.
//!
//! Invariant: every fault ends by itself (a cut heals, a crashed broker restarts, a paused
//! one resumes), and all end at the start of the settling phase.

use super::messages::{NodeId, CONTROLLER};
use super::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Cut {
        a: NodeId,
        b: NodeId,
        ms: i64,
    },
    /// A broker cut from every other node.
    Isolate {
        node: NodeId,
        ms: i64,
    },
    Crash {
        node: NodeId,
        down_ms: i64,
    },
    Pause {
        node: NodeId,
        ms: i64,
    },
    FailOver,
}

/// The mix of faults of a run: how often each kind comes, as weights.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    cut: u64,
    isolate: u64,
    crash: u64,
    pause: u64,
    fail_over: u64,
    pub interval_ms_max: i64,
}

impl Mix {
    pub fn drawn(rng: &mut Rng) -> Self {
        Self {
            cut: rng.below(4),
            isolate: rng.below(3),
            crash: rng.below(4),
            pause: rng.below(4),
            fail_over: rng.below(2),
            interval_ms_max: rng.pick(&[800, 2000, 4000]),
        }
    }

    pub fn draw(&self, rng: &mut Rng, brokers: NodeId) -> Option<Fault> {
        let total = self.cut + self.isolate + self.crash + self.pause + self.fail_over;
        if total == 0 {
            return None;
        }
        let broker = |rng: &mut Rng| rng.between(1, i64::from(brokers)) as NodeId;
        let weights = [
            self.cut,
            self.isolate,
            self.crash,
            self.pause,
            self.fail_over,
        ];
        let mut pick = rng.below(total);
        let kind = weights
            .iter()
            .position(|&w| match pick < w {
                true => true,
                false => {
                    pick -= w;
                    false
                }
            })
            .expect("the pick is below the total");
        let fault = match kind {
            0 => {
                let a = rng.between(0, i64::from(brokers)) as NodeId;
                let b = (a + rng.between(1, i64::from(brokers)) as NodeId) % (brokers + 1);
                Fault::Cut {
                    a,
                    b,
                    ms: rng.between(300, 6_000),
                }
            }
            1 => Fault::Isolate {
                node: broker(rng),
                ms: rng.between(300, 6_000),
            },
            2 => Fault::Crash {
                node: broker(rng),
                down_ms: rng.between(50, 4_000),
            },
            3 => Fault::Pause {
                node: broker(rng),
                ms: rng.between(200, 5_000),
            },
            _ => Fault::FailOver,
        };
        debug_assert!(!matches!(fault, Fault::Cut { a, b, .. } if a == b));
        Some(fault)
    }
}

/// The nodes a broker's isolation cuts it from.
pub fn others(node: NodeId, brokers: NodeId) -> impl Iterator<Item = NodeId> {
    std::iter::once(CONTROLLER)
        .chain(1..=brokers)
        .filter(move |n| *n != node)
}
