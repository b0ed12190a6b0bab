//! One consumer group of the classic protocol: its members, generation, chosen protocol,
//! assignments and committed offsets, and the state machine Kafka's group coordinator runs:
//! `Empty → PreparingRebalance → CompletingRebalance → Stable`, back to `PreparingRebalance` when a
//! member joins, leaves, changes its subscription or misses its session timeout.
//!
//! Requests that must wait (a JoinGroup until every member has rejoined or the rebalance timeout
//! passes, a follower's SyncGroup until the leader's assignment arrives) leave a oneshot sender
//! with their member; completing the step answers them all.
//!
//! Invariants: the leader, when set, is a member; a member awaits at most one join and one sync;
//! `generation` only grows; a static instance id maps to exactly one member.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::offsets_topic::{GroupValue, MemberValue, OffsetValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka's DescribeGroups and ListGroups report.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// v9+ (KIP-814): the leader of an unchanged group need not assign again.
    pub skip_assignment: bool,
}

impl JoinOutcome {
    pub fn error(code: i16, member_id: &str) -> Self {
        Self {
            error: code,
            generation: -1,
            member_id: member_id.to_string(),
            ..Self::default()
        }
    }
}

/// What a SyncGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// Supported protocols with their metadata, in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    pub sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
    /// The member is removed if it is not heard from by then (unless a request of its waits).
    pub heartbeat_deadline: Instant,
}

