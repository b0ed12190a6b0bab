//! Broker liveness, kept by the active controller (Kafka's BrokerHeartbeatManager): when it last
//! heard from each broker, and the fencing that follows. A broker silent for
//! `broker.session.timeout.ms` is fenced (no longer offered to clients or given new replicas); a
//! fenced broker heard from again, at its current registration, is unfenced. A registration of
//! a live broker's id by another run (incarnation) is refused while that broker is live.
//!
//! Invariants: only the leader fences or unfences, and only through committed records; a new
//! leader starts every broker's clock afresh (it cannot know what its predecessor heard), so a
//! change of leader never fences a live broker, nor does a registration it has not yet heard a
//! heartbeat for; the table holds at most one entry per registered broker id.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::image::MetadataImage;
use crate::metadata_log::record::MetadataRecord;

pub struct Liveness {
    session_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The term in which the clocks were started; `None` while this node does not lead.
    term: Option<u64>,
    /// When each broker was last heard from, with the registration epoch it named.
    heard: BTreeMap<i32, (Instant, i64)>,
    /// The run (incarnation id) each broker id last registered from, as this leader saw it.
    incarnations: BTreeMap<i32, uuid::Uuid>,
    /// Brokers in controlled shutdown, at the registration epoch that asked for it: they stay
    /// fenced, whatever heartbeat still arrives, until they register anew.
    shutting_down: BTreeMap<i32, i64>,
}

impl Liveness {
    pub fn new(session_timeout: Duration) -> Self {
        Self {
            session_timeout,
            state: Mutex::new(State::default()),
        }
    }

    /// Records a heartbeat of `node_id` at `broker_epoch`.
    pub fn heard(&self, node_id: i32, broker_epoch: i64, now: Instant) {
        let mut state = self.state.lock().expect("liveness lock");
        state.heard.insert(node_id, (now, broker_epoch));
    }

    /// Whether a registration of `node_id` by the run `incarnation` may go ahead at `now`: not
    /// while another run of that id is live (`live`: unfenced, and heard from within its
    /// session), as Kafka refuses a duplicate broker id. Records the run when it may.
    pub fn registering(
        &self,
        node_id: i32,
        incarnation: uuid::Uuid,
        live: bool,
        now: Instant,
    ) -> bool {
        let mut state = self.state.lock().expect("liveness lock");
        let heard_recently = state
            .heard
            .get(&node_id)
            .is_some_and(|(at, _)| now.duration_since(*at) < self.session_timeout);
        let another_run = state
            .incarnations
            .get(&node_id)
            .is_some_and(|known| *known != incarnation);
        if live && heard_recently && another_run {
            return false;
        }
        state.incarnations.insert(node_id, incarnation);
        true
    }

    /// Forgets what was heard: this node does not lead (or no longer does).
    /// `node_id` at `broker_epoch` asked for controlled shutdown: it stays fenced until a
    /// registration at a newer epoch.
    pub fn shutting_down(&self, node_id: i32, broker_epoch: i64) {
        let mut state = self.state.lock().expect("liveness lock");
        state.shutting_down.insert(node_id, broker_epoch);
    }

    pub fn not_leading(&self) {
        *self.state.lock().expect("liveness lock") = State::default();
    }

