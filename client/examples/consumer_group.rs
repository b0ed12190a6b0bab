//! A member of a consumer group: prints its assignment on every rebalance and the records it
//! reads, commits after each poll, and leaves the group after `count` records.
//!
//! `cargo run -p quipu-client --example consumer_group -- [bootstrap] [topic] [group] [count]`
//! (defaults: `localhost:9092`, `quickstart`, `quickstart-group`, 10).

use std::time::Duration;

use quipu_client::{Consumer, ConsumerConfig, OffsetReset, RebalanceListener, TopicPartition};

struct PrintRebalance;

impl RebalanceListener for PrintRebalance {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        eprintln!("revoked: {partitions:?}");
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        eprintln!("assigned: {partitions:?}");
    }
}

#[tokio::main]
async fn main() -> quipu_client::Result<()> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "localhost:9092".into());
    let topic = args.next().unwrap_or_else(|| "quickstart".into());
    let group = args.next().unwrap_or_else(|| "quickstart-group".into());
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(10);

    let mut config = ConsumerConfig::new(&bootstrap).with_group(&group);
    config.auto_offset_reset = OffsetReset::Earliest;
    config.enable_auto_commit = false;
    let mut consumer = Consumer::new(config)?;
    consumer.set_rebalance_listener(Box::new(PrintRebalance));
    consumer.subscribe(&[&topic])?;

    let mut seen = 0;
    while seen < count {
        let records = consumer.poll(Duration::from_secs(1)).await?;
        for record in &records {
            println!(
                "{}-{}@{} {}",
                record.topic,
                record.partition,
                record.offset,
                String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
            );
        }
        seen += records.len();
        if !records.is_empty() {
            // Manual commit: the positions after the records just handled.
            consumer.commit().await?;
        }
    }
    consumer.close().await
}
