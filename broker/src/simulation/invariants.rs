//! The invariant checker, run after every event of a run. What it checks, per partition:
//!
//! 1. At most one broker acts as leader in a leader epoch.
//! 2. A leader's high watermark never moves back while it leads (one run of it, one epoch);
//!    and no leader's high watermark passes what every in-sync replica of its epoch (the
//!    controller's in-sync set) holds of its log.
//! 3. Every acknowledged record is committed at its offset with its value, and the current
//!    leader (the one the controller names, once it acts as leader in that epoch) holds every
//!    committed record: committed records are never lost.
//! 4. Every replica agrees, below its high watermark, with every other below theirs: the first
//!    replica whose high watermark passes an offset fixes the committed record there (kept in
//!    `committed`), and every replica whose high watermark passes it must hold the same.
//! 5. Each log's offsets are contiguous and its epochs never go back; its epoch cache names
//!    exactly where each epoch starts.
//!
//! The checks are incremental (what each replica agrees with is remembered and re-checked only
//! past its last truncation), so a step costs little however long the logs are.

use std::collections::BTreeMap;

use super::controller::Controller;
use super::log::{Entry, SimLog};
use super::messages::{Ack, NodeId};
use super::node::Broker;
use super::TOPIC;

/// How far one replica's log has been checked.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    cuts_seen: usize,
    /// The length of the log's prefix that equals the committed records.
    agreed_len: i64,
    /// The length of the log's prefix whose shape (invariant 5) is checked.
    shaped_len: i64,
}

pub struct Checker {
    /// Per partition: the committed records, `(epoch, value)` by offset.
    committed: Vec<Vec<(i32, u64)>>,
    /// Per (partition, leader epoch): the broker seen acting as its leader.
    leaders: BTreeMap<(usize, i32), NodeId>,
    /// Per (broker, run, partition): the epoch it leads and its high watermark then.
    leading: BTreeMap<(NodeId, u32, usize), (i32, i64)>,
    progress: BTreeMap<(NodeId, usize), Progress>,
    /// Per partition: acknowledged records by offset.
    acked: Vec<BTreeMap<i64, u64>>,
    check_in_sync_holds: bool,
}

impl Checker {
    pub fn new(partitions: usize, check_in_sync_holds: bool) -> Self {
        Self {
            committed: vec![Vec::new(); partitions],
            leaders: BTreeMap::new(),
            leading: BTreeMap::new(),
            progress: BTreeMap::new(),
            acked: vec![BTreeMap::new(); partitions],
            check_in_sync_holds,
        }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.iter().map(BTreeMap::len).sum()
    }

    /// Every invariant after one event, `acks` being the acknowledgements it made.
    pub fn check(
        &mut self,
        brokers: &[Broker],
        controller: &Controller,
        acks: &[Ack],
    ) -> Result<(), String> {
        for p in 0..self.committed.len() {
            for b in brokers {
                self.shape(b, p)?;
            }
            for b in brokers.iter().filter(|b| b.up) {
                self.commit_below_high_watermark(b, p);
            }
            for b in brokers {
                self.agree(b, p)?;
            }
            self.leadership(brokers, controller, p)?;
        }
        for ack in acks {
            self.acknowledged(ack)?;
        }
        for p in 0..self.committed.len() {
            self.current_leader_holds_committed(brokers, controller, p)?;
        }
        Ok(())
    }

