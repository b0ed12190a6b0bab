//! `quipu produce TOPIC`: one record per line of stdin or `--file`, optionally split into key
//! and value at the first `--key-separator`, with `--header`s on every record.
//!
//! Records are sent as fast as the producer takes them; at most `MAX_UNACKNOWLEDGED` delivery
//! futures are kept, the oldest awaited first, so memory stays bounded on any input size. The
//! first failed delivery stops the run with its error.

use std::collections::VecDeque;
use std::path::PathBuf;

use bytes::Bytes;
use clap::Args;
use quipu_client::{Acks, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use crate::progress::Progress;
use crate::{describe, CommandResult};

const MAX_UNACKNOWLEDGED: usize = 100_000;

#[derive(Args, Debug)]
pub(crate) struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Split each line at the first occurrence of this into key and value.
    #[arg(long, short = 'K')]
    key_separator: Option<String>,
    /// A header on every record, `key=value`; repeatable.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Send every record to this partition (default: by key, or sticky without a key).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// linger.ms of the producer.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// batch.size of the producer, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_size: usize,
}

pub(crate) async fn run(bootstrap: &str, args: ProduceArgs) -> CommandResult {
    let mut config = ProducerConfig::new(bootstrap);
    config.compression = args.compression.parse::<Compression>().map_err(describe)?;
    config.acks = match args.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => return Err(format!("--acks `{other}`: expected 0, 1 or all")),
    };
    config.linger_ms = args.linger_ms;
    config.batch_size_bytes = args.batch_size;
    config.max_block_ms = 30_000;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| format!("--header takes KEY=VALUE, got `{h}`"))?;
        headers.push((k.to_string(), Some(Bytes::copy_from_slice(v.as_bytes()))));
    }
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    // A line longer than a request could carry is refused before it is read whole.
    let max_line_bytes = config.max_request_size_bytes as u64;
    let producer = Producer::new(config).map_err(describe)?;
    // Fail early, with one line, when the topic or the broker is not there.
    producer
        .partition_count(&args.topic)
        .await
        .map_err(describe)?;
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut progress = Progress::new("produced");
    let mut pending: VecDeque<(DeliveryFuture, u64)> = VecDeque::new();
    let mut line = Vec::new();
    let mut line_number = 0u64;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(max_line_bytes + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("cannot read input: {e}"))?;
        if n == 0 {
            break;
        }
        line_number += 1;
        if n as u64 > max_line_bytes && line.last() != Some(&b'\n') {
            return Err(format!(
                "line {line_number} is longer than {max_line_bytes} bytes (max.request.size)"
            ));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        let mut record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            headers: headers.clone(),
            ..Default::default()
        };
        match &args.key_separator {
            Some(sep) => {
                let at = find(&line, sep.as_bytes())
                    .ok_or_else(|| format!("line {line_number} has no key separator `{sep}`"))?;
                record.key = Some(Bytes::copy_from_slice(&line[..at]));
                record.value = Some(Bytes::copy_from_slice(&line[at + sep.len()..]));
            }
            None => record.value = Some(Bytes::copy_from_slice(&line)),
        }
        let size = line.len() as u64;
        let delivery = producer.send(record).await.map_err(describe)?;
        pending.push_back((delivery, size));
        while pending.len() > MAX_UNACKNOWLEDGED
            || pending.front_mut().is_some_and(|(d, _)| d.is_done())
        {
            let (d, size) = pending.pop_front().expect("checked");
            d.await.map_err(describe)?;
            progress.add(1, size);
        }
    }
    producer.flush().await;
    for (d, size) in pending {
        d.await.map_err(describe)?;
        progress.add(1, size);
    }
    producer.close().await.map_err(describe)?;
    progress.finish();
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
