//! A consumer group member for the interoperability suite's mixed groups
//! (`tests/interop/test_consumer_groups.py`), where it shares a topic with librdkafka and Java
//! consumers. It commits the positions of its partitions after every poll that returned records
//! and reports each event on a line of its own, as the suite's Java member does:
//! `A p,p` (assigned), `V p,p` (revoked or lost), `R partition offset` (read),
//! `C p:offset …` (committed) or `F` (the commit failed). It leaves the group once `stop_file`
//! exists.
//!
//! `cargo run -p quipu-client --example interop_group_member -- bootstrap topic group stop_file
//! [eager|cooperative]`

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use quipu_client::{Consumer, ConsumerConfig, OffsetReset, RebalanceListener, TopicPartition};

struct Report;

fn line(prefix: &str, partitions: &[TopicPartition]) -> String {
    let list: Vec<String> = partitions
        .iter()
        .map(|tp| tp.partition.to_string())
        .collect();
    format!("{prefix} {}", list.join(","))
}

impl RebalanceListener for Report {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        println!("{}", line("V", partitions));
    }
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        println!("{}", line("V", partitions));
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        println!("{}", line("A", partitions));
    }
}

#[tokio::main]
async fn main() -> quipu_client::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, topic, group, stop_file, rest @ ..] = args.as_slice() else {
        eprintln!(
            "usage: interop_group_member BOOTSTRAP TOPIC GROUP STOP_FILE [eager|cooperative]"
        );
        std::process::exit(2);
    };
    let strategy = match rest.first().map(String::as_str) {
        Some("cooperative") => "cooperative-sticky",
        _ => "range",
    };
    let mut config = ConsumerConfig::new(bootstrap).with_group(group);
    config.auto_offset_reset = OffsetReset::Earliest;
    config.enable_auto_commit = false;
    config.max_poll_records = 50;
    config.session_timeout_ms = 6_000;
    config.heartbeat_interval_ms = 1_000;
    config.assignment_strategies = vec![strategy.to_string()];
    let mut consumer = Consumer::new(config)?;
    consumer.set_rebalance_listener(Box::new(Report));
    consumer.subscribe(&[topic])?;
    let stop = PathBuf::from(stop_file);
    while !stop.exists() {
        let records = consumer.poll(Duration::from_millis(200)).await?;
        if records.is_empty() {
            continue;
        }
        let mut out = String::new();
        for r in &records {
            writeln!(out, "R {} {}", r.partition, r.offset).expect("a String takes writes");
        }
        print!("{out}");
        let positions: Vec<(TopicPartition, i64)> = consumer
            .assignment()
            .into_iter()
            .filter_map(|tp| consumer.position(&tp).map(|p| (tp, p)))
            .collect();
        match consumer.commit_offsets(&positions).await {
            Ok(()) => {
                let done: Vec<String> = positions
                    .iter()
                    .map(|(tp, p)| format!("{}:{p}", tp.partition))
                    .collect();
                println!("C {}", done.join(" "));
            }
            Err(_) => println!("F"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.close().await?;
    println!("closed");
    Ok(())
}
