//! The `quipu` command-line client against a broker process: topics, produce, consume (every
//! starting point and format), groups with lag, and one-line errors with non-zero exits.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::BrokerProcess;

fn quipu(broker: &BrokerProcess, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quipu"))
        .args(args)
        .env("QUIPU_BOOTSTRAP", format!("127.0.0.1:{}", broker.port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        // The tool may stop reading early (and exit) on bad input: a broken pipe is its answer.
        if let Err(e) = input.write_all(s.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(broker: &BrokerProcess, args: &[&str], stdin: Option<&str>) -> String {
    let out = quipu(broker, args, stdin);
    assert!(
        out.status.success(),
        "quipu {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The command fails with `code` and exactly one line on stderr, which contains `needle`.
fn fails(broker: &BrokerProcess, args: &[&str], code: i32, needle: &str) {
    let out = quipu(broker, args, None);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(code), "quipu {args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "{stderr:?} should mention {needle:?}"
    );
}

#[test]
fn topics_are_created_listed_described_and_deleted() {
    let broker = BrokerProcess::start(&[]);
    let out = ok(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "cleanup.policy=compact",
        ],
        None,
    );
    assert!(out.contains("created topic orders"));
    assert_eq!(ok(&broker, &["topic", "list"], None).trim(), "orders");
    let described = ok(&broker, &["topic", "describe", "orders"], None);
    assert!(described.contains("PartitionCount: 3"), "{described}");
    assert!(described.contains("cleanup.policy=compact"), "{described}");
    assert_eq!(described.matches("\tPartition: ").count(), 3, "{described}");
    fails(&broker, &["topic", "create", "orders"], 1, "already exists");
    fails(&broker, &["topic", "describe", "nope"], 1, "does not exist");
    ok(&broker, &["topic", "delete", "orders"], None);
    assert_eq!(ok(&broker, &["topic", "list"], None).trim(), "");
    fails(&broker, &["topic", "delete", "orders"], 1, "orders");
}

#[test]
fn produced_lines_are_consumed_from_every_starting_point_and_format() {
    let broker = BrokerProcess::start(&[]);
    ok(&broker, &["topic", "create", "lines", "-p", "2"], None);
    let input: String = (0..200)
        .map(|i| format!("user-{}:event {i}\n", i % 7))
        .collect();
    let produced = quipu(
        &broker,
        &[
            "produce",
            "lines",
            "--key-separator",
            ":",
            "--header",
            "source=cli",
            "-H",
            "n=1",
        ],
        Some(&input),
    );
    assert!(produced.status.success());
    let summary = String::from_utf8(produced.stderr).unwrap();
    assert!(summary.contains("produced 200 records"), "{summary}");

    let json = ok(
        &broker,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "json",
        ],
        None,
    );
    let records: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 200);
    let r = records.iter().find(|r| r["value"] == "event 13").unwrap();
    assert_eq!(r["key"], "user-6");
    assert_eq!(r["topic"], "lines");
    assert_eq!(r["headers"]["source"], "cli");
    assert_eq!(r["headers"]["n"], "1");
    assert!(r["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    // Keys went where murmur2 puts them: one key, one partition.
    let mut partition_of = std::collections::HashMap::new();
    for r in &records {
        let p = partition_of
            .entry(r["key"].as_str().unwrap().to_string())
            .or_insert(r["partition"].clone());
        assert_eq!(*p, r["partition"]);
    }

    let kv = ok(
        &broker,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "-e",
            "--format",
            "kv",
            "--separator",
            "=",
        ],
        None,
    );
    assert!(kv.lines().any(|l| l == "user-6=event 13"), "{kv}");
    let text = ok(
        &broker,
        &["consume", "lines", "--from-beginning", "-e", "-n", "5"],
        None,
    );
    assert_eq!(text.lines().count(), 5);
    assert!(text.lines().all(|l| l.starts_with("event ")));

    // --offset on one partition.
    let p0 = records.iter().filter(|r| r["partition"] == 0).count();
    let from_offset = ok(
        &broker,
        &["consume", "lines", "-p", "0", "--offset", "10", "-e"],
        None,
    );
    assert_eq!(from_offset.lines().count(), p0 - 10);

    // --timestamp: epoch ms and ISO-8601. Everything was written after 2020 and before now + 1h.
    let all = ok(
        &broker,
        &[
            "consume",
            "lines",
            "--timestamp",
            "2020-01-01T00:00:00Z",
            "-e",
        ],
        None,
    );
    assert_eq!(all.lines().count(), 200);
    let later_ms = records
        .iter()
        .map(|r| r["timestamp"].as_i64().unwrap())
        .max()
        .unwrap()
        + 3_600_000;
    let none = ok(
        &broker,
        &[
            "consume",
            "lines",
            "--timestamp",
            &later_ms.to_string(),
            "-e",
        ],
        None,
    );
    assert_eq!(none.lines().count(), 0);
    let day = ok(
        &broker,
        &[
            "consume",
            "lines",
            "--timestamp",
            "2020-01-01",
            "-e",
            "-n",
            "3",
        ],
        None,
    );
    assert_eq!(day.lines().count(), 3);

    // From a file.
    let file = broker.dir.path().join("input.txt");
    std::fs::write(&file, "a\nb\nc\n").unwrap();
    ok(
        &broker,
        &[
            "produce",
            "lines",
            "--file",
            file.to_str().unwrap(),
            "--partition",
            "1",
        ],
        None,
    );
    let tail = ok(
        &broker,
        &[
            "consume",
            "lines",
            "-p",
            "1",
            "--offset",
            &(200 - p0).to_string(),
            "-e",
        ],
        None,
    );
    assert_eq!(tail, "a\nb\nc\n");
}

#[test]
fn a_group_consumes_commits_and_is_described_with_lag() {
    let broker = BrokerProcess::start(&["--set", "group.initial.rebalance.delay.ms=0"]);
    ok(&broker, &["topic", "create", "work", "-p", "3"], None);
    let input: String = (0..90).map(|i| format!("job {i}\n")).collect();
    ok(&broker, &["produce", "work"], Some(&input));
    let first = ok(
        &broker,
        &[
            "consume",
            "work",
            "--group",
            "workers",
            "--from-beginning",
            "-n",
            "60",
        ],
        None,
    );
    assert_eq!(first.lines().count(), 60);
    let listed = ok(&broker, &["group", "list"], None);
    assert!(
        listed.lines().any(|l| l.starts_with("workers\t")),
        "{listed}"
    );
    let described = ok(&broker, &["group", "describe", "workers"], None);
    let lag: i64 = described
        .lines()
        .filter(|l| l.starts_with("work\t"))
        .map(|l| l.split('\t').nth(4).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(lag, 30, "{described}");
    // The group resumes where it committed: the other 30, none again.
    let rest = ok(
        &broker,
        &["consume", "work", "--group", "workers", "-e"],
        None,
    );
    assert_eq!(rest.lines().count(), 30);
    let seen: std::collections::HashSet<&str> = first.lines().chain(rest.lines()).collect();
    assert_eq!(seen.len(), 90);
    fails(&broker, &["group", "describe", "idle"], 1, "does not exist");

    // Offsets reset, as kafka-consumer-groups --reset-offsets: a dry run by default.
    let lag_of = |partition: Option<&str>| -> i64 {
        ok(&broker, &["group", "describe", "workers"], None)
            .lines()
            .filter(|l| l.starts_with("work\t"))
            .filter(|l| partition.is_none_or(|p| l.split('\t').nth(1) == Some(p)))
            .map(|l| l.split('\t').nth(4).unwrap().parse::<i64>().unwrap())
            .sum()
    };
    let plan = ok(
        &broker,
        &["group", "reset-offsets", "workers", "work", "--to-earliest"],
        None,
    );
    assert_eq!(plan, "work\t0\t0\nwork\t1\t0\nwork\t2\t0\n");
    assert_eq!(lag_of(None), 0, "a dry run commits nothing");
    let reset = |args: &[&str]| {
        let mut all = vec!["group", "reset-offsets", "workers", "work", "--execute"];
        all.extend_from_slice(args);
        ok(&broker, &all, None)
    };
    reset(&["--to-earliest"]);
    assert_eq!(lag_of(None), 90);
    let again = ok(
        &broker,
        &["consume", "work", "--group", "workers", "-e"],
        None,
    );
    assert_eq!(
        again.lines().count(),
        90,
        "the group reads everything again"
    );
    // One partition to offset 1: the one holding the most records.
    let ends = ok(
        &broker,
        &["group", "reset-offsets", "workers", "work", "--to-latest"],
        None,
    );
    let (fullest, end) = ends
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            (fields[1].to_string(), fields[2].parse::<i64>().unwrap())
        })
        .max_by_key(|(_, end)| *end)
        .unwrap();
    assert!(end >= 2, "{ends}");
    reset(&["--to-offset", "1", "--partition", &fullest]);
    assert_eq!(lag_of(Some(&fullest)), end - 1);
    assert_eq!(
        lag_of(None),
        end - 1,
        "the other partitions stay where they were"
    );
    reset(&["--to-datetime", "2999-01-01"]);
    assert_eq!(lag_of(None), 0, "no record that late: the end");
    reset(&["--to-offset", "1000000"]);
    assert_eq!(lag_of(None), 0, "an offset past the end is the end");
    fails(
        &broker,
        &[
            "group",
            "reset-offsets",
            "workers",
            "missing",
            "--to-earliest",
        ],
        1,
        "topic `missing` does not exist",
    );
    fails(
        &broker,
        &["group", "reset-offsets", "workers", "work"],
        2,
        "--to-earliest",
    );
    // Not while the group has a member.
    let mut member = Command::new(env!("CARGO_BIN_EXE_quipu"))
        .args(["consume", "work", "--group", "workers"])
        .env("QUIPU_BOOTSTRAP", format!("127.0.0.1:{}", broker.port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ok(&broker, &["group", "describe", "workers"], None).contains("Members: 1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the member never joined"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    fails(
        &broker,
        &[
            "group",
            "reset-offsets",
            "workers",
            "work",
            "--to-earliest",
            "--execute",
        ],
        1,
        "is active",
    );
    member.kill().unwrap();
    member.wait().unwrap();
}

#[test]
fn errors_are_one_line_and_a_non_zero_exit() {
    let broker = BrokerProcess::start(&["--set", "auto.create.topics.enable=false"]);
    fails(
        &broker,
        &["consume", "missing", "-e"],
        1,
        "topic `missing` does not exist",
    );
    fails(&broker, &["produce", "missing"], 1, "missing");
    fails(&broker, &["consume", "t", "--bogus"], 2, "--bogus");
    fails(
        &broker,
        &["consume", "t", "--timestamp", "yesterday"],
        1,
        "ISO-8601",
    );
    fails(
        &broker,
        &["consume", "t", "--offset", "1", "--group", "g"],
        2,
        "cannot be used",
    );
    fails(
        &broker,
        &["topic", "list", "-b", "127.0.0.1:1"],
        1,
        "unreachable",
    );
    ok(&broker, &["topic", "create", "t", "-p", "1"], None);
    fails(
        &broker,
        &["consume", "t", "-p", "5", "-e"],
        1,
        "partition 5 does not exist",
    );
    let out = quipu(
        &broker,
        &["produce", "t", "-K", ":"],
        Some("k:v\nno separator\n"),
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.trim(), "error: line 2 has no key separator `:`");
    // A line longer than max.request.size is refused before it is read whole.
    let long = format!("ok\n{}\n", "x".repeat(2 << 20));
    let out = quipu(&broker, &["produce", "t"], Some(&long));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("line 2 is longer than 1048576 bytes"),
        "{stderr}"
    );
}
