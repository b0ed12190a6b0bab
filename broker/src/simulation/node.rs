//! A simulated broker: its partitions ([`SimPartition`]), its metadata image (the real
//! [`MetadataImage`], fed the committed batches in log order as they reach it, each acted on
//! only once it is here), its registration and heartbeats, its fetchers ([`Follower`]), and the
//! high-watermark checkpoint. The leader's side (answers to followers and producers, in-sync
//! set proposals) is in `leader.rs`.
//!
//! A crash loses everything but the logs, the image (the broker's metadata log is on disk) and
//! the last high-watermark checkpoint; a restart opens the partitions from them, registers anew
//! and leads only once its image holds that registration (`Partition::is_leader`'s caught-up
//! condition).
//!
//! Invariants: batches are applied in log order, each once; a partition is followed at most by
//! one [`Follower`], for the leader and epoch the image last gave; timers and answers meant for
//! an earlier run of the broker are dropped.

use std::collections::BTreeMap;

use crate::alter_partition_manager::settled;
use crate::image::{Change, MetadataImage};
use crate::quorum::alter_partition::Proposal;

use super::follower::{Follower, Step};
use super::messages::{Batch, Msg, NodeId, Outbox, Timer, CONTROLLER};
use super::partition::SimPartition;
use super::{Bugs, Config, TOPIC};

/// A request to the controller waiting for its answer.
pub(super) enum Pending {
    Register,
    /// AlterPartition of these proposals (with their partitions).
    Alter(Vec<(usize, Proposal)>),
}

pub struct Broker {
    pub id: NodeId,
    /// Which run of the broker this is (0 first, one more at each restart).
    pub incarnation: u32,
    pub up: bool,
    pub(super) config: Config,
    pub(super) bugs: Bugs,
    pub partitions: Vec<SimPartition>,
    pub(super) image: MetadataImage,
    /// How many committed batches the image holds.
    applied: usize,
    hw_checkpoint: Vec<Option<i64>>,
    pub(super) broker_epoch: i64,
    caught_up: bool,
    followers: Vec<Option<Follower>>,
    /// Batches that arrived before those before them.
    early: BTreeMap<usize, Batch>,
    pub(super) alter_in_flight: Option<u64>,
    pub(super) requests: BTreeMap<u64, Pending>,
    next_id: u64,
}

