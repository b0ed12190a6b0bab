//! `quipu group list|describe|reset-offsets`: groups, their members, the lag of each
//! partition, and moving a group's committed offsets (as `kafka-consumer-groups
//! --reset-offsets`: only while the group has no members, and a dry run unless `--execute`).

use std::collections::HashMap;

use clap::{ArgGroup, Args, Subcommand};
use quipu_client::admin::Admin;
use quipu_client::consumer::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use quipu_client::{ClientConfig, ResponseError, TopicPartition};

use crate::time_arg::parse_timestamp_ms;
use crate::{describe, CommandResult};

#[derive(Subcommand, Debug)]
pub(crate) enum GroupCommand {
    /// List groups with their state.
    List,
    /// Show a group's state, members and, per partition, committed offset, end offset and lag.
    Describe { group: String },
    /// Move a group's committed offsets on a topic (the group must have no members); shows the
    /// new offsets and applies them only with --execute.
    ResetOffsets(ResetArgs),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true)
    .args(["to_earliest", "to_latest", "to_offset", "to_datetime"])))]
pub(crate) struct ResetArgs {
    group: String,
    topic: String,
    /// Only this partition (default: every partition of the topic).
    #[arg(long, short)]
    partition: Option<i32>,
    /// To each partition's first offset.
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's end: only records written from now on are read.
    #[arg(long)]
    to_latest: bool,
    /// To this offset (kept within each partition's first and end offsets).
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// To the first record at or after this time (epoch ms or ISO-8601); the end where none is.
    #[arg(long, value_name = "TIME")]
    to_datetime: Option<String>,
    /// Commit the new offsets (without it, only show them).
    #[arg(long)]
    execute: bool,
}

async fn reset_offsets(admin: &Admin, args: ResetArgs) -> CommandResult {
    let group = &args.group;
    check_no_members(admin, group).await?;
    let partitions = partitions_to_reset(admin, &args).await?;
    let (earliest, latest) = (
        listed(admin, &partitions, EARLIEST_TIMESTAMP).await?,
        listed(admin, &partitions, LATEST_TIMESTAMP).await?,
    );
    let at_time = match &args.to_datetime {
        Some(t) => Some(listed(admin, &partitions, parse_timestamp_ms(t)?).await?),
        None => None,
    };
    let mut offsets = Vec::new();
    for tp in &partitions {
        let offset_of =
            |listed: &HashMap<TopicPartition, Option<i64>>| listed.get(tp).copied().flatten();
        let offset = target_offset(
            &args,
            offset_of(&earliest).unwrap_or(0),
            offset_of(&latest).unwrap_or(0),
            at_time.as_ref().and_then(offset_of),
        );
        println!("{}\t{}\t{}", tp.topic, tp.partition, offset);
        offsets.push((tp.clone(), offset));
    }
    if args.execute {
        admin
            .alter_group_offsets(group, &offsets)
            .await
            .map_err(describe)?;
        eprintln!("committed {} offsets of group `{group}`", offsets.len());
    } else {
        eprintln!("dry run: nothing committed (add --execute to commit these offsets)");
    }
    Ok(())
}

/// An error unless `group` has no members (or does not exist yet): the coordinator takes
/// offsets only then.
async fn check_no_members(admin: &Admin, group: &str) -> CommandResult {
    match admin.describe_group(group).await {
        Ok(d) if d.state != "Empty" && d.state != "Dead" => Err(format!(
            "group `{group}` is active ({}, {} members): offsets can be reset only while it has none",
            d.state,
            d.members.len()
        )),
        Ok(_) => Ok(()),
        Err(e) if e.broker_error() == Some(ResponseError::GroupIdNotFound) => Ok(()),
        Err(e) => Err(describe(e)),
    }
}

/// The partitions of `--topic` to reset: every one, or `--partition`'s.
async fn partitions_to_reset(
    admin: &Admin,
    args: &ResetArgs,
) -> Result<Vec<TopicPartition>, String> {
    let topic = admin
        .describe_topic(&args.topic)
        .await
        .map_err(|e| match e.broker_error() {
            Some(ResponseError::UnknownTopicOrPartition) => {
                format!("topic `{}` does not exist", args.topic)
            }
            _ => describe(e),
        })?;
    let partitions: Vec<TopicPartition> = topic
        .partitions
        .iter()
        .map(|p| p.partition)
        .filter(|p| args.partition.is_none_or(|only| only == *p))
        .map(|p| TopicPartition::new(args.topic.clone(), p))
        .collect();
    if partitions.is_empty() {
        return Err(format!(
            "topic `{}` has no partition {}",
            args.topic,
            args.partition.unwrap_or(-1)
        ));
    }
    Ok(partitions)
}

