//! Partition assignment strategies of the classic consumer protocol, as the Java client computes
//! them, so a group may mix Quipu, Java and librdkafka members: the leader runs the strategy the
//! group chose.
//!
//! - `range`: per topic, its partitions in order are cut into contiguous ranges over the
//!   members subscribed to it (sorted by member id); the first `partitions % members` members
//!   get one extra.
//! - `roundrobin`: all subscribed partitions, sorted by topic and partition, dealt one by one to
//!   the members (sorted by member id), skipping members not subscribed to a partition's topic.
//! - `cooperative-sticky`: each member keeps what it owns (a partition claimed twice stays with
//!   the claim of the newest generation), partitions nobody owns go to the subscribed member
//!   holding the fewest, and partitions move from the fullest member to the emptiest subscribed
//!   one while they differ by more than one. Our own balancing, not the Java client's exact
//!   algorithm (only the leader computes it, so members need not agree). Cooperatively, a
//!   partition that moves is first only taken from its owner: the owner revokes it and rejoins,
//!   and the next rebalance hands it over.
//!
//! Invariant: every partition of a subscribed topic goes to at most one member subscribed to it,
//! and to exactly one except for partitions withheld while their owner gives them up.

use std::collections::{BTreeMap, BTreeSet};

use crate::topic_partition::TopicPartition;

/// What a member told the group when it joined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MemberSubscription {
    pub topics: Vec<String>,
    /// The partitions it owns (sent by cooperative and sticky members).
    pub owned: Vec<TopicPartition>,
    /// The generation it owned them in (-1: not known).
    pub generation: i32,
}

/// Every member's assignment under `strategy`; `partitions`: topic → partition count.
pub(crate) fn assign(
    strategy: &str,
    members: &BTreeMap<String, MemberSubscription>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.keys().map(|m| (m.clone(), Vec::new())).collect();
    match strategy {
        "cooperative-sticky" => return cooperative_sticky(members, partitions),
        "roundrobin" => {
            let all: BTreeSet<&String> = members.values().flat_map(|s| &s.topics).collect();
            let ids: Vec<&String> = members.keys().collect();
            let mut next = 0usize;
            for topic in all {
                let count = partitions.get(topic).copied().unwrap_or(0);
                for p in 0..count {
                    // The next member (cyclically) subscribed to this topic.
                    for _ in 0..ids.len() {
                        let m = ids[next % ids.len()];
                        next += 1;
                        if members[m].topics.contains(topic) {
                            out.get_mut(m)
                                .expect("member")
                                .push(TopicPartition::new(topic, p));
                            break;
                        }
                    }
                }
            }
        }
        _ => {
            let mut by_topic: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
            for (m, sub) in members {
                for t in &sub.topics {
                    by_topic.entry(t).or_default().push(m);
                }
            }
            for (topic, mut subscribers) in by_topic {
                subscribers.sort();
                subscribers.dedup();
                let count = partitions.get(topic).copied().unwrap_or(0);
                let n = subscribers.len() as i32;
                let (per, extra) = (count / n, count % n);
                let mut start = 0;
                for (i, m) in subscribers.into_iter().enumerate() {
                    let len = per + i32::from((i as i32) < extra);
                    let target = out.get_mut(m).expect("member");
                    target.extend((start..start + len).map(|p| TopicPartition::new(topic, p)));
                    start += len;
                }
            }
        }
    }
    out
}

fn cooperative_sticky(
    members: &BTreeMap<String, MemberSubscription>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let owner = valid_claims(members, partitions);
    let mut held: Held<'_> = members
        .keys()
        .map(|m| (m.as_str(), BTreeSet::new()))
        .collect();
    for (tp, (m, _)) in &owner {
        held.get_mut(m).expect("a member").insert(tp.clone());
    }
    place_unowned(members, partitions, &owner, &mut held);
    balance(members, &mut held);
    // Cooperatively, a partition changes hands in two rebalances: withheld now, while its owner
    // revokes it.
    held.into_iter()
        .map(|(m, ps)| {
            let kept = ps
                .into_iter()
                .filter(|tp| owner.get(tp).is_none_or(|(o, _)| *o == m))
                .collect();
            (m.to_string(), kept)
        })
        .collect()
}

