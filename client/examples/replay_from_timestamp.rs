//! Replays a topic from a point in time: every partition is sought to the first record at or
//! after the timestamp, then read to the end offsets taken at the start.
//!
//! `cargo run -p quipu-client --example replay_from_timestamp -- [bootstrap] [topic] [epoch-ms]`
//! (defaults: `localhost:9092`, `quickstart`, one hour ago).

use std::time::Duration;

use quipu_client::{Consumer, ConsumerConfig, TopicPartition};

#[tokio::main]
async fn main() -> quipu_client::Result<()> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "localhost:9092".into());
    let topic = args.next().unwrap_or_else(|| "quickstart".into());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let since_ms: i64 = args
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(now_ms - 3_600_000);

    let mut consumer = Consumer::new(ConsumerConfig::new(&bootstrap))?;
    let partitions: Vec<TopicPartition> = (0..consumer.partition_count(&topic).await?)
        .map(|p| TopicPartition::new(topic.clone(), p))
        .collect();
    consumer.assign(partitions.clone());
    consumer.seek_to_timestamp(&partitions, since_ms).await?;
    let ends = consumer.end_offsets(&partitions).await?;

    let mut replayed = 0u64;
    while ends
        .iter()
        .any(|(tp, end)| consumer.position(tp).is_some_and(|p| p < *end))
    {
        for record in consumer.poll(Duration::from_millis(500)).await? {
            let value = record.value.as_deref().unwrap_or_default();
            println!(
                "{}-{}@{} ts={} {}",
                record.topic,
                record.partition,
                record.offset,
                record.timestamp_ms,
                String::from_utf8_lossy(value)
            );
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} records since {since_ms}");
    Ok(())
}
