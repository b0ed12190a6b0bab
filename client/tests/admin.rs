//! The admin client against a broker: topics, partitions, configs, groups and lag.

mod common;

use std::time::Duration;

use common::{unique, TestBroker};
use quipu_client::admin::{AlterConfigOp, ConfigResource, NewTopic};
use quipu_client::{
    Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord, ResponseError,
    TopicPartition,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_described_grown_and_deleted() {
    let broker = TestBroker::start();
    let admin = broker.admin();
    let name = unique("admin-topic");
    admin
        .create_topic(NewTopic::new(name.clone(), 2).with_config("retention.ms", "3600000"))
        .await
        .unwrap();
    let d = admin
        .wait_for_topic(&name, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(d.partitions.len(), 2);
    assert!(d
        .partitions
        .iter()
        .all(|p| p.leader >= 0 && !p.replicas.is_empty()));
    assert!(!d.is_internal);
    assert!(admin.list_topics(false).await.unwrap().contains(&name));
    let err = admin
        .create_topic(NewTopic::new(name.clone(), 2))
        .await
        .unwrap_err();
    assert_eq!(err.broker_error(), Some(ResponseError::TopicAlreadyExists));

    admin.create_partitions(&name, 5).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while admin.describe_topic(&name).await.unwrap().partitions.len() != 5 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = admin.create_partitions(&name, 3).await.unwrap_err();
    assert_eq!(err.broker_error(), Some(ResponseError::InvalidPartitions));

    let results = admin.delete_topics(&[&name]).await.unwrap();
    assert!(results[0].1.is_ok());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match admin.describe_topic(&name).await {
            Err(e) if e.broker_error() == Some(ResponseError::UnknownTopicOrPartition) => break,
            _ => assert!(tokio::time::Instant::now() < deadline, "topic still there"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing = admin.delete_topics(&[&name]).await.unwrap();
    assert_eq!(
        missing[0].1.as_ref().unwrap_err().broker_error(),
        Some(ResponseError::UnknownTopicOrPartition)
    );
}

async fn described_until(
    admin: &quipu_client::admin::Admin,
    resource: &ConfigResource,
    pred: impl Fn(&[quipu_client::admin::ConfigEntry]) -> bool,
) -> Vec<quipu_client::admin::ConfigEntry> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let entries = admin.describe_configs(resource).await.unwrap();
        if pred(&entries) || tokio::time::Instant::now() >= deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_are_described_and_altered() {
    let broker = TestBroker::start();
    let admin = broker.admin();
    let name = broker.topic("configs", 1).await;
    let resource = ConfigResource::Topic(name.clone());
    let value = |entries: &[quipu_client::admin::ConfigEntry], key: &str| {
        entries.iter().find(|e| e.name == key).cloned()
    };
    let before = admin.describe_configs(&resource).await.unwrap();
    let retention = value(&before, "retention.ms").expect("retention.ms is described");
    assert!(retention.is_default);
    admin
        .alter_configs(
            &resource,
            &[
                AlterConfigOp::Set("retention.ms".into(), "123456".into()),
                AlterConfigOp::Set("cleanup.policy".into(), "compact".into()),
            ],
        )
        .await
        .unwrap();
    // Kafka applies config changes through its metadata log: a describe may lag briefly.
    let after = described_until(&admin, &resource, |e| {
        !value(e, "retention.ms").unwrap().is_default
    })
    .await;
    let retention = value(&after, "retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("123456"));
    assert!(!retention.is_default);
    assert_eq!(
        value(&after, "cleanup.policy").unwrap().value.as_deref(),
        Some("compact")
    );
    admin
        .alter_configs(&resource, &[AlterConfigOp::Delete("retention.ms".into())])
        .await
        .unwrap();
    let reset = described_until(&admin, &resource, |e| {
        value(e, "retention.ms").unwrap().is_default
    })
    .await;
    assert!(value(&reset, "retention.ms").unwrap().is_default);
    let err = admin
        .alter_configs(
            &resource,
            &[AlterConfigOp::Set("retention.ms".into(), "soon".into())],
        )
        .await
        .unwrap_err();
    assert_eq!(err.broker_error(), Some(ResponseError::InvalidConfig));
    // The broker's own settings.
    let brokers = admin.describe_topic(&name).await.unwrap().partitions[0].leader;
    let broker_configs = admin
        .describe_configs(&ConfigResource::Broker(brokers))
        .await
        .unwrap();
    assert!(value(&broker_configs, "num.partitions").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_listed_described_with_lag_and_deleted() {
    let broker = TestBroker::start();
    let admin = broker.admin();
    let topic = broker.topic("lag", 2).await;
    let producer = Producer::new(ProducerConfig::new(&broker.bootstrap)).unwrap();
    let mut ds = Vec::new();
    for i in 0..100 {
        ds.push(
            producer
                .send(ProducerRecord::new(topic.clone(), format!("{i}")).with_partition(i % 2))
                .await
                .unwrap(),
        );
    }
    for d in ds {
        d.await.unwrap();
    }
    let group = unique("lag-group");
    let mut config = ConsumerConfig::new(&broker.bootstrap).with_group(&group);
    config.auto_offset_reset = OffsetReset::Earliest;
    config.enable_auto_commit = false;
    let mut c = Consumer::new(config).unwrap();
    c.subscribe(&[&topic]).unwrap();
    while c.assignment().len() < 2 {
        c.poll(Duration::from_millis(200)).await.unwrap();
    }
    c.commit_offsets(&[
        (TopicPartition::new(topic.clone(), 0), 10),
        (TopicPartition::new(topic.clone(), 1), 50),
    ])
    .await
    .unwrap();

    let listed = admin.list_groups().await.unwrap();
    let g = listed
        .iter()
        .find(|g| g.group_id == group)
        .expect("group listed");
    assert_eq!(g.protocol_type, "consumer");
    let d = admin.describe_group(&group).await.unwrap();
    assert_eq!(d.state, "Stable");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].assignment.len(), 2);
    let lag = admin.group_lag(&group).await.unwrap();
    let lags: Vec<_> = lag
        .iter()
        .map(|l| (l.partition.partition, l.committed, l.end_offset, l.lag))
        .collect();
    assert_eq!(
        lags,
        vec![(0, Some(10), 50, Some(40)), (1, Some(50), 50, Some(0))]
    );
    assert!(lag
        .iter()
        .all(|l| l.member_id.as_deref() == Some(d.members[0].member_id.as_str())));
    let err = admin.delete_groups(&[&group]).await.unwrap();
    assert_eq!(
        err[0].1.as_ref().unwrap_err().broker_error(),
        Some(ResponseError::NonEmptyGroup)
    );
    c.close().await.unwrap();
    let deleted = admin.delete_groups(&[&group]).await.unwrap();
    assert!(deleted[0].1.is_ok(), "{:?}", deleted[0].1);
    assert!(admin.list_group_offsets(&group).await.unwrap().is_empty());
    let err = admin.describe_group(&unique("nobody")).await.unwrap_err();
    assert_eq!(err.broker_error(), Some(ResponseError::GroupIdNotFound));
}