/// What each member holds while the cooperative assignment is computed.
type Held<'m> = BTreeMap<&'m str, BTreeSet<TopicPartition>>;

/// Whether member `m` subscribes to `topic`.
fn subscribed(members: &BTreeMap<String, MemberSubscription>, m: &str, topic: &str) -> bool {
    members[m].topics.iter().any(|t| t == topic)
}

/// Claims still valid (the partition exists and its claimer subscribes to its topic), with the
/// claim's generation; a partition claimed twice stays with the newest generation's claim.
fn valid_claims<'m>(
    members: &'m BTreeMap<String, MemberSubscription>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<TopicPartition, (&'m str, i32)> {
    let exists = |tp: &TopicPartition| {
        partitions
            .get(&tp.topic)
            .is_some_and(|count| (0..*count).contains(&tp.partition))
    };
    let mut owner: BTreeMap<TopicPartition, (&str, i32)> = BTreeMap::new();
    for (m, sub) in members {
        for tp in &sub.owned {
            if !exists(tp) || !subscribed(members, m, &tp.topic) {
                continue;
            }
            if owner.get(tp).is_none_or(|(_, g)| sub.generation > *g) {
                owner.insert(tp.clone(), (m, sub.generation));
            }
        }
    }
    owner
}

/// Partitions nobody owns go to the subscribed member holding the fewest.
fn place_unowned(
    members: &BTreeMap<String, MemberSubscription>,
    partitions: &BTreeMap<String, i32>,
    owner: &BTreeMap<TopicPartition, (&str, i32)>,
    held: &mut Held<'_>,
) {
    let topics: BTreeSet<&String> = members.values().flat_map(|s| &s.topics).collect();
    for topic in topics {
        for p in 0..partitions.get(topic).copied().unwrap_or(0) {
            let tp = TopicPartition::new(topic.as_str(), p);
            if owner.contains_key(&tp) {
                continue;
            }
            let fewest = held
                .iter()
                .filter(|(m, _)| subscribed(members, m, topic))
                .min_by_key(|(m, ps)| (ps.len(), **m))
                .map(|(m, _)| *m);
            if let Some(m) = fewest {
                held.get_mut(m).expect("a member").insert(tp);
            }
        }
    }
}

