//! The fault harness's Rust client (`tests/faults/`): a producer or a consumer that records a
//! history, one JSON object per line, in the format `tests/faults/HISTORY.md` defines, beside the
//! harness's librdkafka and Java clients.
//!
//! - `fault_client produce --bootstrap B --topic T --client NAME --count N --rate R
//!   [--idempotent|--no-idempotent] [--acks all|1] [--keys K] --out FILE`: values `NAME-0` …
//!   at about R records a second (0: as fast as it can); one `send` event per record once its
//!   outcome is known. SIGTERM flushes for up to `--flush-s` seconds, then writes `unknown` for
//!   every record still in flight.
//! - `fault_client consume --bootstrap B --topic T --client NAME --group G --stop-file F --out FILE
//!   [--strategy range|cooperative-sticky] [--commit-every-s S] [--idle-s S]`: a group member with `assign` events on every rebalance,
//!   a `poll` event per record and a `commit` event per committed partition; it leaves the group
//!   once the stop file exists and nothing new came for `--idle-s`.
//!
//! Invariant: every record handed to the producer gets exactly one `send` event, whatever ends
//! the process short of SIGKILL; the output is flushed after every line.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quipu_client::{
    Acks, Consumer, ConsumerConfig, DeliveryFuture, Error, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, RebalanceListener, TopicPartition,
};
use tokio::signal::unix::{signal, SignalKind};

/// The history file, shared by the main loop and the rebalance listener.
type Out = Arc<Mutex<BufWriter<File>>>;

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A JSON string literal; the harness's keys and values are ASCII, but escape what JSON needs.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "null".into(), json_str)
}

fn write_line(out: &Out, line: &str) {
    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
    // A full disk or a closed pipe ends the history; the harness sees the file as it is.
    let _ = writeln!(w, "{line}").and_then(|()| w.flush());
}

/// `--flag value` pairs and bare `--flag`s.
struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Self {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let flag = args[i].trim_start_matches("--").to_string();
            match args.get(i + 1).filter(|v| !v.starts_with("--")) {
                Some(v) => {
                    map.insert(flag, v.clone());
                    i += 2;
                }
                None => {
                    map.insert(flag, String::new());
                    i += 1;
                }
            }
        }
        Self(map)
    }
    fn get(&self, flag: &str) -> String {
        match self.0.get(flag) {
            Some(v) => v.clone(),
            None => {
                eprintln!("fault_client: --{flag} is required");
                std::process::exit(2);
            }
        }
    }
    fn number(&self, flag: &str, default: f64) -> f64 {
        self.0
            .get(flag)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
    fn has(&self, flag: &str) -> bool {
        self.0.contains_key(flag)
    }
}

fn open_out(args: &Args) -> Out {
    let path = args.get("out");
    let file = File::create(&path).unwrap_or_else(|e| {
        eprintln!("fault_client: cannot create {path}: {e}");
        std::process::exit(2);
    });
    Arc::new(Mutex::new(BufWriter::new(file)))
}

/// "fail" only when the broker said the write was refused for good; otherwise nobody knows
/// whether it landed (a timeout, a lost connection, retries exhausted on a retriable error).
fn classify(error: &Error) -> &'static str {
    match error {
        Error::Broker { .. } | Error::InvalidArgument(_) if !error.is_retriable() => "fail",
        _ => "unknown",
    }
}

/// One record handed to the producer: when, and what.
struct Sent {
    t0_s: f64,
    key: Option<String>,
    value: String,
}

/// A record sent and not yet reported.
struct InFlight {
    sent: Sent,
    delivery: DeliveryFuture,
}

struct Sender {
    out: Out,
    client: String,
    topic: String,
    idempotent: bool,
}

impl Sender {
    fn report(&self, r: &Sent, result: &str, at: Option<(i32, i64)>, error: Option<String>) {
        let (partition, offset) = at.map_or(("null".into(), "null".into()), |(p, o)| {
            (p.to_string(), o.to_string())
        });
        write_line(
            &self.out,
            &format!(
                "{{\"type\":\"send\",\"client\":{},\"t\":{:.6},\"t0\":{:.6},\"topic\":{},\
                 \"key\":{},\"value\":{},\"idempotent\":{},\"result\":\"{result}\",\
                 \"partition\":{partition},\"offset\":{offset},\"error\":{}}}",
                json_str(&self.client),
                now_s(),
                r.t0_s,
                json_str(&self.topic),
                json_opt(r.key.as_deref()),
                json_str(&r.value),
                self.idempotent,
                json_opt(error.as_deref()),
            ),
        );
    }

