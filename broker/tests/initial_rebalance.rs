//! The first rebalance of an empty group, timed as Apache Kafka's coordinator times it (issue 11,
//! item 25): `group.initial.rebalance.delay.ms` is waited in whole windows, one more each time a
//! new member arrived in the last, so members that start together share the first generation.

mod common;

use std::time::{Duration, Instant};

use common::{find_coordinator, join_request, BrokerProcess};
use quipu_protocol::messages::*;

#[test]
fn members_arriving_within_a_window_share_the_first_generation_after_whole_windows() {
    let b = BrokerProcess::start(&["--set", "group.initial.rebalance.delay.ms=1000"]);
    let mut a = b.connect();
    find_coordinator(&mut a, "windows");
    let mut c = b.connect();
    let started = Instant::now();
    // JoinGroup v3 has no member-id round: each join is the member's only one.
    let a_join = a.send(ApiKey::JoinGroup, 3, &join_request("windows", ""));
    std::thread::sleep(Duration::from_millis(200));
    let c_join = c.send(ApiKey::JoinGroup, 3, &join_request("windows", ""));
    let a_done: JoinGroupResponse = a.receive(ApiKey::JoinGroup, 3, a_join);
    let took = started.elapsed();
    let c_done: JoinGroupResponse = c.receive(ApiKey::JoinGroup, 3, c_join);
    assert_eq!((a_done.error_code, c_done.error_code), (0, 0));
    assert_eq!((a_done.generation_id, c_done.generation_id), (1, 1));
    // The second member arrived in the first window, so a second window follows it: Kafka
    // completes at 2 × the delay, not at the delay after the last arrival.
    assert!(
        took >= Duration::from_millis(1_900),
        "completed after {took:?}"
    );
    assert!(
        took < Duration::from_millis(3_500),
        "completed after {took:?}"
    );
}
