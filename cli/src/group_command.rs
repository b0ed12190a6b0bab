//! `quipu group list|describe`: groups, their members, and the lag of each partition.

use clap::Subcommand;
use quipu_client::admin::Admin;
use quipu_client::ClientConfig;

use crate::{describe, CommandResult};

#[derive(Subcommand, Debug)]
pub(crate) enum GroupCommand {
    /// List groups with their state.
    List,
    /// Show a group's state, members and, per partition, committed offset, end offset and lag.
    Describe { group: String },
}

pub(crate) async fn run(bootstrap: &str, command: GroupCommand) -> CommandResult {
    let admin = Admin::new(ClientConfig::new(bootstrap)).map_err(describe)?;
    match command {
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