    async fn settle(&self, r: InFlight) {
        match r.delivery.await {
            Ok(m) => self.report(&r.sent, "ok", Some((m.partition, m.offset)), None),
            Err(e) => self.report(&r.sent, classify(&e), None, Some(e.to_string())),
        }
    }

    /// Reports every record whose outcome is known, keeping the rest in order.
    async fn settle_done(&self, pending: &mut Vec<InFlight>) {
        let mut still = Vec::with_capacity(pending.len());
        for mut r in pending.drain(..) {
            if r.delivery.is_done() {
                self.settle(r).await;
            } else {
                still.push(r);
            }
        }
        *pending = still;
    }
}

fn producer_config(args: &Args) -> ProducerConfig {
    let mut config = ProducerConfig::new(&args.get("bootstrap"));
    config.client.client_id = args.get("client");
    config.acks = if args.0.get("acks").map(String::as_str) == Some("1") {
        Acks::Leader
    } else {
        Acks::All
    };
    config.enable_idempotence = Some(!args.has("no-idempotent"));
    config.linger_ms = 5;
    config.delivery_timeout_ms = 30_000;
    config.client.request_timeout_ms = 5_000;
    config
}

async fn produce(args: Args) -> quipu_client::Result<()> {
    let config = producer_config(&args);
    let sender = Sender {
        out: open_out(&args),
        client: args.get("client"),
        topic: args.get("topic"),
        idempotent: config.enable_idempotence == Some(true),
    };
    let count = args.number("count", 0.0) as u64;
    let rate = args.number("rate", 0.0);
    let keys = args.number("keys", 0.0) as u64;
    let flush = Duration::from_secs_f64(args.number("flush-s", 40.0));
    let producer = Producer::new(config)?;
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let started = Instant::now();
    let mut pending: Vec<InFlight> = Vec::new();
    for n in 0..count {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = term.recv() => break,
            }
        }
        let value = format!("{}-{n}", sender.client);
        let key = (keys > 0).then(|| format!("k-{}", n % keys));
        let mut record = ProducerRecord::new(sender.topic.clone(), value.clone());
        if let Some(k) = &key {
            record = record.with_key(k.clone());
        }
        let sent = Sent {
            t0_s: now_s(),
            key,
            value,
        };
        match producer.send(record).await {
            Ok(delivery) => pending.push(InFlight { sent, delivery }),
            Err(e) => sender.report(&sent, classify(&e), None, Some(e.to_string())),
        }
        if n % 100 == 0 {
            sender.settle_done(&mut pending).await;
        }
    }
    let _ = tokio::time::timeout(flush, producer.flush()).await;
    sender.settle_done(&mut pending).await;
    for r in &pending {
        sender.report(
            &r.sent,
            "unknown",
            None,
            Some("still in flight at exit".into()),
        );
    }
    // Whatever is still queued stays unknown; do not wait on a broker that may be gone.
    let _ = tokio::time::timeout(Duration::from_secs(2), producer.close()).await;
    Ok(())
}

/// Records every change of the assignment as the full assignment after it.
struct AssignLog {
    out: Out,
    client: String,
    group: String,
    owned: BTreeSet<(String, i32)>,
}

impl AssignLog {
    fn write(&self) {
        let list: Vec<String> = self
            .owned
            .iter()
            .map(|(t, p)| format!("[{},{p}]", json_str(t)))
            .collect();
        write_line(
            &self.out,
            &format!(
                "{{\"type\":\"assign\",\"client\":{},\"t\":{:.6},\"group\":{},\"partitions\":[{}]}}",
                json_str(&self.client),
                now_s(),
                json_str(&self.group),
                list.join(",")
            ),
        );
    }
}

