//! One run: the nodes, the network, the client, the faults and the checker around the
//! scheduler's queue. Each event is handled by the node it is for (or dropped: for a crashed
//! broker, a timer of an earlier run, a message across a cut; kept back while its broker is
//! paused), its outbox routed, then every invariant checked. After `active_ms` every fault
//! ends, produces stop, and the run goes on until every partition is in sync on every replica.
//!
//! Invariant: everything a run does follows from its seed: one generator, one queue, no
//! wall clock (the controller's liveness clock counts from a fixed instant).

use std::collections::{BTreeMap, BTreeSet};

use super::controller::Controller;
use super::faults::{self, Fault, Mix};
use super::invariants::Checker;
use super::messages::{Ack, Msg, NodeId, Outbox, Timer, CLIENT, CONTROLLER};
use super::network::Network;
use super::node::Broker;
use super::rng::Rng;
use super::scheduler::{Event, Queue};
use super::{bootstrap, Config, Options, Outcome, Violation, TOPIC};

pub struct World {
    options: Options,
    config: Config,
    rng: Rng,
    net: Network,
    mix: Mix,
    produce_interval_ms_max: i64,
    queue: Queue,
    brokers: Vec<Broker>,
    controller: Controller,
    checker: Checker,
    /// Paused brokers and the events kept back for them, in order.
    paused: BTreeMap<NodeId, Vec<Event>>,
    settling: bool,
    next_value: u64,
    next_client_id: u64,
    step: u64,
    hash: u64,
    acks: Vec<Ack>,
    /// The produces the client had an answer to, and how many were acknowledged.
    answered: BTreeSet<u64>,
    client_acks: usize,
    client_error: Option<String>,
    last_summary: String,
}

impl World {
    pub fn new(options: &Options) -> Self {
        let config = options.config;
        let mut rng = Rng::new(options.seed);
        let net = Network::drawn(&mut rng);
        let mix = Mix::drawn(&mut rng);
        let produce_interval_ms_max = rng.pick(&[20, 60, 150]);
        let batch = bootstrap(&config);
        let ids: Vec<NodeId> = (1..=config.brokers).collect();
        let brokers = ids
            .iter()
            .map(|&id| Broker::new(id, (config, options.bugs), &batch))
            .collect();
        Self {
            options: options.clone(),
            config,
            rng,
            net,
            mix,
            produce_interval_ms_max,
            queue: Queue::default(),
            brokers,
            controller: Controller::new(batch, ids, &config),
            checker: Checker::new(config.partitions, options.check_in_sync_holds),
            paused: BTreeMap::new(),
            settling: false,
            next_value: 1,
            next_client_id: 1,
            step: 0,
            hash: 0xcbf2_9ce4_8422_2325,
            acks: Vec::new(),
            answered: BTreeSet::new(),
            client_acks: 0,
            client_error: None,
            last_summary: String::new(),
        }
    }

    pub fn run(mut self) -> Result<Outcome, Violation> {
        self.trace(|| {
            format!(
                "seed {}: network {}, faults {:?}",
                self.options.seed,
                self.net.describe(),
                self.mix
            )
        });
        let mut out = self.outbox();
        self.controller.start(&mut out);
        self.route(CONTROLLER, 0, out);
        for i in 0..self.brokers.len() {
            let mut out = self.outbox();
            self.brokers[i].start(0, &mut out);
            self.route(self.brokers[i].id, 0, out);
        }
        self.queue.at(1, Event::Produce);
        self.queue.at(self.config.first_fault_ms, Event::NextFault);
        self.queue.at(self.config.active_ms, Event::Settle);
        while let Some(event) = self.queue.pop() {
            self.step += 1;
            if self.step > self.config.max_events {
                return Err(self.violation("the event budget ran out".into()));
            }
            self.handle(event);
            let acks = std::mem::take(&mut self.acks);
            let checked = self.checker.check(&self.brokers, &self.controller, &acks);
            if let Err(m) = checked.and_then(|()| self.client_error.take().map_or(Ok(()), Err)) {
                return Err(self.violation(m));
            }
            self.summarize();
            if self.settling && self.converged() {
                return self.finish();
            }
            if self.queue.now_ms() > self.config.active_ms + self.config.settle_ms_max {
                return Err(self.violation(
                    "the cluster did not get back in sync after every fault ended".into(),
                ));
            }
        }
        unreachable!("periodic timers keep the queue from emptying")
    }

