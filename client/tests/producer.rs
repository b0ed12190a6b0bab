//! The producer against a broker: partitioning, codecs, acks, ordering, idempotence across cut
//! connections, and its limits (buffer memory, record size).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{recent_ms, Proxy, TestBroker};
use quipu_client::partitioner::partition_for_key;
use quipu_client::{
    Acks, Compression, Consumer, ConsumerConfig, Error, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};

/// Every record of `topic` (all partitions, from offset 0 to the end).
async fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Vec<quipu_client::ConsumerRecord> {
    let mut consumer = Consumer::new(ConsumerConfig::new(bootstrap)).unwrap();
    let tps: Vec<_> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    consumer.assign(tps.clone());
    consumer.seek_to_beginning(&tps).await.unwrap();
    let ends = consumer.end_offsets(&tps).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(tp, end)| consumer.position(tp).unwrap() < *end)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reading {topic} timed out"
        );
        out.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_where_the_java_client_puts_them_with_every_codec() {
    let broker = TestBroker::start();
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = broker.topic("keyed", 4).await;
        let mut config = ProducerConfig::new(&broker.bootstrap);
        config.compression = codec;
        config.linger_ms = 20;
        let producer = Producer::new(config).unwrap();
        let mut deliveries = Vec::new();
        for i in 0..2_000u32 {
            let key = format!("key-{}", i % 37);
            let record = ProducerRecord::new(topic.clone(), format!("value-{i}"))
                .with_key(key.clone())
                .with_header("i", i.to_string());
            deliveries.push((key, i, producer.send(record).await.unwrap()));
        }
        let mut written = BTreeMap::new();
        for (key, i, d) in deliveries {
            let m = d.await.unwrap();
            assert_eq!(
                m.partition,
                partition_for_key(key.as_bytes(), 4),
                "{codec:?}"
            );
            assert!(
                written.insert((m.partition, m.offset), i).is_none(),
                "offset given twice"
            );
        }
        producer.close().await.unwrap();
        // Offsets per partition are dense from 0: each record once, in send order.
        let records = read_all(&broker.bootstrap, &topic, 4).await;
        assert_eq!(records.len(), 2_000, "{codec:?}");
        for r in &records {
            let i = written[&(r.partition, r.offset)];
            assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
            assert_eq!(r.key.as_deref(), Some(format!("key-{}", i % 37).as_bytes()));
            assert_eq!(
                r.headers,
                vec![("i".to_string(), Some(Bytes::from(i.to_string())))]
            );
        }
        let mut last: BTreeMap<i32, u32> = BTreeMap::new();
        for r in &records {
            let i = written[&(r.partition, r.offset)];
            if let Some(prev) = last.insert(r.partition, i) {
                assert!(prev < i, "records of a partition keep their send order");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_one_and_all() {
    let broker = TestBroker::start();
    let topic = broker.topic("acks", 1).await;
    for (acks, expect_offset) in [(Acks::None, false), (Acks::Leader, true), (Acks::All, true)] {
        let mut config = ProducerConfig::new(&broker.bootstrap);
        config.acks = acks;
        let producer = Producer::new(config).unwrap();
        let mut ds = Vec::new();
        for i in 0..100 {
            ds.push(
                producer
                    .send(ProducerRecord::new(topic.clone(), format!("{i}")))
                    .await
                    .unwrap(),
            );
        }
        for d in ds {
            let m = d.await.unwrap();
            assert_eq!(m.offset >= 0, expect_offset, "{acks:?}");
        }
        producer.close().await.unwrap();
    }
    // acks=0 writes too, without saying where.
    let records = read_all(&broker.bootstrap, &topic, 1).await;
    assert_eq!(records.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_keys_stick_to_a_partition_per_batch() {
    let broker = TestBroker::start();
    let topic = broker.topic("sticky", 6).await;
    let mut config = ProducerConfig::new(&broker.bootstrap);
    config.batch_size_bytes = 4 * 1024;
    config.linger_ms = 1_000;
    let producer = Producer::new(config).unwrap();
    let mut ds = Vec::new();
    for i in 0..3_000 {
        ds.push(
            producer
                .send(ProducerRecord::new(topic.clone(), format!("{i:0100}")))
                .await
                .unwrap(),
        );
    }
    let mut partitions = Vec::new();
    for d in ds {
        partitions.push(d.await.unwrap().partition);
    }
    let used: HashSet<i32> = partitions.iter().copied().collect();
    assert!(
        used.len() > 1,
        "sticky partitioning moves on as batches fill"
    );
    // Runs of one partition, not a record-by-record spread: ~40 records fit in a batch.
    let switches = partitions.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches < 3_000 / 20, "{switches} switches");
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_partition_timestamp_and_bad_partition() {
    let broker = TestBroker::start();
    let topic = broker.topic("explicit", 3).await;
    let producer = Producer::new(ProducerConfig::new(&broker.bootstrap)).unwrap();
    let m = producer
        .send(
            ProducerRecord::new(topic.clone(), "v")
                .with_partition(2)
                .with_timestamp_ms(recent_ms() + 1_234),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!((m.partition, m.timestamp_ms), (2, recent_ms() + 1_234));
    let err = producer
        .send(ProducerRecord::new(topic.clone(), "v").with_partition(3))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    producer.close().await.unwrap();
    let r = read_all(&broker.bootstrap, &topic, 3).await;
    assert_eq!(
        (r[0].partition, r[0].timestamp_ms),
        (2, recent_ms() + 1_234)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_max_request_size_is_refused_and_one_at_the_limit_is_sent() {
    let broker = TestBroker::start();
    let topic = broker.topic("large", 1).await;
    let mut config = ProducerConfig::new(&broker.bootstrap);
    config.max_request_size_bytes = 200_000;
    let producer = Producer::new(config).unwrap();
    let over = ProducerRecord::new(topic.clone(), vec![0u8; 200_000]);
    let err = producer.send(over).await.err().unwrap();
    assert!(err.to_string().contains("max.request.size"), "{err}");
    let at_limit = ProducerRecord::new(topic.clone(), vec![1u8; 199_000]);
    producer.send(at_limit).await.unwrap().await.unwrap();
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_waits_for_buffer_memory_and_gives_up_after_max_block_ms() {
    // Through a proxy that stalls: nothing is acknowledged, so buffer memory fills.
    let upstream = Arc::new(std::sync::Mutex::new(String::new()));
    let proxy = Proxy::start(upstream.clone()).await;
    let broker = TestBroker::in_process(&[("advertised.listeners", &proxy.addr)]);
    *upstream.lock().unwrap() = broker.bootstrap.clone();
    let topic = broker.topic("memory", 1).await;
    let mut config = ProducerConfig::new(&proxy.addr);
    config.buffer_memory_bytes = 64 * 1024;
    config.batch_size_bytes = 16 * 1024;
    config.max_request_size_bytes = 64 * 1024;
    config.max_block_ms = 300;
    config.client.request_timeout_ms = 60_000;
    config.delivery_timeout_ms = 120_000;
    let producer = Producer::new(config).unwrap();
    producer.partition_count(&topic).await.unwrap();
    proxy.stall(true);
    let mut accepted = Vec::new();
    let err = loop {
        match producer
            .send(ProducerRecord::new(topic.clone(), vec![7u8; 1_000]))
            .await
        {
            Ok(d) => accepted.push(d),
            Err(e) => break e,
        }
        assert!(
            accepted.len() < 1_000,
            "buffer.memory did not bound the records held"
        );
    };
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("buffer memory"), "{err}");
    // 64 KiB of ~1 KiB records, each counted at its upper bound.
    assert!(
        (50..=64).contains(&accepted.len()),
        "{} records held",
        accepted.len()
    );
    proxy.stall(false);
    for d in accepted {
        d.await.unwrap();
    }
    // Memory came back: sending works again.
    producer
        .send(ProducerRecord::new(topic.clone(), vec![7u8; 1_000]))
        .await
        .unwrap()
        .await
        .unwrap();
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_retries_through_cut_connections_without_duplicates() {
    let upstream = Arc::new(std::sync::Mutex::new(String::new()));
    let proxy = Proxy::start(upstream.clone()).await;
    let broker = TestBroker::in_process(&[("advertised.listeners", &proxy.addr)]);
    *upstream.lock().unwrap() = broker.bootstrap.clone();
    let topic = broker.topic("retries", 2).await;
    let mut config = ProducerConfig::new(&proxy.addr);
    config.linger_ms = 2;
    config.batch_size_bytes = 2 * 1024;
    config.client.retry_backoff_ms = 20;
    assert!(config.idempotent());
    let producer = Producer::new(config).unwrap();
    let mut ds = Vec::new();
    for i in 0..5_000u32 {
        let record =
            ProducerRecord::new(topic.clone(), format!("{i}")).with_key(format!("{}", i % 10));
        ds.push(producer.send(record).await.unwrap());
        if i % 500 == 250 {
            // Responses in flight are lost: the producer must send those batches again.
            proxy.cut();
        }
    }
    let mut acked = BTreeMap::new();
    for (i, d) in ds.into_iter().enumerate() {
        let m = d.await.unwrap();
        acked.insert((m.partition, m.offset), i);
    }
    producer.close().await.unwrap();
    let records = read_all(&broker.bootstrap, &topic, 2).await;
    assert_eq!(
        acked.len(),
        5_000,
        "each record acknowledged at an offset of its own"
    );
    let values: Vec<u32> = records
        .iter()
        .map(|r| {
            std::str::from_utf8(r.value.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let distinct: HashSet<u32> = values.iter().copied().collect();
    assert_eq!(distinct.len(), 5_000, "every record written");
    assert_eq!(values.len(), 5_000, "no record written twice");
    // Per key, the order of sends.
    let mut last: BTreeMap<u32, u32> = BTreeMap::new();
    for v in values {
        if let Some(prev) = last.insert(v % 10, v) {
            assert!(prev < v, "key {} out of order: {prev} then {v}", v % 10);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_goes_on_after_a_batch_fails_for_good() {
    let broker = TestBroker::start();
    let topic = common::unique("compacted");
    let admin = broker.admin();
    admin
        .create_topic(
            quipu_client::admin::NewTopic::new(topic.clone(), 1)
                .with_config("cleanup.policy", "compact"),
        )
        .await
        .unwrap();
    admin
        .wait_for_topic(&topic, Duration::from_secs(30))
        .await
        .unwrap();
    let mut config = ProducerConfig::new(&broker.bootstrap);
    config.batch_size_bytes = 16; // a batch per record
    config.linger_ms = 0;
    assert!(config.idempotent());
    let producer = Producer::new(config).unwrap();
    let send = |key: Option<&str>, value: String| {
        let mut record = ProducerRecord::new(topic.clone(), value).with_partition(0);
        if let Some(k) = key {
            record = record.with_key(k.to_string());
        }
        producer.send(record)
    };
    let refused = |result: &Result<quipu_client::RecordMetadata, Error>| {
        matches!(
            result,
            Err(Error::Broker {
                error: quipu_client::ResponseError::InvalidRecord,
                ..
            })
        )
    };
    let first = send(Some("k"), "before".into()).await.unwrap().await;
    assert_eq!(first.unwrap().offset, 0);
    // A compacted topic refuses a keyless record: its batch fails for good after its sequence
    // was assigned, and the producer must not leave the gap for the next batch to trip on.
    let lone = send(None, "refused alone".into()).await.unwrap().await;
    assert!(refused(&lone), "{lone:?}");
    let next = send(Some("k"), "after one".into()).await.unwrap().await;
    assert_eq!(next.unwrap().offset, 1);
    // Again with later batches in flight behind the refused one: they come back
    // OUT_OF_ORDER_SEQUENCE_NUMBER and are sent again in the new epoch, in order.
    let failing = send(None, "refused ahead".into()).await.unwrap();
    let mut behind = Vec::new();
    for i in 0..20 {
        behind.push(send(Some("k"), format!("behind {i}")).await.unwrap());
    }
    assert!(refused(&failing.await));
    let mut offsets = Vec::new();
    for d in behind {
        offsets.push(d.await.unwrap().offset);
    }
    assert_eq!(offsets, (2..22).collect::<Vec<i64>>());
    producer.close().await.unwrap();
    let values: Vec<String> = read_all(&broker.bootstrap, &topic, 1)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_ref().unwrap()).into_owned())
        .collect();
    let mut expected = vec!["before".to_string(), "after one".to_string()];
    expected.extend((0..20).map(|i| format!("behind {i}")));
    assert_eq!(values, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_sends_lingering_batches_and_close_refuses_more() {
    let broker = TestBroker::start();
    let topic = broker.topic("flush", 1).await;
    let mut config = ProducerConfig::new(&broker.bootstrap);
    config.linger_ms = 60_000;
    let producer = Producer::new(config).unwrap();
    let mut d = producer
        .send(ProducerRecord::new(topic.clone(), "x"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!d.is_done(), "the batch lingers");
    tokio::time::timeout(Duration::from_secs(10), producer.flush())
        .await
        .unwrap();
    assert!(d.is_done());
    assert_eq!(d.await.unwrap().offset, 0);
    producer.close().await.unwrap();
    assert!(matches!(
        producer.send(ProducerRecord::new(topic, "y")).await,
        Err(Error::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_an_error_within_max_block_ms() {
    let mut config = ProducerConfig::new("127.0.0.1:1");
    config.max_block_ms = 500;
    let producer = Producer::new(config).unwrap();
    let err = producer
        .send(ProducerRecord::new("t", "v"))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::Connect { .. } | Error::Timeout { .. }),
        "{err}"
    );
}

#[test]
fn idempotence_needs_acks_all() {
    let mut config = ProducerConfig::new("127.0.0.1:1");
    config.acks = Acks::Leader;
    assert!(
        !config.idempotent(),
        "unset: off with acks=1, as in the Java client"
    );
    config.enable_idempotence = Some(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    assert!(matches!(
        Producer::new(config),
        Err(Error::InvalidArgument(_))
    ));
}