impl RebalanceListener for AssignLog {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.owned.remove(&(tp.topic.to_string(), tp.partition));
        }
        self.write();
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.owned.insert((tp.topic.to_string(), tp.partition));
        }
        self.write();
    }
}

fn consumer_config(args: &Args) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(&args.get("bootstrap")).with_group(&args.get("group"));
    config.client.client_id = args.get("client");
    config.client.request_timeout_ms = 5_000;
    config.auto_offset_reset = OffsetReset::Earliest;
    config.enable_auto_commit = false;
    config.session_timeout_ms = 6_000;
    config.heartbeat_interval_ms = 1_000;
    if let Some(strategy) = args.0.get("strategy") {
        config.assignment_strategies = vec![strategy.clone()];
    }
    config
}

struct Member {
    out: Out,
    client: String,
    group: String,
}

impl Member {
    fn polled(&self, r: &quipu_client::ConsumerRecord) {
        let text =
            |b: &Option<bytes::Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        write_line(
            &self.out,
            &format!(
                "{{\"type\":\"poll\",\"client\":{},\"t\":{:.6},\"group\":{},\"topic\":{},\
                 \"partition\":{},\"offset\":{},\"key\":{},\"value\":{}}}",
                json_str(&self.client),
                now_s(),
                json_str(&self.group),
                json_str(&r.topic),
                r.partition,
                r.offset,
                json_opt(text(&r.key).as_deref()),
                json_opt(text(&r.value).as_deref()),
            ),
        );
    }

    async fn commit(&self, consumer: &mut Consumer) {
        let positions: Vec<(TopicPartition, i64)> = consumer
            .assignment()
            .into_iter()
            .filter_map(|tp| consumer.position(&tp).map(|p| (tp, p)))
            .collect();
        if positions.is_empty() {
            return;
        }
        let t0_s = now_s();
        if consumer.commit_offsets(&positions).await.is_err() {
            return;
        }
        for (tp, offset) in positions {
            write_line(
                &self.out,
                &format!(
                    "{{\"type\":\"commit\",\"client\":{},\"t\":{:.6},\"t0\":{t0_s:.6},\
                     \"group\":{},\"topic\":{},\"partition\":{},\"offset\":{offset}}}",
                    json_str(&self.client),
                    now_s(),
                    json_str(&self.group),
                    json_str(&tp.topic),
                    tp.partition,
                ),
            );
        }
    }
}

async fn consume(args: Args) -> quipu_client::Result<()> {
    let member = Member {
        out: open_out(&args),
        client: args.get("client"),
        group: args.get("group"),
    };
    let stop = PathBuf::from(args.get("stop-file"));
    let commit_every = Duration::from_secs_f64(args.number("commit-every-s", 1.0));
    let idle = Duration::from_secs_f64(args.number("idle-s", 3.0));
    let mut consumer = Consumer::new(consumer_config(&args))?;
    consumer.set_rebalance_listener(Box::new(AssignLog {
        out: member.out.clone(),
        client: member.client.clone(),
        group: member.group.clone(),
        owned: BTreeSet::new(),
    }));
    consumer.subscribe(&[&args.get("topic")])?;
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let (mut last_commit, mut last_record) = (Instant::now(), Instant::now());
    loop {
        let polled = tokio::select! {
            r = consumer.poll(Duration::from_millis(200)) => r,
            _ = term.recv() => break,
        };
        // A poll error (a coordinator moving, a broker gone) is retried by polling again.
        for r in polled.unwrap_or_default() {
            member.polled(&r);
            last_record = Instant::now();
        }
        if last_commit.elapsed() >= commit_every {
            member.commit(&mut consumer).await;
            last_commit = Instant::now();
        }
        if stop.exists() && last_record.elapsed() >= idle {
            break;
        }
    }
    member.commit(&mut consumer).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), consumer.close()).await;
    Ok(())
}

#[tokio::main]
async fn main() -> quipu_client::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = argv.split_first() else {
        eprintln!("usage: fault_client produce|consume --flag value ...");
        std::process::exit(2);
    };
    let args = Args::parse(rest);
    match mode.as_str() {
        "produce" => produce(args).await,
        "consume" => consume(args).await,
        other => {
            eprintln!("fault_client: unknown mode {other}");
            std::process::exit(2);
        }
    }
}
