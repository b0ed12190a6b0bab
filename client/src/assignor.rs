//! Partition assignment strategies of the classic consumer protocol, as the Java client computes
//! them, so a group may mix Quipu, Java and librdkafka members: the leader runs the strategy the
//! group chose.
//!
//! - `range`: per topic, its partitions in order are cut into contiguous ranges over the
//!   members subscribed to it (sorted by member id); the first `partitions % members` members
//!   get one extra.
//! - `roundrobin`: all subscribed partitions, sorted by topic and partition, dealt one by one to
//!   the members (sorted by member id), skipping members not subscribed to a partition's topic.
//!
//! Invariant: every partition of a subscribed topic goes to exactly one member subscribed to it.

use std::collections::{BTreeMap, BTreeSet};

use crate::consumer::TopicPartition;

/// `members`: member id → subscribed topics; `partitions`: topic → partition count.
pub(crate) fn assign(
    strategy: &str,
    members: &BTreeMap<String, Vec<String>>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.keys().map(|m| (m.clone(), Vec::new())).collect();
    match strategy {
        "roundrobin" => {
            let all: BTreeSet<&String> = members.values().flatten().collect();
            let ids: Vec<&String> = members.keys().collect();
            let mut next = 0usize;
            for topic in all {
                let count = partitions.get(topic).copied().unwrap_or(0);
                for p in 0..count {
                    // The next member (cyclically) subscribed to this topic.
                    for _ in 0..ids.len() {
                        let m = ids[next % ids.len()];
                        next += 1;
                        if members[m].contains(topic) {
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
            for (m, topics) in members {
                for t in topics {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn members(spec: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        spec.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
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