impl Member {
    pub fn refresh(&mut self, now: Instant) {
        self.heartbeat_deadline = now + Duration::from_millis(self.session_timeout_ms as u64);
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    pub fn is_waiting(&self) -> bool {
        self.join_waiter.is_some() || self.sync_waiter.is_some()
    }
}

/// Kafka's `group.initial.rebalance.delay.ms` for the first rebalance of an empty group: the join
/// waits in windows of the delay, another window each time a new member arrived in the last one,
/// up to the rebalance timeout, and then completes whoever is in (pending members included).
#[derive(Debug, Clone, Copy)]
pub struct InitialDelay {
    window_end: Instant,
    limit: Instant,
    delay: Duration,
    new_member_added: bool,
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub state_timestamp_ms: i64,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out by a MEMBER_ID_REQUIRED answer (KIP-394), until they join or expire.
    pub pending_members: HashMap<String, Instant>,
    /// Static membership: instance id to member id.
    pub static_members: HashMap<String, String>,
    /// When the current rebalance stops waiting for members to rejoin.
    pub rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group waits for more members.
    pub initial_delay: Option<InitialDelay>,
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: None,
            offsets: BTreeMap::new(),
        }
    }

    pub fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// Whether a member with these protocols may join: same protocol type, and at least one
    /// protocol every member supports.
    pub fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(p, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == p))
            })
    }

    /// Kafka's `validateMember`: a request naming a static instance must come from the member
    /// that instance maps to now (else FENCED_INSTANCE_ID), and the member must exist.
    pub fn validate_member(&self, member_id: &str, instance: Option<&str>) -> Option<i16> {
        if let Some(instance) = instance {
            match self.static_members.get(instance) {
                None => return Some(UNKNOWN_MEMBER_ID),
                Some(owner) if owner != member_id => return Some(FENCED_INSTANCE_ID),
                Some(_) => {}
            }
        }
        (!self.members.contains_key(member_id)).then_some(UNKNOWN_MEMBER_ID)
    }

    /// The protocol every member supports that most members prefer.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(p, _)| p)
            .filter(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == *p))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some(choice) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == &choice.0) {
                    v.0 += 1;
                }
            }
        }
        votes
            .iter()
            .max_by_key(|(n, _)| *n)
            .map(|(_, c)| (*c).clone())
    }

    /// Starts a rebalance: pending syncs are told REBALANCE_IN_PROGRESS and the members get until
    /// the largest rebalance timeout to rejoin.
    pub fn prepare_rebalance(&mut self, now: Instant, now_ms: i64, initial_delay_ms: i32) {
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncOutcome {
                    error: REBALANCE_IN_PROGRESS,
                    ..SyncOutcome::default()
                });
            }
        }
        let timeout = self.rebalance_timeout();
        if self.state == GroupState::Empty {
            let delay = Duration::from_millis(initial_delay_ms.max(0) as u64);
            self.initial_delay = Some(InitialDelay {
                window_end: now + delay,
                limit: now + delay.max(timeout),
                delay,
                new_member_added: false,
            });
        }
        self.rebalance_deadline = Some(now + timeout);
        self.transition(GroupState::PreparingRebalance, now_ms);
    }

    /// The largest rebalance timeout of the members: how long a rebalance waits for them.
    fn rebalance_timeout(&self) -> Duration {
        Duration::from_millis(
            self.members
                .values()
                .map(|m| m.rebalance_timeout_ms.max(0) as u64)
                .max()
                .unwrap_or(0),
        )
    }

    /// A new member joined during the initial delay: another window follows the current one.
    pub fn note_new_member(&mut self) {
        if let Some(d) = self.initial_delay.as_mut() {
            d.new_member_added = true;
        }
    }

    /// Whether the join phase may end now: every member has rejoined and nobody is pending, or
    /// the deadline passed. The initial delay of an empty group's first rebalance holds it
    /// instead, window by window.
    pub fn join_complete(&mut self, now: Instant) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        if let Some(d) = self.initial_delay.as_mut() {
            if now < d.window_end {
                return false;
            }
            if d.new_member_added && now < d.limit {
                d.new_member_added = false;
                d.window_end = (now + d.delay).min(d.limit);
                return false;
            }
            return true;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some())
            && self.pending_members.is_empty();
        all_joined || self.rebalance_deadline.is_some_and(|d| now >= d)
    }

    /// Ends the join phase: dynamic members that did not rejoin are removed (static ones stay,
    /// with their last subscription, until their session expires, as in Kafka), the generation
    /// moves, a protocol and a leader that rejoined are chosen, and every waiting JoinGroup is
    /// answered (the leader with the member list). If members remain but none rejoined, the
    /// phase waits another rebalance timeout. Returns whether the group became empty.
    pub fn complete_join(&mut self, now: Instant, now_ms: i64) -> bool {
        self.initial_delay = None;
        self.rebalance_deadline = None;
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending_members.clear();
        if self.members.is_empty() {
            // The protocol type stays, as Kafka's ListGroups shows it for an emptied group.
            self.generation += 1;
            self.protocol = None;
            self.leader = None;
            self.transition(GroupState::Empty, now_ms);
            return true;
        }
        let joined = |m: &&Member| m.join_waiter.is_some();
        let Some(first_joined) = self
            .members
            .values()
            .find(joined)
            .map(|m| m.member_id.clone())
        else {
            self.rebalance_deadline = Some(now + self.rebalance_timeout());
            return false;
        };
        self.generation += 1;
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_none_or(|l| l.join_waiter.is_none())
        {
            self.leader = Some(first_joined);
        }
        self.transition(GroupState::CompletingRebalance, now_ms);
        self.answer_joins(now);
        false
    }

    /// Answers every waiting JoinGroup with the new generation; the leader gets the roster.
    fn answer_joins(&mut self, now: Instant) {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let roster: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.member_id.clone(),
                    m.group_instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect();
        let (generation, protocol_type) = (self.generation, self.protocol_type.clone());
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.refresh(now);
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinOutcome {
                    error: 0,
                    generation,
                    protocol_type: protocol_type.clone(),
                    protocol_name: Some(protocol.clone()),
                    leader: leader.clone(),
                    member_id: m.member_id.clone(),
                    members: if m.member_id == leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                    skip_assignment: false,
                });
            }
        }
    }

    /// Removes a member, answering its waiting requests with UNKNOWN_MEMBER_ID.
    pub fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        self.remove_member_with(member_id, UNKNOWN_MEMBER_ID)
    }

    /// Removes a member, answering its waiting requests with `error`.
    pub fn remove_member_with(&mut self, member_id: &str, error: i16) -> Option<Member> {
        let mut m = self.members.remove(member_id)?;
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinOutcome::error(error, member_id));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncOutcome {
                error,
                ..SyncOutcome::default()
            });
        }
        if let Some(instance) = &m.group_instance_id {
            if self.static_members.get(instance) == Some(&m.member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        Some(m)
    }

    /// The leader's assignment: stored for every member (absent ones get nothing), and every
    /// waiting SyncGroup is answered. The group is then stable.
    pub fn complete_sync(
        &mut self,
        assignments: HashMap<String, Bytes>,
        now: Instant,
        now_ms: i64,
    ) {
        let (protocol_type, protocol) = (self.protocol_type.clone(), self.protocol.clone());
        for m in self.members.values_mut() {
            m.assignment = assignments.get(&m.member_id).cloned().unwrap_or_default();
            m.refresh(now);
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncOutcome {
                    error: 0,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol.clone(),
                    assignment: m.assignment.clone(),
                });
            }
        }
        self.transition(GroupState::Stable, now_ms);
    }

    /// The group's membership record for `__consumer_offsets`.
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores the membership a `__consumer_offsets` record describes (at start): a group with
    /// members is stable, and each member has a session timeout from now to be heard from.
    pub fn restore(&mut self, value: GroupValue, now: Instant) {
        self.generation = value.generation;
        self.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
        self.protocol = value.protocol.clone();
        self.leader = value.leader;
        self.state_timestamp_ms = value.state_timestamp_ms;
        self.members.clear();
        self.static_members.clear();
        let protocol = value.protocol.unwrap_or_default();
        for m in value.members {
            if let Some(instance) = &m.group_instance_id {
                self.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let mut member = Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocol_type: self.protocol_type.clone().unwrap_or_default(),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                join_waiter: None,
                sync_waiter: None,
                heartbeat_deadline: now,
            };
            member.refresh(now);
            self.members.insert(m.member_id, member);
        }
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }
}