    /// Invariant 5, past the last check (and past any truncation since).
    fn shape(&mut self, b: &Broker, p: usize) -> Result<(), String> {
        let log = &b.partitions[p].log;
        let progress = self.progress.entry((b.id, p)).or_default();
        for &cut in &log.cuts()[progress.cuts_seen..] {
            progress.agreed_len = progress.agreed_len.min(cut);
            progress.shaped_len = progress.shaped_len.min(cut);
        }
        progress.cuts_seen = log.cuts().len();
        let end = log.log_end_offset();
        if progress.shaped_len == end {
            return Ok(());
        }
        let entries = log.entries();
        for i in progress.shaped_len.max(0) as usize..entries.len() {
            if entries[i].offset != i as i64 {
                return Err(format!(
                    "5: broker {} partition {p}: offset {} at position {i}",
                    b.id, entries[i].offset
                ));
            }
            if i > 0 && entries[i].epoch < entries[i - 1].epoch {
                return Err(format!(
                    "5: broker {} partition {p}: epoch goes back at offset {i}",
                    b.id
                ));
            }
        }
        progress.shaped_len = end;
        cache_names_epoch_starts(log).map_err(|e| format!("5: broker {} partition {p}: {e}", b.id))
    }

    /// The records below `b`'s high watermark are committed: the first to reach an offset fixes it.
    fn commit_below_high_watermark(&mut self, b: &Broker, p: usize) {
        let part = &b.partitions[p];
        let committed = &mut self.committed[p];
        let hw = part.high_watermark();
        while (committed.len() as i64) < hw {
            let e = part.log.entries()[committed.len()];
            committed.push((e.epoch, e.value));
        }
    }

    /// Invariant 4: how far `b`'s log equals the committed records; it must reach its high
    /// watermark.
    fn agree(&mut self, b: &Broker, p: usize) -> Result<(), String> {
        let progress = self.progress.get_mut(&(b.id, p)).expect("shaped first");
        let committed = &self.committed[p];
        let entries = b.partitions[p].log.entries();
        let limit = (entries.len()).min(committed.len());
        while (progress.agreed_len as usize) < limit {
            let i = progress.agreed_len as usize;
            if (entries[i].epoch, entries[i].value) != committed[i] {
                break;
            }
            progress.agreed_len += 1;
        }
        let hw = b.partitions[p].high_watermark();
        if b.up && progress.agreed_len < hw {
            let i = progress.agreed_len as usize;
            return Err(format!(
                "4: broker {} partition {p} holds {:?} at offset {i}, below its high watermark {hw}, where {:?} (epoch, value) was committed",
                b.id, entries[i], committed[i]
            ));
        }
        Ok(())
    }

    fn agreed_len(&self, b: NodeId, p: usize) -> i64 {
        self.progress.get(&(b, p)).map_or(0, |x| x.agreed_len)
    }

    /// Invariants 1 and 2.
    fn leadership(
        &mut self,
        brokers: &[Broker],
        controller: &Controller,
        p: usize,
    ) -> Result<(), String> {
        let state = &controller.image.topic(TOPIC).expect("the topic").partitions[p];
        for b in brokers.iter().filter(|b| b.up) {
            let part = &b.partitions[p];
            let key = (b.id, b.incarnation, p);
            if !part.is_leader() {
                self.leading.remove(&key);
                continue;
            }
            let (epoch, hw) = (part.leader_epoch(), part.high_watermark());
            let first = *self.leaders.entry((p, epoch)).or_insert(b.id);
            if first != b.id {
                return Err(format!(
                    "1: brokers {first} and {} both lead partition {p} in epoch {epoch}",
                    b.id
                ));
            }
            if let Some(&(e, before)) = self.leading.get(&key) {
                if e == epoch && hw < before {
                    return Err(format!("2: leader {} of partition {p} moved its high watermark back from {before} to {hw} in epoch {epoch}", b.id));
                }
            }
            self.leading.insert(key, (epoch, hw));
            if state.leader_epoch != epoch || !self.check_in_sync_holds {
                continue;
            }
            for &r in &state.isr {
                if self.agreed_len(r, p) < hw {
                    return Err(format!(
                        "2: leader {} of partition {p} publishes high watermark {hw} in epoch {epoch}, but in-sync replica {r} holds only {} of its records (in-sync set {:?})",
                        b.id, self.agreed_len(r, p), state.isr
                    ));
                }
            }
        }
        Ok(())
    }