/// The offset of each of `partitions` ListOffsets gives for `timestamp`.
async fn listed(
    admin: &Admin,
    partitions: &[TopicPartition],
    timestamp: i64,
) -> Result<HashMap<TopicPartition, Option<i64>>, String> {
    let queries: Vec<_> = partitions
        .iter()
        .map(|tp| (tp.clone(), timestamp))
        .collect();
    let found = admin.list_offsets(&queries).await.map_err(describe)?;
    Ok(found.into_iter().collect())
}

/// Where `args` moves a partition whose offsets run from `first` to `end`, and whose first
/// record at `--to-datetime` is at `at_time` (the end where there is none).
fn target_offset(args: &ResetArgs, first: i64, end: i64, at_time: Option<i64>) -> i64 {
    if args.to_earliest {
        first
    } else if args.to_latest {
        end
    } else if let Some(o) = args.to_offset {
        o.clamp(first, end.max(first))
    } else {
        at_time.unwrap_or(end)
    }
}

pub(crate) async fn run(bootstrap: &str, command: GroupCommand) -> CommandResult {
    let admin = Admin::new(ClientConfig::new(bootstrap)).map_err(describe)?;
    match command {
        GroupCommand::ResetOffsets(args) => return reset_offsets(&admin, args).await,
        GroupCommand::List => {
            for g in admin.list_groups().await.map_err(describe)? {
                println!("{}\t{}\t{}", g.group_id, g.state, g.protocol_type);
            }
        }
        GroupCommand::Describe { group } => {
            let missing = |e: quipu_client::Error| match e.broker_error() {
                Some(quipu_client::ResponseError::GroupIdNotFound) => {
                    format!("group `{group}` does not exist")
                }
                _ => describe(e),
            };
            let lags = admin.group_lag(&group).await.map_err(missing)?;
            let d = match admin.describe_group(&group).await {
                Ok(d) => d,
                Err(e) if !lags.is_empty() && e.broker_error().is_some() => {
                    quipu_client::admin::GroupDescription {
                        group_id: group.clone(),
                        state: "Empty".into(),
                        protocol_type: "consumer".into(),
                        protocol: String::new(),
                        members: Vec::new(),
                    }
                }
                Err(e) => return Err(missing(e)),
            };
            if lags.is_empty() && d.members.is_empty() && d.state == "Dead" {
                return Err(format!("group `{group}` does not exist"));
            }
            println!(
                "Group: {}\tState: {}\tStrategy: {}\tMembers: {}",
                d.group_id,
                d.state,
                d.protocol,
                d.members.len()
            );
            println!("TOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG\tCONSUMER-ID\tHOST\tCLIENT-ID");
            let dash = || "-".to_string();
            for l in lags {
                let member = l
                    .member_id
                    .as_ref()
                    .and_then(|id| d.members.iter().find(|m| &m.member_id == id));
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    l.partition.topic,
                    l.partition.partition,
                    l.committed.map_or_else(dash, |c| c.to_string()),
                    l.end_offset,
                    l.lag.map_or_else(dash, |c| c.to_string()),
                    member.map_or_else(dash, |m| m.member_id.clone()),
                    member.map_or_else(dash, |m| m.host.clone()),
                    member.map_or_else(dash, |m| m.client_id.clone()),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ResetArgs {
        ResetArgs {
            group: "g".into(),
            topic: "t".into(),
            partition: None,
            to_earliest: false,
            to_latest: false,
            to_offset: None,
            to_datetime: None,
            execute: false,
        }
    }

    #[test]
    fn a_reset_goes_to_the_first_the_end_an_offset_kept_within_them_or_a_time() {
        let earliest = ResetArgs {
            to_earliest: true,
            ..args()
        };
        assert_eq!(target_offset(&earliest, 5, 50, None), 5);
        let latest = ResetArgs {
            to_latest: true,
            ..args()
        };
        assert_eq!(target_offset(&latest, 5, 50, None), 50);
        let offset = |o| ResetArgs {
            to_offset: Some(o),
            ..args()
        };
        assert_eq!(target_offset(&offset(20), 5, 50, None), 20);
        assert_eq!(target_offset(&offset(2), 5, 50, None), 5);
        assert_eq!(target_offset(&offset(99), 5, 50, None), 50);
        assert_eq!(target_offset(&offset(3), 5, 0, None), 5, "an empty log");
        let time = ResetArgs {
            to_datetime: Some("2026-01-01".into()),
            ..args()
        };
        assert_eq!(target_offset(&time, 5, 50, Some(30)), 30);
        assert_eq!(
            target_offset(&time, 5, 50, None),
            50,
            "no record after: the end"
        );
    }
}
