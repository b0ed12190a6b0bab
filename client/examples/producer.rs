//! Produces keyed records and prints where each landed.
//!
//! `cargo run -p quipu-client --example producer -- [bootstrap] [topic] [count]`
//! (defaults: `localhost:9092`, `quickstart`, 10).

use quipu_client::{Producer, ProducerConfig, ProducerRecord};

#[tokio::main]
async fn main() -> quipu_client::Result<()> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "localhost:9092".into());
    let topic = args.next().unwrap_or_else(|| "quickstart".into());
    let count: u32 = args.next().and_then(|c| c.parse().ok()).unwrap_or(10);

    let producer = Producer::new(ProducerConfig::new(&bootstrap))?;
    let mut deliveries = Vec::new();
    for i in 0..count {
        let record = ProducerRecord::new(topic.clone(), format!("event {i}"))
            .with_key(format!("user-{}", i % 3))
            .with_header("source", "example");
        // `send` queues the record; the returned future resolves once the broker has it.
        deliveries.push(producer.send(record).await?);
    }
    for delivery in deliveries {
        let written = delivery.await?;
        println!("{}-{}@{}", written.topic, written.partition, written.offset);
    }
    producer.close().await
}
