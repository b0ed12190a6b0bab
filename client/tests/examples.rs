//! The examples in `client/examples/` run against a broker and do what they say.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::TestBroker;

/// Builds the examples (a no-op when they are current) and returns the path of `name`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "--quiet", "-p", "quipu-client", "--examples"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "examples build");
    profile_dir.join("examples").join(name)
}

fn run(path: &PathBuf, args: &[&str]) -> (String, String) {
    let out = Command::new(path).args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{} failed: {stderr}", path.display());
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_consumer_group_and_replay_examples_run() {
    let producer = example("producer");
    let group = example("consumer_group");
    let replay = example("replay_from_timestamp");
    let broker = TestBroker::start();
    let topic = broker.topic("examples", 3).await;
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 1;

    let (out, _) = run(&producer, &[&broker.bootstrap, &topic, "30"]);
    let placed: Vec<&str> = out.lines().collect();
    assert_eq!(placed.len(), 30, "one line per record: {out}");
    assert!(placed.iter().all(|l| l.starts_with(&format!("{topic}-"))));

    let group_id = common::unique("example-group");
    let (out, err) = run(&group, &[&broker.bootstrap, &topic, &group_id, "30"]);
    assert_eq!(out.lines().count(), 30, "{out}");
    assert!(
        err.contains("assigned:"),
        "rebalance callback printed: {err}"
    );
    // Its commits are the group's offsets now.
    let lag = broker.admin().group_lag(&group_id).await.unwrap();
    assert_eq!(
        lag.iter().map(|l| l.committed.unwrap_or(0)).sum::<i64>(),
        30
    );

    let (out, err) = run(
        &replay,
        &[&broker.bootstrap, &topic, &before_ms.to_string()],
    );
    assert_eq!(out.lines().count(), 30, "{out}");
    assert!(err.contains("replayed 30 records"), "{err}");
    let future = (before_ms + 3_600_000).to_string();
    let (out, err) = run(&replay, &[&broker.bootstrap, &topic, &future]);
    assert_eq!(out.lines().count(), 0);
    assert!(err.contains("replayed 0 records"), "{err}");
}