    fn finish(mut self) -> Result<Outcome, Violation> {
        if let Err(m) = self.checker.final_check(&self.brokers) {
            return Err(self.violation(m));
        }
        for b in &self.brokers {
            for p in &b.partitions {
                for e in p.log.entries() {
                    self.hash = mix(self.hash, e.value ^ (u64::from(e.epoch as u32) << 40));
                }
            }
        }
        Ok(Outcome {
            trace_hash: self.hash,
            events: self.step,
            sim_ms: self.queue.now_ms(),
            acked: self.checker.acked_count(),
            client_acks: self.client_acks,
        })
    }

    fn violation(&self, message: String) -> Violation {
        Violation {
            seed: self.options.seed,
            step: self.step,
            time_ms: self.queue.now_ms(),
            message,
        }
    }

    fn outbox(&self) -> Outbox {
        Outbox::new(self.options.tracing)
    }

    fn trace(&self, line: impl FnOnce() -> String) {
        if self.options.tracing {
            println!("{}", line());
        }
    }

    fn broker_mut(&mut self, id: NodeId) -> &mut Broker {
        &mut self.brokers[(id - 1) as usize]
    }

    fn handle(&mut self, event: Event) {
        let now_ms = self.queue.now_ms();
        self.hash = mix(
            mix(mix(self.hash, now_ms as u64), event.tag()),
            event.node().unwrap_or(-1) as u64,
        );
        match event {
            Event::Produce => return self.produce(),
            Event::NextFault => return self.next_fault(),
            Event::Fault(f) => return self.inject(f),
            Event::Resume { node } => return self.resume(node),
            Event::Restart { node } => return self.restart(node),
            Event::Settle => return self.settle(),
            Event::Deliver { from, to, .. } if self.net.is_cut(from, to, now_ms) => {
                return self.trace(|| {
                    format!(
                        "{:>7} {now_ms:>6}ms {from} -> {to}: dropped at a cut",
                        self.step
                    )
                });
            }
            _ => {}
        }
        let node = event.node().expect("a node's event");
        if node == CLIENT || node == CONTROLLER {
            return self.at_fixed_node(node, event);
        }
        if let Some(backlog) = self.paused.get_mut(&node) {
            backlog.push(event);
            return;
        }
        self.at_broker(node, event);
    }

    fn at_fixed_node(&mut self, node: NodeId, event: Event) {
        let now_ms = self.queue.now_ms();
        let step = self.step;
        let mut out = self.outbox();
        match event {
            Event::Deliver { from, msg, .. } => {
                self.trace(|| {
                    format!(
                        "{step:>7} {now_ms:>6}ms {from} -> {node}: {}",
                        msg.describe()
                    )
                });
                match node == CONTROLLER {
                    true => self.controller.on_message(from, msg, now_ms, &mut out),
                    false => self.client_answer(msg),
                }
            }
            Event::Timer {
                timer: Timer::Fencing,
                ..
            } => self.controller.on_fencing(now_ms, &mut out),
            other => unreachable!("{other:?} at node {node}"),
        }
        self.route(node, 0, out);
    }

