//! Throughput of the Rust client against a running broker, for benches/client_figures.py.
//!
//! `client_throughput produce BOOTSTRAP TOPIC RECORDS RECORD_BYTES PARTITIONS ACKS BATCH_BYTES`
//! sends RECORDS records of RECORD_BYTES random bytes round-robin over PARTITIONS (as the
//! librdkafka side of the harness does) and waits for every acknowledgement.
//! `client_throughput replay BOOTSTRAP TOPIC RECORDS PARTITIONS` reads RECORDS records from
//! offset 0 of every partition.
//! Both print one JSON object: `{"seconds": …, "records": …, "bytes": …}`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quipu_client::{
    Acks, Consumer, ConsumerConfig, DeliveryFuture, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} ({name}) missing or invalid"))
}

#[tokio::main]
async fn main() -> quipu_client::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode: String = arg(&args, 0, "mode");
    let bootstrap: String = arg(&args, 1, "bootstrap");
    let topic: String = arg(&args, 2, "topic");
    let records: u64 = arg(&args, 3, "records");
    let (seconds, bytes) = match mode.as_str() {
        "produce" => {
            let record_bytes: usize = arg(&args, 4, "record bytes");
            let partitions: i32 = arg(&args, 5, "partitions");
            let acks: String = arg(&args, 6, "acks");
            let batch_bytes: usize = arg(&args, 7, "batch bytes");
            let mut config = ProducerConfig::new(&bootstrap);
            config.acks = if acks == "1" { Acks::Leader } else { Acks::All };
            config.batch_size_bytes = batch_bytes;
            config.linger_ms = 5;
            config.buffer_memory_bytes = 1 << 30;
            config.max_request_size_bytes = batch_bytes.max(1 << 20);
            let producer = Producer::new(config)?;
            producer.partition_count(&topic).await?;
            let payload: Vec<u8> = (0..record_bytes).map(|i| (i * 7 + 13) as u8).collect();
            let payload = Bytes::from(payload);
            let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
            let start = Instant::now();
            for i in 0..records {
                let record = ProducerRecord {
                    topic: topic.clone(),
                    partition: Some((i % partitions as u64) as i32),
                    value: Some(payload.clone()),
                    ..Default::default()
                };
                pending.push_back(producer.send(record).await?);
                while pending.len() > 1_000_000 || pending.front_mut().is_some_and(|d| d.is_done())
                {
                    pending.pop_front().expect("checked").await?;
                }
            }
            producer.flush().await;
            for d in pending {
                d.await?;
            }
            let seconds = start.elapsed().as_secs_f64();
            producer.close().await?;
            (seconds, records * record_bytes as u64)
        }
        "replay" => {
            let partitions: i32 = arg(&args, 4, "partitions");
            let mut config = ConsumerConfig::new(&bootstrap);
            config.fetch_max_bytes = 50 << 20;
            config.max_partition_fetch_bytes = 10 << 20;
            let mut consumer = Consumer::new(config)?;
            let tps: Vec<_> = (0..partitions)
                .map(|p| TopicPartition::new(topic.clone(), p))
                .collect();
            consumer.assign(tps.clone());
            let start = Instant::now();
            for tp in &tps {
                consumer.seek(tp, 0)?;
            }
            let (mut got, mut bytes) = (0u64, 0u64);
            while got < records {
                for r in consumer.poll(Duration::from_secs(1)).await? {
                    got += 1;
                    bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
                }
            }
            (start.elapsed().as_secs_f64(), bytes)
        }
        other => panic!("mode {other}: produce or replay"),
    };
    println!("{{\"seconds\": {seconds}, \"records\": {records}, \"bytes\": {bytes}}}");
    Ok(())
}