impl Broker {
    /// Broker `id`, bootstrapped with the first batch (its registration at epoch 1 in it).
    pub fn new(id: NodeId, (config, bugs): (Config, Bugs), bootstrap: &Batch) -> Self {
        let mut image = MetadataImage::default();
        image
            .apply_all(bootstrap)
            .expect("the bootstrap batch applies");
        let count = config.partitions;
        Self {
            id,
            incarnation: 0,
            up: true,
            config,
            bugs,
            partitions: (0..count).map(|p| SimPartition::new(p, id)).collect(),
            image,
            applied: 1,
            hw_checkpoint: vec![None; count],
            broker_epoch: 1,
            caught_up: true,
            followers: (0..count).map(|_| None).collect(),
            early: BTreeMap::new(),
            alter_in_flight: None,
            requests: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// A fresh request id, never used by this broker in any run.
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        (u64::from(self.id as u32) << 48) | (u64::from(self.incarnation) << 32) | self.next_id
    }

    pub fn applied(&self) -> usize {
        self.applied
    }

    /// The broker's first start (bootstrapped, so registered and caught up) or a restart.
    pub fn start(&mut self, now_ms: i64, out: &mut Outbox) {
        self.up = true;
        for p in 0..self.config.partitions {
            let state = self.state_of(p);
            let checkpoint = self.hw_checkpoint[p];
            self.partitions[p].open(&state, checkpoint, now_ms);
            if self.caught_up {
                self.partitions[p].set_caught_up();
            }
            self.follow(p, out);
        }
        let phase_ms = i64::from(self.id) * 17 % 50;
        out.after(phase_ms, Timer::Heartbeat);
        out.after(phase_ms + 5, Timer::IsrCheck);
        out.after(phase_ms + 10, Timer::MetadataPoll);
        out.after(phase_ms + 15, Timer::HighWatermarkCheckpoint);
        if self.broker_epoch < 0 {
            out.after(0, Timer::Register);
        }
    }

    /// kill -9: the logs, the image and the checkpoint stay; the rest is gone.
    pub fn crash(&mut self) {
        self.up = false;
        self.incarnation += 1;
        self.broker_epoch = -1;
        self.caught_up = false;
        self.followers.iter_mut().for_each(|f| *f = None);
        self.early.clear();
        self.alter_in_flight = None;
        self.requests.clear();
    }

    /// Whether partition `p` has a replica on this broker.
    pub fn hosts(&self, p: usize) -> bool {
        let topic = self.image.topic(TOPIC).expect("the topic exists");
        topic.partitions[p].replicas.contains(&self.id)
    }

    pub(super) fn state_of(&self, p: usize) -> crate::image::PartitionImage {
        let topic = self.image.topic(TOPIC).expect("the topic exists");
        topic.partitions[p].clone()
    }

    pub fn on_timer(&mut self, timer: Timer, now_ms: i64, out: &mut Outbox) {
        let c = self.config;
        match timer {
            Timer::Heartbeat => {
                if self.broker_epoch >= 0 {
                    let broker_epoch = self.broker_epoch;
                    out.send(CONTROLLER, Msg::Heartbeat { broker_epoch });
                }
                out.after(c.broker_heartbeat_interval_ms, Timer::Heartbeat);
            }
            Timer::IsrCheck => {
                self.propose_isr(now_ms, out);
                out.after(c.isr_check_interval_ms(), Timer::IsrCheck);
            }
            Timer::MetadataPoll => {
                let from_index = self.applied;
                out.send(CONTROLLER, Msg::MetadataFetch { from_index });
                out.after(c.metadata_poll_ms, Timer::MetadataPoll);
            }
            Timer::HighWatermarkCheckpoint => {
                for (p, saved) in self.hw_checkpoint.iter_mut().enumerate() {
                    *saved = Some(self.partitions[p].high_watermark());
                }
                out.after(c.hw_checkpoint_interval_ms, Timer::HighWatermarkCheckpoint);
            }
            Timer::Register => self.register(out),
            Timer::Follow { partition } => self.follow_step(partition, out),
            Timer::RequestTimeout { id } => self.on_request_timeout(id, out),
            Timer::FetchWaitOver { partition, id } => self.fetch_wait_over(partition, id, out),
            Timer::ProduceTimeout { partition, id } => self.produce_timeout(partition, id, out),
            Timer::Fencing => unreachable!("the controller's timer"),
        }
    }

    fn register(&mut self, out: &mut Outbox) {
        let id = self.next_id();
        let incarnation = uuid::Uuid::from_u64_pair(self.id as u64, u64::from(self.incarnation));
        out.send(CONTROLLER, Msg::Register { id, incarnation });
        out.after(self.config.request_timeout_ms, Timer::RequestTimeout { id });
        self.requests.insert(id, Pending::Register);
    }

    fn on_request_timeout(&mut self, id: u64, out: &mut Outbox) {
        match self.requests.remove(&id) {
            Some(Pending::Register) => {
                out.after(self.config.replica_fetch_backoff_ms, Timer::Register)
            }
            Some(Pending::Alter(proposals)) => {
                let unanswered = vec![None; proposals.len()];
                self.end_alter(&proposals, &unanswered);
            }
            None => {
                let backoff_ms = self.config.replica_fetch_backoff_ms;
                for (p, f) in self.followers.iter_mut().enumerate() {
                    if let Some(f) = f.as_mut() {
                        f.on_timeout(&self.partitions[p], id, backoff_ms, out);
                    }
                }
            }
        }
    }

    /// As `alter_partition_manager::run` after its request: each proposal settled by its
    /// answer's code (`None`: not answered).
    pub(super) fn end_alter(&mut self, proposals: &[(usize, Proposal)], codes: &[Option<i16>]) {
        for ((p, _), code) in proposals.iter().zip(codes) {
            self.partitions[*p].settle_isr_proposal(settled(*code));
        }
        self.alter_in_flight = None;
    }

    pub fn on_message(&mut self, from: NodeId, msg: Msg, now_ms: i64, out: &mut Outbox) {
        match msg {
            Msg::Registered { id, answer } => self.on_registered(id, answer, now_ms, out),
            Msg::AlterPartitionAnswer { id, response } => self.on_alter_answer(id, &response, out),
            Msg::Metadata {
                from_index,
                batches,
            } => self.learn(from_index, batches, now_ms, out),
            Msg::EpochAnswer {
                id,
                partition,
                answer,
            } => {
                let backoff_ms = self.config.replica_fetch_backoff_ms;
                if let Some(f) = waiting(&mut self.followers[partition], id) {
                    f.on_epoch_answer(&mut self.partitions[partition], answer, backoff_ms, out);
                }
            }
            Msg::FetchAnswer {
                id,
                partition,
                answer,
            } => {
                let step = self.step_config();
                if let Some(f) = waiting(&mut self.followers[partition], id) {
                    f.on_fetch_answer(&mut self.partitions[partition], answer, step, out);
                }
            }
            Msg::ListOffsetsAnswer {
                id,
                partition,
                answer,
            } => {
                let backoff_ms = self.config.replica_fetch_backoff_ms;
                if let Some(f) = waiting(&mut self.followers[partition], id) {
                    f.on_list_offsets(&mut self.partitions[partition], answer, backoff_ms, out);
                }
            }
            other => self.serve(from, other, now_ms, out),
        }
    }

    fn on_registered(
        &mut self,
        id: u64,
        answer: Result<i64, quipu_protocol::ResponseError>,
        now_ms: i64,
        out: &mut Outbox,
    ) {
        if !matches!(self.requests.remove(&id), Some(Pending::Register)) {
            return;
        }
        match answer {
            Ok(epoch) => {
                self.broker_epoch = epoch;
                self.check_caught_up(now_ms, out);
            }
            Err(_) => out.after(self.config.replica_fetch_backoff_ms / 2, Timer::Register),
        }
    }

    fn step_config(&mut self) -> Step {
        Step {
            id: self.next_id(),
            backoff_ms: self.config.replica_fetch_backoff_ms,
            timeout_ms: self.config.request_timeout_ms,
            truncate_to_high_watermark: self.bugs.truncate_to_high_watermark,
        }
    }

    fn follow_step(&mut self, partition: usize, out: &mut Outbox) {
        let step = self.step_config();
        if let Some(f) = self.followers[partition].as_mut() {
            f.step(&mut self.partitions[partition], step, out);
        }
    }

    /// Committed batches `from_index..`: applied in order, those ahead kept for later.
    fn learn(&mut self, from_index: usize, batches: Vec<Batch>, now_ms: i64, out: &mut Outbox) {
        for (i, batch) in batches.into_iter().enumerate() {
            if from_index + i >= self.applied {
                self.early.insert(from_index + i, batch);
            }
        }
        while let Some(batch) = self.early.remove(&self.applied) {
            self.apply(&batch, now_ms, out);
        }
    }

    fn apply(&mut self, batch: &Batch, now_ms: i64, out: &mut Outbox) {
        let changes = self
            .image
            .apply_all(batch)
            .expect("a committed batch applies on every node");
        self.applied += 1;
        for change in changes {
            if let Change::Partition { partition, .. } = change {
                let p = partition as usize;
                let state = self.state_of(p);
                self.partitions[p].set_leadership(&state, now_ms);
                out.note(|| format!("    learns partition {p}: {state:?}"));
                self.settle(p, out);
                self.follow(p, out);
            }
        }
        self.check_caught_up(now_ms, out);
    }

    /// As `lifecycle::catch_up`: once the image holds this run's registration, partitions lead.
    fn check_caught_up(&mut self, _now_ms: i64, out: &mut Outbox) {
        let registered = self.image.broker(self.id).map(|b| b.broker_epoch);
        let holds = self.broker_epoch >= 0 && registered.is_some_and(|e| e >= self.broker_epoch);
        if self.caught_up || !holds {
            return;
        }
        self.caught_up = true;
        out.note(|| "    caught up: its partitions may lead".to_string());
        for p in 0..self.partitions.len() {
            self.partitions[p].set_caught_up();
            self.settle(p, out);
        }
    }

    /// As `ReplicaFetchers::desired`: a partition led by another broker is followed at the
    /// leader and epoch it has now; a new leader or epoch starts over with a truncation.
    fn follow(&mut self, p: usize, out: &mut Outbox) {
        let part = &self.partitions[p];
        let (leader, epoch) = (part.leader(), part.leader_epoch());
        let desired =
            (self.hosts(p) && leader >= 0 && leader != self.id).then_some((leader, epoch));
        let current = self.followers[p]
            .as_ref()
            .map(|f| (f.leader, f.leader_epoch));
        if current == desired {
            return;
        }
        self.followers[p] = desired.map(|(l, e)| Follower::new(l, e));
        if desired.is_some() {
            out.after(0, Timer::Follow { partition: p });
        }
    }
}

/// The follower, if it waits for the answer `id`.
fn waiting(follower: &mut Option<Follower>, id: u64) -> Option<&mut Follower> {
    follower.as_mut().filter(|f| f.waits_for(id))
}