    fn at_broker(&mut self, node: NodeId, event: Event) {
        let (now_ms, step) = (self.queue.now_ms(), self.step);
        let b = &self.brokers[(node - 1) as usize];
        let (up, incarnation) = (b.up, b.incarnation);
        let mut out = self.outbox();
        match event {
            Event::Deliver { from, msg, .. } => {
                let state = if up { "" } else { " (down: dropped)" };
                self.trace(|| {
                    format!(
                        "{step:>7} {now_ms:>6}ms {from} -> {node}: {}{state}",
                        msg.describe()
                    )
                });
                if up {
                    self.broker_mut(node)
                        .on_message(from, msg, now_ms, &mut out);
                }
            }
            Event::Timer {
                incarnation: set_by,
                timer,
                ..
            } => {
                if !up || set_by != incarnation {
                    return;
                }
                self.trace(|| format!("{step:>7} {now_ms:>6}ms {node} timer {timer:?}"));
                self.broker_mut(node).on_timer(timer, now_ms, &mut out);
            }
            other => unreachable!("{other:?} at broker {node}"),
        }
        self.route(node, incarnation, out);
    }

    /// Sends through the network, sets timers, collects acknowledgements and trace lines.
    fn route(&mut self, from: NodeId, incarnation: u32, out: Outbox) {
        let now_ms = self.queue.now_ms();
        for line in &out.notes {
            self.trace(|| line.clone());
        }
        for (to, msg) in out.sends {
            match self.net.latency_ms(&mut self.rng, (from, to), now_ms) {
                Some(delay_ms) => self.queue.after(delay_ms, Event::Deliver { from, to, msg }),
                None => self
                    .trace(|| format!("                 {from} -> {to}: lost {}", msg.describe())),
            }
        }
        for (delay_ms, timer) in out.timers {
            self.queue.after(
                delay_ms,
                Event::Timer {
                    node: from,
                    incarnation,
                    timer,
                },
            );
        }
        self.acks.extend(out.acks);
    }

    /// A produce is answered at most once.
    fn client_answer(&mut self, msg: Msg) {
        let Msg::ProduceAnswer { id, answer } = msg else {
            unreachable!("the client is sent only produce answers")
        };
        if !self.answered.insert(id) {
            self.client_error = Some(format!("produce {id} answered twice (then {answer:?})"));
        }
        self.client_acks += usize::from(answer.is_ok());
    }

    /// The client's next acks=all produce: mostly to the leader the controller names, now and
    /// then to any broker (a stale client, or one that reached a zombie).
    fn produce(&mut self) {
        if self.settling {
            return;
        }
        let p = self.rng.below(self.config.partitions as u64) as usize;
        let leader = self
            .controller
            .image
            .topic(TOPIC)
            .expect("the topic")
            .partitions[p]
            .leader;
        let to = match leader >= 0 && !self.rng.chance(200) {
            true => leader,
            false => self.rng.between(1, i64::from(self.config.brokers)) as NodeId,
        };
        let (id, value) = (self.next_client_id, self.next_value);
        self.next_client_id += 1;
        self.next_value += 1;
        let mut out = self.outbox();
        out.send(
            to,
            Msg::Produce {
                id,
                partition: p,
                value,
            },
        );
        self.route(CLIENT, 0, out);
        let next_ms = self.rng.between(1, self.produce_interval_ms_max);
        self.queue.after(next_ms, Event::Produce);
    }

    fn next_fault(&mut self) {
        if self.settling {
            return;
        }
        if let Some(f) = self.mix.draw(&mut self.rng, self.config.brokers) {
            self.queue.after(0, Event::Fault(f));
        }
        let next_ms = self.rng.between(100, self.mix.interval_ms_max);
        self.queue.after(next_ms, Event::NextFault);
    }

