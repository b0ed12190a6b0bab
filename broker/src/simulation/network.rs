//! The simulated network: each message gets its own latency (so messages between two nodes may
//! be reordered), may be lost, and is dropped while a cut separates its two ends, whether the
//! cut was there when it left or came while it was on its way. How lossy and slow the network
//! is comes from the seed; [`Network::calm`] ends every fault for the run's settling phase.
//!
//! A loss stands for a connection that broke with the request or its answer on it: the sender
//! learns of it only by its timeout, as over TCP.
//!
//! Invariant: a message is delivered at most once, never before it was sent, and never across
//! a cut; every choice is drawn from the run's generator.

use super::messages::NodeId;
use super::rng::Rng;

#[derive(Debug, Clone, Copy)]
struct Cut {
    a: NodeId,
    b: NodeId,
    until_ms: i64,
}

pub struct Network {
    loss_per_mille: u64,
    latency_ms_max: i64,
    /// How often a message is slow (a retransmission, a stalled queue), per mille.
    slow_per_mille: u64,
    slow_ms_max: i64,
    cuts: Vec<Cut>,
}

impl Network {
    /// A network as lossy and slow as the seed's draw says.
    pub fn drawn(rng: &mut Rng) -> Self {
        Self {
            loss_per_mille: rng.pick(&[0, 2, 10, 30]),
            latency_ms_max: rng.pick(&[2, 10, 40]),
            slow_per_mille: rng.pick(&[0, 10, 50]),
            slow_ms_max: rng.pick(&[100, 600, 1500]),
            cuts: Vec::new(),
        }
    }

    /// The delay of a message sent now from `from` to `to`, or `None` when it is lost.
    pub fn latency_ms(
        &self,
        rng: &mut Rng,
        (from, to): (NodeId, NodeId),
        now_ms: i64,
    ) -> Option<i64> {
        if self.is_cut(from, to, now_ms) || rng.chance(self.loss_per_mille) {
            return None;
        }
        let mut latency = rng.between(1, self.latency_ms_max);
        if rng.chance(self.slow_per_mille) {
            latency += rng.between(1, self.slow_ms_max);
        }
        Some(latency)
    }

    pub fn is_cut(&self, a: NodeId, b: NodeId, now_ms: i64) -> bool {
        self.cuts
            .iter()
            .any(|c| c.until_ms > now_ms && ((c.a == a && c.b == b) || (c.a == b && c.b == a)))
    }

    /// No message passes between `a` and `b` until `until_ms`.
    pub fn cut(&mut self, (a, b): (NodeId, NodeId), until_ms: i64) {
        assert_ne!(a, b, "a node is never cut from itself");
        self.cuts.push(Cut { a, b, until_ms });
    }

    /// Forgets cuts that have healed by `now_ms` (bounded: cuts do not pile up).
    pub fn forget_healed(&mut self, now_ms: i64) {
        self.cuts.retain(|c| c.until_ms > now_ms);
    }

    /// Every fault ends: no cut, no loss, no slow message.
    pub fn calm(&mut self) {
        self.cuts.clear();
        self.loss_per_mille = 0;
        self.slow_per_mille = 0;
    }

    pub fn describe(&self) -> String {
        format!(
            "loss {}‰, latency 1..={} ms, slow {}‰ (+{} ms)",
            self.loss_per_mille, self.latency_ms_max, self.slow_per_mille, self.slow_ms_max
        )
    }
}
