//! `quipu topic create|list|describe|delete`.

use clap::Subcommand;
use quipu_client::admin::{Admin, ConfigResource, NewTopic};
use quipu_client::ClientConfig;

use crate::{describe, CommandResult};

#[derive(Subcommand, Debug)]
pub(crate) enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's).
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// A topic setting, `key=value` with Kafka's name; repeatable.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics, one per line.
    List {
        /// Include internal topics (__consumer_offsets).
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions, leaders, replicas and non-default settings.
    Describe { name: String },
    /// Delete a topic.
    Delete { name: String },
}

pub(crate) async fn run(bootstrap: &str, command: TopicCommand) -> CommandResult {
    let admin = Admin::new(ClientConfig::new(bootstrap)).map_err(describe)?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let topic = new_topic(&name, partitions, replication_factor, &configs)?;
            admin.create_topic(topic).await.map_err(describe)?;
            println!("created topic {name}");
        }
        TopicCommand::List { internal } => {
            for t in admin.list_topics(internal).await.map_err(describe)? {
                println!("{t}");
            }
        }
        TopicCommand::Describe { name } => describe_topic(&admin, &name).await?,
        TopicCommand::Delete { name } => {
            let results = admin.delete_topics(&[&name]).await.map_err(describe)?;
            for (_, r) in results {
                r.map_err(describe)?;
            }
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

/// The topic `topic create` asks for; the broker's defaults where an option is not given.
fn new_topic(
    name: &str,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    configs: &[String],
) -> Result<NewTopic, String> {
    let mut topic = NewTopic::new(name, partitions.unwrap_or(-1));
    topic.replication_factor = replication_factor.unwrap_or(-1);
    for c in configs {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| format!("--config takes KEY=VALUE, got `{c}`"))?;
        topic = topic.with_config(k, v);
    }
    Ok(topic)
}

/// Prints `name`'s partition count, replication factor and settings set, then a line per
/// partition.
async fn describe_topic(admin: &Admin, name: &str) -> CommandResult {
    let d = admin
        .describe_topic(name)
        .await
        .map_err(|e| match e.broker_error() {
            Some(quipu_client::ResponseError::UnknownTopicOrPartition) => {
                format!("topic `{name}` does not exist")
            }
            _ => describe(e),
        })?;
    let configs = admin
        .describe_configs(&ConfigResource::Topic(name.to_string()))
        .await
        .map_err(describe)?;
    let set: Vec<String> = configs
        .iter()
        .filter(|c| !c.is_default)
        .map(|c| format!("{}={}", c.name, c.value.as_deref().unwrap_or("")))
        .collect();
    println!(
        "Topic: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}",
        d.name,
        d.partitions.len(),
        d.partitions.first().map_or(0, |p| p.replicas.len()),
        set.join(",")
    );
    for p in &d.partitions {
        let list = |v: &[i32]| {
            v.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
            d.name,
            p.partition,
            p.leader,
            list(&p.replicas),
            list(&p.isr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_topic_takes_the_brokers_defaults_and_each_config_given() {
        let topic = new_topic("t", None, None, &[]).unwrap();
        assert_eq!((topic.num_partitions, topic.replication_factor), (-1, -1));
        let configs = ["retention.ms=1000".to_string(), "a=b=c".to_string()];
        let topic = new_topic("t", Some(3), Some(2), &configs).unwrap();
        assert_eq!((topic.num_partitions, topic.replication_factor), (3, 2));
        assert_eq!(
            topic.configs,
            [
                ("retention.ms".to_string(), "1000".to_string()),
                ("a".to_string(), "b=c".to_string())
            ]
        );
        let e = new_topic("t", None, None, &["bare".to_string()]).unwrap_err();
        assert!(e.contains("KEY=VALUE"), "{e}");
    }
}