    /// Invariant 3, first half: an acknowledged record is committed where it was acknowledged.
    fn acknowledged(&mut self, ack: &Ack) -> Result<(), String> {
        let p = ack.partition;
        let committed = self.committed[p].get(ack.offset as usize);
        if committed != Some(&(ack.leader_epoch, ack.value)) {
            return Err(format!(
                "3: {ack:?} acknowledged, but the committed record there is {committed:?}"
            ));
        }
        if let Some(before) = self.acked[p].insert(ack.offset, ack.value) {
            return Err(format!(
                "3: offset {} of partition {p} acknowledged twice ({before}, then {})",
                ack.offset, ack.value
            ));
        }
        Ok(())
    }

    /// Invariant 3, second half: the current leader holds every committed record.
    fn current_leader_holds_committed(
        &self,
        brokers: &[Broker],
        controller: &Controller,
        p: usize,
    ) -> Result<(), String> {
        let state = &controller.image.topic(TOPIC).expect("the topic").partitions[p];
        let Some(leader) = brokers.iter().find(|b| b.id == state.leader && b.up) else {
            return Ok(());
        };
        let part = &leader.partitions[p];
        if !part.is_leader() || part.leader_epoch() != state.leader_epoch {
            return Ok(());
        }
        let committed = self.committed[p].len() as i64;
        let agreed = self.agreed_len(leader.id, p);
        if agreed < committed {
            let lost: Vec<_> = self.acked[p].range(agreed..).take(5).collect();
            return Err(format!(
                "3: leader {} of partition {p} in epoch {} holds {agreed} of the {committed} committed records (acknowledged from there: {lost:?}; its log there: {:?})",
                leader.id, state.leader_epoch, part.log.entry(agreed)
            ));
        }
        Ok(())
    }

    /// At the end, everything healed and in sync: every replica's log is the committed records,
    /// and every acknowledged record is in it.
    pub fn final_check(&self, brokers: &[Broker]) -> Result<(), String> {
        for (p, committed) in self.committed.iter().enumerate() {
            for b in brokers.iter().filter(|b| b.hosts(p)) {
                let entries: Vec<(i32, u64)> = b.partitions[p]
                    .log
                    .entries()
                    .iter()
                    .map(|e| (e.epoch, e.value))
                    .collect();
                if &entries != committed {
                    return Err(format!(
                        "end: broker {} partition {p} holds {} records, not the {} committed",
                        b.id,
                        entries.len(),
                        committed.len()
                    ));
                }
            }
            for (&offset, &value) in &self.acked[p] {
                if committed.get(offset as usize).map(|c| c.1) != Some(value) {
                    return Err(format!(
                        "end: acknowledged {value} at {offset} of partition {p} is lost"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The epoch cache has one entry per epoch of the log, at the offset where it starts.
fn cache_names_epoch_starts(log: &SimLog) -> Result<(), String> {
    let entries: &[Entry] = log.entries();
    let cache = log.epoch_entries();
    let epoch_at = |o: i64| entries.get(o as usize).map(|e| e.epoch);
    if entries.is_empty() {
        return match cache.is_empty() {
            true => Ok(()),
            false => Err(format!("an empty log with epochs {cache:?}")),
        };
    }
    if cache.first().map(|c| c.start_offset) != Some(0) {
        return Err(format!("the first epoch does not start at 0: {cache:?}"));
    }
    for (i, c) in cache.iter().enumerate() {
        let end = cache
            .get(i + 1)
            .map_or(log.log_end_offset(), |n| n.start_offset);
        let starts_here = c.start_offset == 0 || epoch_at(c.start_offset - 1) != Some(c.epoch);
        if epoch_at(c.start_offset) != Some(c.epoch)
            || epoch_at(end - 1) != Some(c.epoch)
            || !starts_here
        {
            return Err(format!(
                "epoch {} does not span {}..{end}: cache {cache:?}",
                c.epoch, c.start_offset
            ));
        }
    }
    Ok(())
}
