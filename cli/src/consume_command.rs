//! `quipu consume TOPIC`: prints records of every partition (or one), from the beginning, an
//! offset, a timestamp or the end, alone or as a member of a group (which commits its offsets).
//!
//! It stops after `--max-messages`, at the end offsets (`--exit-at-end`), after `--timeout-ms`
//! without records, or on Ctrl-C; a group member commits and leaves on the way out.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use quipu_client::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, TopicPartition};

use crate::progress::Progress;
use crate::record_format::{write_record, Format};
use crate::time_arg::parse_timestamp_ms;
use crate::{describe, CommandResult};

#[derive(Args, Debug)]
pub(crate) struct ConsumeArgs {
    /// Topic to consume.
    topic: String,
    /// Start at the first record (without a group, the default is the end).
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset (of every partition consumed, or of --partition).
    #[arg(long, conflicts_with_all = ["from_beginning", "timestamp", "group"])]
    offset: Option<i64>,
    /// Start at the first record at or after this time: epoch milliseconds or ISO-8601
    /// (2026-11-24, 2026-11-24T10:00:00Z).
    #[arg(long, conflicts_with_all = ["from_beginning", "group"])]
    timestamp: Option<String>,
    /// Consume only this partition.
    #[arg(long, short = 'p', conflicts_with = "group")]
    partition: Option<i32>,
    /// Consume as a member of this group, committing offsets.
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    max_messages: Option<u64>,
    /// Stop once every partition is read up to its end offset.
    #[arg(long, short = 'e')]
    exit_at_end: bool,
    /// Stop after this long without a record.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Between key and value in the `kv` format.
    #[arg(long, default_value = "\t")]
    separator: String,
}

pub(crate) async fn run(bootstrap: &str, args: ConsumeArgs) -> CommandResult {
    let start_ms = args
        .timestamp
        .as_deref()
        .map(parse_timestamp_ms)
        .transpose()?;
    let mut config = ConsumerConfig::new(bootstrap);
    config.client.allow_auto_topic_creation = false;
    config.auto_offset_reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    if let Some(g) = &args.group {
        config.group_id = Some(g.clone());
        config.auto_commit_interval_ms = 1_000;
    }
    let mut consumer = Consumer::new(config).map_err(describe)?;
    let partitions =
        consumer
            .partition_count(&args.topic)
            .await
            .map_err(|e| match e.broker_error() {
                Some(quipu_client::ResponseError::UnknownTopicOrPartition) => {
                    format!("topic `{}` does not exist", args.topic)
                }
                _ => describe(e),
            })?;
    if args.group.is_some() {
        consumer.subscribe(&[&args.topic]).map_err(describe)?;
    } else {
        let assigned: Vec<TopicPartition> = match args.partition {
            Some(p) if p < 0 || p >= partitions => {
                return Err(format!(
                    "partition {p} does not exist: topic `{}` has {partitions}",
                    args.topic
                ))
            }
            Some(p) => vec![TopicPartition::new(args.topic.clone(), p)],
            None => (0..partitions)
                .map(|p| TopicPartition::new(args.topic.clone(), p))
                .collect(),
        };
        consumer.assign(assigned.clone());
        if let Some(offset) = args.offset {
            if offset < 0 {
                return Err(format!("--offset {offset}: offsets are not negative"));
            }
            for tp in &assigned {
                consumer.seek(tp, offset).map_err(describe)?;
            }
        } else if let Some(ts) = start_ms {
            consumer
                .seek_to_timestamp(&assigned, ts)
                .await
                .map_err(describe)?;
        } else if args.from_beginning {
            consumer
                .seek_to_beginning(&assigned)
                .await
                .map_err(describe)?;
        } else {
            consumer.seek_to_end(&assigned).await.map_err(describe)?;
        }
    }
    let result = consume(&mut consumer, &args).await;
    let closed = consumer.close().await.map_err(describe);
    result.and(closed)
}

async fn consume(consumer: &mut Consumer, args: &ConsumeArgs) -> CommandResult {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut progress = Progress::new("consumed");
    let mut ends: HashMap<TopicPartition, i64> = HashMap::new();
    let mut last_record = Instant::now();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        if args.max_messages.is_some_and(|m| progress.records() >= m) {
            break;
        }
        if args.exit_at_end && at_end(consumer, &mut ends).await? {
            break;
        }
        if args
            .timeout_ms
            .is_some_and(|t| last_record.elapsed() >= Duration::from_millis(t))
        {
            break;
        }
        let records = tokio::select! {
            r = consumer.poll(Duration::from_millis(200)) => r.map_err(describe)?,
            _ = &mut interrupted => break,
        };
        if !records.is_empty() {
            last_record = Instant::now();
        }
        // A closed stdout (`| head`) ends the run quietly.
        if !print_records(consumer, args, &records, &mut out, &mut progress)?
            || !output_open(out.flush())?
        {
            return Ok(());
        }
    }
    progress.finish();
    Ok(())
}

/// Whether every assigned partition is read up to its end offset (looked up once per
/// partition, into `ends`).
async fn at_end(
    consumer: &Consumer,
    ends: &mut HashMap<TopicPartition, i64>,
) -> Result<bool, String> {
    let assigned = consumer.assignment();
    let unknown: Vec<TopicPartition> = assigned
        .iter()
        .filter(|tp| !ends.contains_key(*tp))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        ends.extend(consumer.end_offsets(&unknown).await.map_err(describe)?);
    }
    Ok(!assigned.is_empty()
        && assigned.iter().all(|tp| {
            consumer
                .position(tp)
                .is_some_and(|p| p >= ends.get(tp).copied().unwrap_or(0))
        }))
}

/// Prints `records` up to `--max-messages`; false once the output is closed.
fn print_records(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    records: &[ConsumerRecord],
    out: &mut impl Write,
    progress: &mut Progress,
) -> Result<bool, String> {
    for (i, r) in records.iter().enumerate() {
        if args.max_messages.is_some_and(|m| progress.records() >= m) {
            rewind(consumer, &records[i..])?;
            break;
        }
        if !output_open(write_record(out, args.format, &args.separator, r))? {
            return Ok(false);
        }
        let size = r.value.as_ref().map_or(0, |v| v.len()) + r.key.as_ref().map_or(0, |k| k.len());
        progress.add(1, size as u64);
    }
    Ok(true)
}

/// Rewinds to the first record not printed, so a group commits only what was.
fn rewind(consumer: &mut Consumer, not_printed: &[ConsumerRecord]) -> CommandResult {
    let mut rewound = std::collections::HashSet::new();
    for rest in not_printed {
        let tp = TopicPartition::new(&*rest.topic, rest.partition);
        if rewound.insert(tp.clone()) {
            consumer.seek(&tp, rest.offset).map_err(describe)?;
        }
    }
    Ok(())
}

/// Whether the output is still open after a write: a broken pipe closes it, any other
/// failure is an error.
fn output_open(written: std::io::Result<()>) -> Result<bool, String> {
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(format!("cannot write output: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_closes_the_output_and_other_write_errors_fail() {
        assert_eq!(output_open(Ok(())), Ok(true));
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(output_open(Err(pipe)), Ok(false));
        let full = std::io::Error::other("disk full");
        assert_eq!(
            output_open(Err(full)),
            Err("cannot write output: disk full".to_string())
        );
    }
}