pub const NONE: i16 = 0;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const KAFKA_STORAGE_ERROR: i16 = 56;

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, instance: Option<&str>, protocols: &[&str], now: Instant) -> Member {
        Member {
            member_id: id.to_string(),
            group_instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 5_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            assignment: Bytes::new(),
            join_waiter: None,
            sync_waiter: None,
            heartbeat_deadline: now + Duration::from_secs(10),
        }
    }

    fn group_of(members: Vec<Member>) -> Group {
        let mut g = Group::new("g", 0);
        g.protocol_type = Some("consumer".into());
        for m in members {
            if let Some(i) = &m.group_instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(m.member_id.clone(), m);
        }
        g
    }

    #[test]
    fn the_protocol_is_one_every_member_supports_and_most_prefer() {
        let now = Instant::now();
        let g = group_of(vec![
            member("a", None, &["range", "roundrobin"], now),
            member("b", None, &["roundrobin", "range"], now),
            member("c", None, &["roundrobin", "sticky"], now),
        ]);
        assert_eq!(g.select_protocol().as_deref(), Some("roundrobin"));
        let range = |p: &str| vec![(p.to_string(), Bytes::new())];
        assert!(g.supports("consumer", &range("roundrobin")));
        assert!(
            !g.supports("consumer", &range("range")),
            "c cannot use range"
        );
        assert!(
            !g.supports("connect", &range("roundrobin")),
            "another protocol type"
        );
    }

    #[test]
    fn requests_are_checked_against_the_member_and_its_instance() {
        let now = Instant::now();
        let g = group_of(vec![member("m2", Some("i1"), &["range"], now)]);
        assert_eq!(g.validate_member("m2", Some("i1")), None);
        assert_eq!(
            g.validate_member("m1", Some("i1")),
            Some(FENCED_INSTANCE_ID)
        );
        assert_eq!(g.validate_member("m2", Some("i9")), Some(UNKNOWN_MEMBER_ID));
        assert_eq!(g.validate_member("nobody", None), Some(UNKNOWN_MEMBER_ID));
    }

    #[test]
    fn a_join_phase_ends_when_all_rejoined_and_moves_the_generation() {
        let now = Instant::now();
        let mut g = group_of(vec![
            member("a", None, &["range"], now),
            member("b", None, &["range"], now),
        ]);
        g.transition(GroupState::Stable, 0);
        g.prepare_rebalance(now, 0, 3_000);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert!(
            g.initial_delay.is_none(),
            "only an empty group waits the initial delay"
        );
        let (tx, mut rx) = oneshot::channel();
        g.members.get_mut("a").unwrap().join_waiter = Some(tx);
        assert!(!g.join_complete(now), "b has not rejoined");
        // b never rejoins: at the deadline the phase ends without it (it is dynamic).
        let later = now + Duration::from_secs(6);
        assert!(g.join_complete(later));
        assert!(!g.complete_join(later, 1));
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.generation, 1);
        assert_eq!(g.leader.as_deref(), Some("a"));
        assert!(!g.members.contains_key("b"));
        let answer = rx.try_recv().expect("a's JoinGroup is answered");
        assert_eq!((answer.error, answer.generation), (NONE, 1));
    }

    #[test]
    fn an_empty_group_waits_the_initial_delay_window_by_window() {
        let now = Instant::now();
        let mut g = Group::new("g", 0);
        g.members
            .insert("a".into(), member("a", None, &["range"], now));
        g.prepare_rebalance(now, 0, 3_000);
        let (tx, _rx) = oneshot::channel();
        g.members.get_mut("a").unwrap().join_waiter = Some(tx);
        assert!(!g.join_complete(now + Duration::from_millis(2_999)));
        g.note_new_member();
        // A member arrived in the first window: a second window follows.
        assert!(!g.join_complete(now + Duration::from_millis(3_000)));
        assert!(
            g.join_complete(now + Duration::from_millis(5_000)),
            "capped by the rebalance timeout"
        );
    }
}
