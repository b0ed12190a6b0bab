//! What the simulated nodes say to each other and ask of the world: the messages (each a
//! request or its answer, as the real APIs carry them), the timers a node sets, and the
//! [`Outbox`] a handler fills. A request carries an id its answer repeats; the requester keeps
//! the id while it waits, so a late or duplicated answer is recognised and dropped.
//!
//! Invariant: a handler touches only its own node; everything else it causes goes through its
//! outbox (sends, timers, acknowledgements), which the world routes in order.

use std::rc::Rc;

use quipu_protocol::messages::{AlterPartitionRequest, AlterPartitionResponse};
use quipu_protocol::ResponseError;

use super::log::Entry;
use crate::metadata_log::record::MetadataRecord;

pub type NodeId = i32;

/// The active controller (Raft is outside the simulation: one linearizable metadata log).
pub const CONTROLLER: NodeId = 0;
/// The producing client.
pub const CLIENT: NodeId = 100;

/// A committed batch of metadata records, shared by every message that carries it.
pub type Batch = Rc<[MetadataRecord]>;

/// What a leader's fetch answer carries.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub entries: Vec<Entry>,
    pub high_watermark: i64,
}

#[derive(Debug, Clone)]
pub enum Msg {
    /// A broker's registration, from a run (`incarnation`) of it.
    Register {
        id: u64,
        incarnation: uuid::Uuid,
    },
    Registered {
        id: u64,
        answer: Result<i64, ResponseError>,
    },
    Heartbeat {
        broker_epoch: i64,
    },
    AlterPartition {
        id: u64,
        request: Box<AlterPartitionRequest>,
    },
    AlterPartitionAnswer {
        id: u64,
        response: Box<AlterPartitionResponse>,
    },
    /// A broker asks for the committed batches from `from_index` on.
    MetadataFetch {
        from_index: usize,
    },
    /// Committed batches `from_index..`, pushed at each commit or answering a fetch.
    Metadata {
        from_index: usize,
        batches: Vec<Batch>,
    },
    /// OffsetForLeaderEpoch for `epoch`.
    EpochAsk {
        id: u64,
        partition: usize,
        current_leader_epoch: i32,
        epoch: i32,
    },
    EpochAnswer {
        id: u64,
        partition: usize,
        answer: Result<(i32, i64), ResponseError>,
    },
    Fetch {
        id: u64,
        partition: usize,
        current_leader_epoch: i32,
        fetch_offset: i64,
    },
    FetchAnswer {
        id: u64,
        partition: usize,
        answer: Result<Fetched, ResponseError>,
    },
    /// ListOffsets latest and earliest, after OFFSET_OUT_OF_RANGE.
    ListOffsets {
        id: u64,
        partition: usize,
        current_leader_epoch: i32,
    },
    ListOffsetsAnswer {
        id: u64,
        partition: usize,
        answer: Result<(i64, i64), ResponseError>,
    },
    /// An acks=all produce of one record.
    Produce {
        id: u64,
        partition: usize,
        value: u64,
    },
    ProduceAnswer {
        id: u64,
        answer: Result<i64, ResponseError>,
    },
}

impl Msg {
    /// A short, stable name for the trace and its hash.
    pub fn tag(&self) -> u8 {
        match self {
            Msg::Register { .. } => 1,
            Msg::Registered { .. } => 2,
            Msg::Heartbeat { .. } => 3,
            Msg::AlterPartition { .. } => 4,
            Msg::AlterPartitionAnswer { .. } => 5,
            Msg::MetadataFetch { .. } => 6,
            Msg::Metadata { .. } => 7,
            Msg::EpochAsk { .. } => 8,
            Msg::EpochAnswer { .. } => 9,
            Msg::Fetch { .. } => 10,
            Msg::FetchAnswer { .. } => 11,
            Msg::ListOffsets { .. } => 12,
            Msg::ListOffsetsAnswer { .. } => 13,
            Msg::Produce { .. } => 14,
            Msg::ProduceAnswer { .. } => 15,
        }
    }

    /// One line for the trace (record lists and requests shortened).
    pub fn describe(&self) -> String {
        match self {
            Msg::Metadata { from_index, batches } => {
                format!("Metadata {{ from_index: {from_index}, batches: {batches:?} }}")
            }
            Msg::FetchAnswer { id, partition, answer: Ok(f) } => format!(
                "FetchAnswer {{ id: {id}, partition: {partition}, entries: {:?}, high_watermark: {} }}",
                f.entries
                    .iter()
                    .map(|e| (e.offset, e.epoch, e.value))
                    .collect::<Vec<_>>(),
                f.high_watermark
            ),
            Msg::AlterPartition { id, request } => {
                let isrs: Vec<_> = request
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| {
                        let isr: Vec<i32> =
                            p.new_isr_with_epochs.iter().map(|b| b.broker_id.0).collect();
                        (p.partition_index, p.leader_epoch, p.partition_epoch, isr)
                    })
                    .collect();
                format!("AlterPartition {{ id: {id}, broker_epoch: {}, (partition, leader_epoch, partition_epoch, isr): {isrs:?} }}", request.broker_epoch)
            }
            Msg::AlterPartitionAnswer { id, response } => {
                let codes: Vec<_> = response
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| (p.partition_index, p.error_code, p.partition_epoch))
                    .collect();
                format!("AlterPartitionAnswer {{ id: {id}, error: {}, (partition, error, partition_epoch): {codes:?} }}", response.error_code)
            }
            other => format!("{other:?}"),
        }
    }
}

/// What a node waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Heartbeat,
    IsrCheck,
    MetadataPoll,
    HighWatermarkCheckpoint,
    /// Send (or send again) the registration.
    Register,
    /// The follower of a partition takes its next step (ask, fetch).
    Follow {
        partition: usize,
    },
    /// The request `id` had no answer in time.
    RequestTimeout {
        id: u64,
    },
    /// A leader's parked (long-polling) fetch `id` of a partition is answered as it is.
    FetchWaitOver {
        partition: usize,
        id: u64,
    },
    /// An acks=all produce `id` of a partition times out.
    ProduceTimeout {
        partition: usize,
        id: u64,
    },
    /// The controller's fencing check.
    Fencing,
}

/// A record a leader acknowledged to an acks=all producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub partition: usize,
    pub offset: i64,
    pub leader_epoch: i32,
    pub value: u64,
    pub leader: NodeId,
}

/// What one handler asks of the world.
pub struct Outbox {
    pub sends: Vec<(NodeId, Msg)>,
    /// (delay in ms, timer)
    pub timers: Vec<(i64, Timer)>,
    pub acks: Vec<Ack>,
    /// Trace lines, kept only when the run traces.
    pub notes: Vec<String>,
    pub tracing: bool,
}

impl Outbox {
    pub fn new(tracing: bool) -> Self {
        Self {
            sends: Vec::new(),
            timers: Vec::new(),
            acks: Vec::new(),
            notes: Vec::new(),
            tracing,
        }
    }

    pub fn send(&mut self, to: NodeId, msg: Msg) {
        self.sends.push((to, msg));
    }

    pub fn after(&mut self, delay_ms: i64, timer: Timer) {
        assert!(delay_ms >= 0, "a timer in the past");
        self.timers.push((delay_ms, timer));
    }

    /// A trace line, made only when the run traces.
    pub fn note(&mut self, line: impl FnOnce() -> String) {
        if self.tracing {
            self.notes.push(line());
        }
    }
}