    /// As the leader in `term`, the fencing changes `image` needs at `now`: brokers silent past
    /// the session fenced, fenced brokers heard from at their current epoch unfenced.
    pub fn changes(&self, term: u64, image: &MetadataImage, now: Instant) -> Vec<MetadataRecord> {
        let mut state = self.state.lock().expect("liveness lock");
        if state.term != Some(term) {
            // A new term: every unfenced broker gets a full session from now; a fenced one stays
            // fenced until this leader hears from it.
            state.term = Some(term);
            state.heard = image
                .brokers()
                .filter(|b| !b.fenced)
                .map(|b| (b.node_id, (now, b.broker_epoch)))
                .collect();
        }
        let mut changes = Vec::new();
        for broker in image.brokers() {
            // Registered (or registered anew) unfenced since the clocks started: a full session
            // from its registration, as from a heartbeat.
            if !broker.fenced {
                let heard = state
                    .heard
                    .entry(broker.node_id)
                    .or_insert((now, broker.broker_epoch));
                if heard.1 < broker.broker_epoch {
                    *heard = (now, broker.broker_epoch);
                }
            }
            let shut_down = state.shutting_down.get(&broker.node_id) == Some(&broker.broker_epoch);
            let live = !shut_down
                && state.heard.get(&broker.node_id).is_some_and(|(at, epoch)| {
                    *epoch == broker.broker_epoch && now.duration_since(*at) < self.session_timeout
                });
            if live == broker.fenced {
                changes.push(MetadataRecord::BrokerFencing {
                    node_id: broker.node_id,
                    fenced: !live,
                });
            }
        }
        state.heard.retain(|id, _| image.broker(*id).is_some());
        // A registration at a newer epoch ends a controlled shutdown.
        state
            .shutting_down
            .retain(|id, epoch| image.broker(*id).is_some_and(|b| b.broker_epoch == *epoch));
        state
            .incarnations
            .retain(|id, _| image.broker(*id).is_some());
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(fenced: bool) -> MetadataImage {
        let mut image = MetadataImage::default();
        image
            .apply_all(&[
                MetadataRecord::BrokerRegistered {
                    node_id: 1,
                    broker_epoch: 3,
                    host: "h".into(),
                    port: 1,
                    rack: None,
                },
                MetadataRecord::BrokerFencing { node_id: 1, fenced },
            ])
            .unwrap();
        image
    }

    #[test]
    fn a_silent_broker_is_fenced_after_its_session_and_unfenced_when_heard_again() {
        let live = Liveness::new(Duration::from_secs(9));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(
            live.changes(1, &image(false), at(0)).is_empty(),
            "a new leader gives a full session"
        );
        live.heard(1, 3, at(5));
        assert!(live.changes(1, &image(false), at(13)).is_empty());
        let fence = live.changes(1, &image(false), at(14));
        assert_eq!(
            fence,
            vec![MetadataRecord::BrokerFencing {
                node_id: 1,
                fenced: true
            }]
        );
        assert!(
            live.changes(1, &image(true), at(15)).is_empty(),
            "stays fenced while silent"
        );
        live.heard(1, 2, at(16));
        assert!(
            live.changes(1, &image(true), at(16)).is_empty(),
            "an old registration's heartbeat does not count"
        );
        live.heard(1, 3, at(17));
        let unfence = live.changes(1, &image(true), at(17));
        assert_eq!(
            unfence,
            vec![MetadataRecord::BrokerFencing {
                node_id: 1,
                fenced: false
            }]
        );
        assert!(
            live.changes(2, &image(true), at(40)).is_empty(),
            "a new leader does not unfence a broker it has not heard from"
        );
        assert!(
            live.changes(3, &image(false), at(80)).is_empty(),
            "a new leader gives unfenced brokers a full session"
        );
        let mut registered_later = image(false);
        registered_later
            .apply_all(&[
                MetadataRecord::BrokerRegistered {
                    node_id: 2,
                    broker_epoch: 1,
                    host: "h".into(),
                    port: 2,
                    rack: None,
                },
                MetadataRecord::BrokerFencing {
                    node_id: 2,
                    fenced: false,
                },
            ])
            .unwrap();
        live.heard(1, 3, at(86));
        assert!(
            live.changes(3, &registered_later, at(85)).is_empty(),
            "a broker registered during the term gets a full session from then"
        );
        let fenced = live.changes(3, &registered_later, at(94));
        assert_eq!(fenced.len(), 1, "{fenced:?}");
    }

    #[test]
    fn another_run_of_a_live_broker_id_is_refused_until_its_session_runs_out() {
        let liveness = Liveness::new(Duration::from_secs(9));
        let (first, second) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let start = Instant::now();
        assert!(liveness.registering(1, first, false, start));
        liveness.heard(1, 1, start);
        assert!(
            liveness.registering(1, first, true, start),
            "the same run again"
        );
        assert!(!liveness.registering(1, second, true, start + Duration::from_secs(1)));
        // Fenced (a clean shutdown), or silent past its session (killed): the new run may.
        assert!(liveness.registering(1, second, false, start + Duration::from_secs(1)));
        assert!(!liveness.registering(1, first, true, start + Duration::from_secs(2)));
        assert!(liveness.registering(1, first, true, start + Duration::from_secs(10)));
    }
}