/// Moves partitions from the fullest member to the emptiest one subscribed to them while
/// their counts differ by more than one.
fn balance(members: &BTreeMap<String, MemberSubscription>, held: &mut Held<'_>) {
    // Each move lowers the sum of squared counts, so this ends.
    loop {
        let mut order: Vec<&str> = held.keys().copied().collect();
        order.sort_by_key(|m| (std::cmp::Reverse(held[m].len()), *m));
        let step = order.iter().find_map(|from| {
            order.iter().rev().find_map(|to| {
                if held[from].len() <= held[to].len() + 1 {
                    return None;
                }
                let tp = held[from]
                    .iter()
                    .rev()
                    .find(|tp| subscribed(members, to, &tp.topic))?;
                Some((*from, *to, tp.clone()))
            })
        });
        let Some((from, to, tp)) = step else { break };
        held.get_mut(from).expect("a member").remove(&tp);
        held.get_mut(to).expect("a member").insert(tp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(spec: &[(&str, &[&str])]) -> BTreeMap<String, MemberSubscription> {
        spec.iter()
            .map(|(m, ts)| {
                let sub = MemberSubscription {
                    topics: ts.iter().map(|t| t.to_string()).collect(),
                    owned: Vec::new(),
                    generation: -1,
                };
                (m.to_string(), sub)
            })
            .collect()
    }

    fn owning(
        mut members: BTreeMap<String, MemberSubscription>,
        owned: &BTreeMap<String, Vec<TopicPartition>>,
        generation: i32,
    ) -> BTreeMap<String, MemberSubscription> {
        for (m, sub) in members.iter_mut() {
            sub.owned = owned.get(m).cloned().unwrap_or_default();
            sub.generation = generation;
        }
        members
    }

    /// Every partition assigned at most once, only to subscribers; the count assigned.
    fn check(
        members: &BTreeMap<String, MemberSubscription>,
        a: &BTreeMap<String, Vec<TopicPartition>>,
    ) -> usize {
        let mut seen = BTreeSet::new();
        for (m, ps) in a {
            for tp in ps {
                assert!(members[m].topics.contains(&tp.topic), "{m} got {tp}");
                assert!(seen.insert(tp.clone()), "{tp} assigned twice");
            }
        }
        seen.len()
    }

    #[test]
    fn cooperative_sticky_balances_keeps_owners_and_moves_in_two_steps() {
        let p: BTreeMap<String, i32> = [("t".to_string(), 12)].into();
        // Three members from nothing: 4 each.
        let three = members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let first = assign("cooperative-sticky", &three, &p);
        assert_eq!(check(&three, &first), 12);
        assert!(first.values().all(|ps| ps.len() == 4), "{first:?}");
        // A fourth joins: each owner keeps 3 of its 4 and gives one up (withheld this round);
        // nobody's kept partitions move.
        let four = owning(
            members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"]), ("d", &["t"])]),
            &first,
            1,
        );
        let second = assign("cooperative-sticky", &four, &p);
        assert_eq!(check(&four, &second), 9);
        for m in ["a", "b", "c"] {
            assert_eq!(second[m].len(), 3);
            assert!(second[m].iter().all(|tp| first[m].contains(tp)));
        }
        assert!(
            second["d"].is_empty(),
            "withheld until their owners revoked them"
        );
        // After the owners revoked them, the follow-up rebalance hands the three to d.
        let after = owning(four.clone(), &second, 2);
        let third = assign("cooperative-sticky", &after, &p);
        assert_eq!(check(&after, &third), 12);
        assert!(third.values().all(|ps| ps.len() == 3), "{third:?}");
        for m in ["a", "b", "c"] {
            assert_eq!(third[m], second[m], "owners keep what they kept");
        }
    }

    #[test]
    fn cooperative_sticky_respects_subscriptions_stale_claims_and_double_claims() {
        let p: BTreeMap<String, i32> = [("t".to_string(), 4), ("u".to_string(), 2)].into();
        let mut m = members(&[("a", &["t", "u"]), ("b", &["t"])]);
        // a claims t-0 in generation 3 and a vanished partition; b claims t-0 in generation 2
        // and u-0, which it is not subscribed to.
        m.get_mut("a").unwrap().owned =
            vec![TopicPartition::new("t", 0), TopicPartition::new("t", 9)];
        m.get_mut("a").unwrap().generation = 3;
        m.get_mut("b").unwrap().owned =
            vec![TopicPartition::new("t", 0), TopicPartition::new("u", 0)];
        m.get_mut("b").unwrap().generation = 2;
        let a = assign("cooperative-sticky", &m, &p);
        assert_eq!(check(&m, &a), 6);
        assert!(
            a["a"].contains(&TopicPartition::new("t", 0)),
            "the newer claim wins"
        );
        assert!(a["b"].iter().all(|tp| tp.topic == "t"));
        assert_eq!(a["a"].len(), 3);
        assert_eq!(a["b"].len(), 3);
    }

    #[test]
    fn range_gives_contiguous_ranges_with_extras_first() {
        let m = members(&[("b", &["t"]), ("a", &["t"]), ("c", &["t", "u"])]);
        let p: BTreeMap<String, i32> = [("t".to_string(), 7), ("u".to_string(), 2)].into();
        let a = assign("range", &m, &p);
        let parts = |id: &str| {
            a[id]
                .iter()
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            parts("a"),
            [("t".into(), 0), ("t".into(), 1), ("t".into(), 2)]
        );
        assert_eq!(parts("b"), [("t".into(), 3), ("t".into(), 4)]);
        assert_eq!(
            parts("c"),
            [
                ("t".into(), 5),
                ("t".into(), 6),
                ("u".into(), 0),
                ("u".into(), 1)
            ]
        );
    }

    #[test]
    fn roundrobin_deals_every_partition_once() {
        let m = members(&[("a", &["t", "u"]), ("b", &["t"])]);
        let p: BTreeMap<String, i32> = [("t".to_string(), 3), ("u".to_string(), 2)].into();
        let a = assign("roundrobin", &m, &p);
        let total: usize = a.values().map(Vec::len).sum();
        assert_eq!(total, 5);
        // As the Java client deals: t0 a, t1 b, t2 a, then u0 and u1 to a (b skipped).
        assert_eq!(a["b"], vec![TopicPartition::new("t", 1)]);
        assert_eq!(a["a"].len(), 4);
    }
}
