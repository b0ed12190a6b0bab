//! The `quipu` command-line tool's client commands, built on `quipu-client`:
//! `topic create|list|describe|delete`, `produce`, `consume` and
//! `group list|describe|reset-offsets`.
//!
//! The broker's binary dispatches here when its first argument names one of these commands, so
//! `quipu` alone starts a broker and `quipu topic list` talks to one.
//!
//! Invariants: every failure ends the process with one line on stderr (`error: …`) and a
//! non-zero exit (2 for a bad command line, 1 for everything else); results go to stdout,
//! progress and summaries to stderr, so output can be piped.

mod consume_command;
mod group_command;
mod produce_command;
mod progress;
mod record_format;
mod time_arg;
mod topic_command;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use time_arg::parse_timestamp_ms;

/// The first arguments that select a client command rather than starting a broker.
pub const COMMANDS: [&str; 4] = ["topic", "produce", "consume", "group"];

#[derive(Parser, Debug)]
#[command(name = "quipu", version, about = "Quipu's command-line client")]
struct Cli {
    /// Broker(s) to talk to, `host:port[,host:port…]` (default: $QUIPU_BOOTSTRAP or
    /// localhost:9092).
    #[arg(long = "bootstrap-server", short = 'b', global = true)]
    bootstrap: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, describe or delete topics.
    #[command(subcommand)]
    Topic(topic_command::TopicCommand),
    /// Produce lines from stdin or a file, one record per line.
    Produce(produce_command::ProduceArgs),
    /// Consume records and print them.
    Consume(consume_command::ConsumeArgs),
    /// List consumer groups, describe one with its lag, or reset its offsets.
    #[command(subcommand)]
    Group(group_command::GroupCommand),
}

/// Runs a client command; `args` includes the program name.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line: clap's first paragraph names the problem (and what is missing).
            let rendered = e.render().to_string();
            let problem: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            let problem = if problem.is_empty() {
                "bad command line".to_string()
            } else {
                problem.join(" ")
            };
            eprintln!("{problem} (see --help)");
            return ExitCode::from(2);
        }
    };
    let bootstrap = cli
        .bootstrap
        .clone()
        .or_else(|| std::env::var("QUIPU_BOOTSTRAP").ok())
        .unwrap_or_else(|| "localhost:9092".to_string());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Topic(c) => topic_command::run(&bootstrap, c).await,
            Command::Produce(a) => produce_command::run(&bootstrap, a).await,
            Command::Consume(a) => consume_command::run(&bootstrap, a).await,
            Command::Group(c) => group_command::run(&bootstrap, c).await,
        }
    });
    // Background tasks (heartbeats, fetches) must not keep the process alive.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// A command's failure, as the one line printed after `error: `.
pub(crate) type CommandResult = Result<(), String>;

/// Client errors as a line, with a hint for the common ones.
pub(crate) fn describe(e: quipu_client::Error) -> String {
    use quipu_client::{Error, ResponseError};
    match &e {
        Error::Connect { addr, reason } => {
            format!("broker unreachable at {addr} ({reason}); is it running? (--bootstrap-server)")
        }
        Error::Broker {
            error: ResponseError::UnknownTopicOrPartition,
            context,
        } => format!("{context}: unknown topic or partition"),
        _ => e.to_string(),
    }
}
