//! The simulated active controller: a real [`MetadataImage`] driven only by committed batches
//! of real records; registrations as `controller::new_registration` makes them; liveness,
//! fencing and unfencing by the real [`Liveness`] (on a clock made from the simulated one);
//! elections by `election::after_broker_changes`; AlterPartition answered by the real
//! `quorum::alter_partition::decide`.
//!
//! The Raft quorum itself is out of this simulation's scope (openraft is tested on its own):
//! the metadata log is one linearizable sequence of batches, each committed at once. Every
//! broker learns it with its own delay: each commit is pushed to every broker over the lossy
//! network, and brokers ask for what they miss. A controller failover is modelled as what the
//! new leader's liveness does (a new term: every clock starts afresh).
//!
//! Invariants: a batch is committed only if the image accepts all of it (the image refuses a
//! partition change that does not raise the partition epoch or lowers the leader epoch);
//! committed batches never change; the image is exactly the log's batches applied in order.

use std::rc::Rc;
use std::time::{Duration, Instant};

use quipu_protocol::ResponseError;

use super::messages::{Batch, Msg, NodeId, Outbox, Timer};
use crate::image::MetadataImage;
use crate::metadata_log::record::MetadataRecord;
use crate::quorum::alter_partition::{decide, refuse_uncommitted};
use crate::quorum::liveness::Liveness;

/// At most this many batches in one metadata answer.
const BATCHES_PER_ANSWER: usize = 64;

pub struct Controller {
    pub image: MetadataImage,
    log: Vec<Batch>,
    liveness: Liveness,
    /// The instant of simulated time 0, for the liveness clock.
    origin: Instant,
    term: u64,
    unclean_leader_election: bool,
    brokers: Vec<NodeId>,
    heartbeat_interval_ms: i64,
}

impl Controller {
    pub fn new(bootstrap: Batch, brokers: Vec<NodeId>, config: &super::Config) -> Self {
        let mut image = MetadataImage::default();
        image
            .apply_all(&bootstrap)
            .expect("the bootstrap batch applies");
        Self {
            image,
            log: vec![bootstrap],
            liveness: Liveness::new(Duration::from_millis(
                config.broker_session_timeout_ms as u64,
            )),
            origin: Instant::now(),
            term: 1,
            unclean_leader_election: config.unclean_leader_election,
            brokers,
            heartbeat_interval_ms: config.broker_heartbeat_interval_ms,
        }
    }

    pub fn log(&self) -> &[Batch] {
        &self.log
    }

    fn instant(&self, now_ms: i64) -> Instant {
        self.origin + Duration::from_millis(now_ms as u64)
    }

    pub fn start(&self, out: &mut Outbox) {
        out.after(0, Timer::Fencing);
    }

    /// Commits `records` as one batch and pushes it to every broker, or refuses it whole.
    fn commit(
        &mut self,
        records: Vec<MetadataRecord>,
        out: &mut Outbox,
    ) -> Result<(), ResponseError> {
        let mut next = self.image.clone();
        if let Err(e) = next.apply_all(&records) {
            out.note(|| format!("    controller refuses a batch: {e}"));
            return Err(ResponseError::UnknownServerError);
        }
        self.image = next;
        let batch: Batch = Rc::from(records);
        let from_index = self.log.len();
        self.log.push(batch.clone());
        out.note(|| format!("    commits batch {from_index}: {batch:?}"));
        for &b in &self.brokers {
            let batches = vec![batch.clone()];
            out.send(
                b,
                Msg::Metadata {
                    from_index,
                    batches,
                },
            );
        }
        Ok(())
    }

    pub fn on_message(&mut self, from: NodeId, msg: Msg, now_ms: i64, out: &mut Outbox) {
        match msg {
            Msg::Register { id, incarnation } => {
                let answer = self.register(from, incarnation, now_ms, out);
                out.send(from, Msg::Registered { id, answer });
            }
            Msg::Heartbeat { broker_epoch } => {
                // As `renew`: a heartbeat of another registration than the current is stale.
                let current = self
                    .image
                    .broker(from)
                    .is_some_and(|b| b.broker_epoch == broker_epoch);
                if current {
                    self.liveness
                        .heard(from, broker_epoch, self.instant(now_ms));
                }
            }
            Msg::AlterPartition { id, request } => {
                let (mut response, records) = decide(&self.image, &request);
                if !records.is_empty() {
                    if let Err(e) = self.commit(records, out) {
                        refuse_uncommitted(&mut response, e);
                    }
                }
                let response = Box::new(response);
                out.send(from, Msg::AlterPartitionAnswer { id, response });
            }
            Msg::MetadataFetch { from_index } => {
                let batches: Vec<Batch> = self
                    .log
                    .iter()
                    .skip(from_index)
                    .take(BATCHES_PER_ANSWER)
                    .cloned()
                    .collect();
                if !batches.is_empty() {
                    out.send(
                        from,
                        Msg::Metadata {
                            from_index,
                            batches,
                        },
                    );
                }
            }
            other => unreachable!("the controller is not sent {other:?}"),
        }
    }

    /// As `commit_registration`: refused while another run of the id is live; otherwise the
    /// registration and the elections it calls for, committed.
    fn register(
        &mut self,
        node_id: NodeId,
        incarnation: uuid::Uuid,
        now_ms: i64,
        out: &mut Outbox,
    ) -> Result<i64, ResponseError> {
        let now = self.instant(now_ms);
        let live = self.image.broker(node_id).is_some_and(|b| !b.fenced);
        if !self.liveness.registering(node_id, incarnation, live, now) {
            return Err(ResponseError::DuplicateBrokerRegistration);
        }
        let address = ("sim", 9092 + node_id, None);
        let (epoch, mut records) =
            crate::controller::new_registration(&self.image, node_id, address);
        let elections = crate::election::after_broker_changes(
            &self.image,
            &records,
            self.unclean_leader_election,
        );
        records.extend(elections);
        self.commit(records, out)?;
        self.liveness.heard(node_id, epoch, now);
        Ok(epoch)
    }

    /// As `run_fencing`'s tick, every half heartbeat interval.
    pub fn on_fencing(&mut self, now_ms: i64, out: &mut Outbox) {
        out.after(self.heartbeat_interval_ms / 2, Timer::Fencing);
        let mut changes = self
            .liveness
            .changes(self.term, &self.image, self.instant(now_ms));
        if changes.is_empty() {
            return;
        }
        let elections = crate::election::after_broker_changes(
            &self.image,
            &changes,
            self.unclean_leader_election,
        );
        changes.extend(elections);
        let _ = self.commit(changes, out);
    }

    /// Another controller takes over: its liveness knows nothing of what this one heard.
    pub fn fail_over(&mut self) {
        self.liveness.not_leading();
        self.term += 1;
    }
}
