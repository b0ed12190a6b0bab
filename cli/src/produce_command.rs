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
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

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
    let config = producer_config(bootstrap, &args)?;
    let headers = parse_headers(&args.headers)?;
    let input = open_input(&args).await?;
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
    while read_line(&mut reader, &mut line, max_line_bytes, line_number + 1).await? {
        line_number += 1;
        let record = record_of(&args, &headers, &line, line_number)?;
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

/// The producer's settings from the command line.
fn producer_config(bootstrap: &str, args: &ProduceArgs) -> Result<ProducerConfig, String> {
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
    Ok(config)
}

/// The `--header KEY=VALUE`s, in order.
fn parse_headers(headers: &[String]) -> Result<Vec<(String, Option<Bytes>)>, String> {
    headers
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once('=')
                .ok_or_else(|| format!("--header takes KEY=VALUE, got `{h}`"))?;
            Ok((k.to_string(), Some(Bytes::copy_from_slice(v.as_bytes()))))
        })
        .collect()
}

/// `--file`, or stdin.
async fn open_input(args: &ProduceArgs) -> Result<Box<dyn AsyncRead + Unpin + Send>, String> {
    Ok(match &args.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    })
}

/// Reads line `line_number` into `line`, without its line ending; false at the end of the
/// input. A line longer than `max_line_bytes` is an error before it is read whole.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max_line_bytes: u64,
    line_number: u64,
) -> Result<bool, String> {
    line.clear();
    let n = reader
        .take(max_line_bytes + 1)
        .read_until(b'\n', line)
        .await
        .map_err(|e| format!("cannot read input: {e}"))?;
    if n == 0 {
        return Ok(false);
    }
    if n as u64 > max_line_bytes && line.last() != Some(&b'\n') {
        return Err(format!(
            "line {line_number} is longer than {max_line_bytes} bytes (max.request.size)"
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(true)
}

/// The record of `line`: its value, or its key and value split at `--key-separator`.
fn record_of(
    args: &ProduceArgs,
    headers: &[(String, Option<Bytes>)],
    line: &[u8],
    line_number: u64,
) -> Result<ProducerRecord, String> {
    let mut record = ProducerRecord {
        topic: args.topic.clone(),
        partition: args.partition,
        headers: headers.to_vec(),
        ..Default::default()
    };
    match &args.key_separator {
        Some(sep) => {
            let at = find(line, sep.as_bytes())
                .ok_or_else(|| format!("line {line_number} has no key separator `{sep}`"))?;
            record.key = Some(Bytes::copy_from_slice(&line[..at]));
            record.value = Some(Bytes::copy_from_slice(&line[at + sep.len()..]));
        }
        None => record.value = Some(Bytes::copy_from_slice(line)),
    }
    Ok(record)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(key_separator: Option<&str>) -> ProduceArgs {
        ProduceArgs {
            topic: "t".into(),
            file: None,
            key_separator: key_separator.map(str::to_string),
            headers: Vec::new(),
            partition: Some(1),
            compression: "lz4".into(),
            acks: "1".into(),
            linger_ms: 7,
            batch_size: 1024,
        }
    }

    #[test]
    fn a_line_splits_into_key_and_value_at_the_first_separator() {
        let headers = parse_headers(&["h=a=b".to_string()]).unwrap();
        assert_eq!(
            headers,
            [("h".to_string(), Some(Bytes::from_static(b"a=b")))]
        );
        let r = record_of(&args(Some("::")), &headers, b"k::v::w", 3).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v::w"[..]));
        assert_eq!((r.topic.as_str(), r.partition), ("t", Some(1)));
        assert_eq!(r.headers, headers);
        let e = record_of(&args(Some("::")), &headers, b"no key", 3).unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let whole = record_of(&args(None), &[], b"k::v", 1).unwrap();
        assert_eq!(
            (whole.key, whole.value.as_deref()),
            (None, Some(&b"k::v"[..]))
        );
        assert!(parse_headers(&["no-equals".to_string()]).is_err());
    }

    #[test]
    fn the_command_line_sets_acks_compression_linger_and_batch_size() {
        let config = producer_config("localhost:1", &args(None)).unwrap();
        assert_eq!(config.acks, Acks::Leader);
        assert_eq!(config.compression, Compression::Lz4);
        assert_eq!((config.linger_ms, config.batch_size_bytes), (7, 1024));
        let mut bad = args(None);
        bad.acks = "2".into();
        assert!(producer_config("localhost:1", &bad).is_err());
    }

    #[tokio::test]
    async fn lines_lose_their_endings_and_one_too_long_is_refused() {
        let mut input: &[u8] = b"first\r\nsecond\nthird";
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while read_line(&mut input, &mut line, 100, 1).await.unwrap() {
            lines.push(String::from_utf8(line.clone()).unwrap());
        }
        assert_eq!(lines, ["first", "second", "third"]);
        let mut long: &[u8] = b"0123456789\n";
        let e = read_line(&mut long, &mut line, 5, 9).await.unwrap_err();
        assert!(e.contains("line 9") && e.contains("5 bytes"), "{e}");
    }
}