    fn inject(&mut self, fault: Fault) {
        let now_ms = self.queue.now_ms();
        self.trace(|| format!("{:>7} {now_ms:>6}ms FAULT {fault:?}", self.step));
        self.net.forget_healed(now_ms);
        match fault {
            Fault::Cut { a, b, ms } => self.net.cut((a, b), now_ms + ms),
            Fault::Isolate { node, ms } => {
                for other in faults::others(node, self.config.brokers) {
                    self.net.cut((node, other), now_ms + ms);
                }
            }
            Fault::Crash { node, down_ms } => {
                if self.broker_mut(node).up {
                    self.paused.remove(&node);
                    self.broker_mut(node).crash();
                    self.queue.after(down_ms, Event::Restart { node });
                }
            }
            Fault::Pause { node, ms } => {
                if self.broker_mut(node).up && !self.paused.contains_key(&node) {
                    self.paused.insert(node, Vec::new());
                    self.queue.after(ms, Event::Resume { node });
                }
            }
            Fault::FailOver => self.controller.fail_over(),
        }
    }

    fn resume(&mut self, node: NodeId) {
        if let Some(backlog) = self.paused.remove(&node) {
            self.trace(|| {
                format!(
                    "{:>7} {:>6}ms RESUME {node} ({} events kept back)",
                    self.step,
                    self.queue.now_ms(),
                    backlog.len()
                )
            });
            for event in backlog {
                self.queue.after(0, event);
            }
        }
    }

    fn restart(&mut self, node: NodeId) {
        let now_ms = self.queue.now_ms();
        if self.broker_mut(node).up {
            return;
        }
        self.trace(|| format!("{:>7} {now_ms:>6}ms RESTART {node}", self.step));
        let mut out = self.outbox();
        self.broker_mut(node).start(now_ms, &mut out);
        let incarnation = self.broker_mut(node).incarnation;
        self.route(node, incarnation, out);
    }

    /// Every fault ends: the network calms, paused brokers resume, crashed ones restart.
    fn settle(&mut self) {
        self.trace(|| {
            format!(
                "{:>7} {:>6}ms SETTLE: every fault ends",
                self.step,
                self.queue.now_ms()
            )
        });
        self.settling = true;
        self.net.calm();
        let paused: Vec<NodeId> = self.paused.keys().copied().collect();
        for node in paused {
            self.resume(node);
        }
        for node in 1..=self.config.brokers {
            self.restart(node);
        }
    }

    /// Every partition has a leader acting in the controller's epoch, every replica in sync
    /// with it, and every replica's log and high watermark at the leader's log end.
    fn converged(&self) -> bool {
        let topic = self.controller.image.topic(TOPIC).expect("the topic");
        let log_len = self.controller.log().len();
        if self.brokers.iter().any(|b| !b.up || b.applied() != log_len) {
            return false;
        }
        topic.partitions.iter().enumerate().all(|(p, state)| {
            let Some(leader) = self.brokers.iter().find(|b| b.id == state.leader) else {
                return false;
            };
            let lp = &leader.partitions[p];
            let end = lp.log.log_end_offset();
            lp.is_leader()
                && state.isr.len() == state.replicas.len()
                && state.replicas.iter().all(|&r| {
                    let rp = &self.brokers[(r - 1) as usize].partitions[p];
                    rp.leader_epoch() == state.leader_epoch
                        && rp.log.log_end_offset() == end
                        && rp.high_watermark() == end
                })
        })
    }

    /// When tracing, a line of every replica's state each time it changes.
    fn summarize(&mut self) {
        if !self.options.tracing {
            return;
        }
        let mut s = String::from("                 state:");
        for b in &self.brokers {
            let run = match (b.up, self.paused.contains_key(&b.id)) {
                (false, _) => "down",
                (true, true) => "paused",
                (true, false) => "up",
            };
            s.push_str(&format!(" | {} {run}", b.id));
            for p in &b.partitions {
                let role = if p.is_leader() { "L" } else { "f" };
                s.push_str(&format!(
                    " p{}:{role}e{} leo{} hw{}",
                    p.index,
                    p.leader_epoch(),
                    p.log.log_end_offset(),
                    p.high_watermark()
                ));
            }
        }
        if s != self.last_summary {
            println!("{s}");
            self.last_summary = s;
        }
    }
}

/// FNV-1a over a word.
fn mix(hash: u64, word: u64) -> u64 {
    word.to_le_bytes().iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
