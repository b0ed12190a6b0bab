"""The fault harness's workload clients, each its own process that records a history file (one JSON
event a line: send, poll, assign, commit, as HISTORY.md defines them). This module owns starting
them and stopping them:

- `start_rdkafka_producer` / `start_rdkafka_consumer`: tests/faults/rdkafka_client.py, on librdkafka
  (confluent-kafka);
- `start_rust_producer` / `start_rust_consumer`: client/examples/fault_client.rs, on our own
  quipu-client;
- `start_java_producer` / `start_java_consumer`: quipu.FaultClient in the interop Java module
  (tests/interop/java, built with mvn package), on Apache Kafka's Java client;
- `Client`: one of them running (its `role` "producer" or "consumer"), with its history at `out`,
  its stdout and stderr beside it (NAME.log for NAME.jsonl) and, for a consumer, the `stop_file`
  (possibly shared by several consumers) whose existence asks it to stop once idle.

Every start_* takes keyword arguments: client (its name, the prefix of its values), out, bootstrap,
topic, and count (producers) or stop_file plus group= or assign= (consumers).
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RDKAFKA_CLIENT = HERE / "rdkafka_client.py"
JAVA_DIR = HERE.parent / "interop" / "java" / "target"
JAVA_CLASSPATH = f"{JAVA_DIR / 'quipu-interop-0.1.0.jar'}:{JAVA_DIR / 'lib'}/*"
# cargo build -p quipu-client --example fault_client (tests/run.sh builds it).
RUST_CLIENT = Path(os.environ.get("FAULT_RUST_CLIENT", HERE.parents[1] / "target" / "debug" / "examples" / "fault_client"))
# A small heap and quiet logs: several JVMs share a 2-core machine with the brokers.
JAVA = ["java", "-Xmx256m", "-XX:+UseSerialGC", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-cp", JAVA_CLASSPATH, "quipu.FaultClient"]
# How long a consumer that ignored its stop file gets after SIGTERM before SIGKILL.
STOP_GRACE_S = 15


class Client:
    """One client process: a "producer" or a "consumer" (`role`)."""

    def __init__(self, name, role, proc: subprocess.Popen, out: Path, stop_file: Path = None):
        self.name = name
        self.role = role
        self.proc = proc
        self.out = out
        self.log = log_path(out)
        self.stop_file = stop_file

    def alive(self) -> bool:
        return self.proc.poll() is None

    def finish(self):
        """Asks a consumer to stop once it has had no record for its idle time (the stop file)."""
        self.stop_file.touch()

    def wait(self, timeout_s) -> int:
        """The exit status, once it has exited on its own (subprocess.TimeoutExpired if not)."""
        return self.proc.wait(timeout=timeout_s)

    def stop(self, timeout_s=60, signal_first=True) -> int:
        """SIGTERM (a producer then waits for its outstanding records, a consumer commits and
        leaves its group) and SIGKILL if it has not exited within `timeout_s`; the exit status.
        With signal_first=False (a consumer whose stop file exists) it first gets `timeout_s` to
        exit on its own, then SIGTERM and STOP_GRACE_S more."""
        if not signal_first:
            try:
                return self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                print(f"{self.name} still running {timeout_s} s after its stop file", file=sys.stderr)
                timeout_s = STOP_GRACE_S
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                print(f"{self.name} ignored SIGTERM for {timeout_s} s: killed", file=sys.stderr)
        return self.kill()

    def kill(self) -> int:
        if self.alive():
            self.proc.kill()
        return self.proc.wait()

    def __repr__(self):
        return f"Client({self.name}, {self.role}, pid {self.proc.pid}, {self.out})"


def log_path(out: Path) -> Path:
    """Where a client's stdout and stderr go: beside its history, NAME.log for NAME.jsonl."""
    return Path(out).with_suffix(".log")


def _start(role, command, client, out, stop_file=None) -> Client:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path(out), "ab") as log_file:
        proc = subprocess.Popen([*command, "--client", client, "--out", str(out)],
                                stdout=log_file, stderr=subprocess.STDOUT)
    return Client(client, role, proc, out, Path(stop_file) if stop_file else None)


def producer_args(bootstrap, topic, count, rate=0, idempotent=True, acks="all", keys=None, flush_s=40):
    """The flags both producers take."""
    args = ["--bootstrap", bootstrap, "--topic", topic, "--count", str(count), "--rate", str(rate),
            "--idempotent" if idempotent else "--no-idempotent", "--acks", str(acks),
            "--flush-s", str(flush_s)]
    return args + (["--keys", str(keys)] if keys else [])


def consumer_args(bootstrap, topic, stop_file, group=None, assign=None, strategy="cooperative-sticky",
                  commit_every_s=1, idle_s=3):
    """The flags both consumers take: `group` (subscribe) or `assign` (a list of partitions)."""
    assert (group is None) != (assign is None), "a consumer takes a group or partitions to assign"
    how = ["--group", group, "--strategy", strategy] if group else ["--assign", ",".join(map(str, assign))]
    return ["--bootstrap", bootstrap, "--topic", topic, *how, "--stop-file", str(stop_file),
            "--commit-every-s", str(commit_every_s), "--idle-s", str(idle_s)]


def start_rdkafka_producer(*, client, out, bootstrap, topic, count, **options) -> Client:
    """A librdkafka producer of `count` records named `client`, its history at `out`; `options`
    are producer_args' (rate, idempotent, acks, keys, flush_s)."""
    args = producer_args(bootstrap, topic, count, **options)
    return _start("producer", [sys.executable, str(RDKAFKA_CLIENT), "produce", *args], client, out)


def start_rdkafka_consumer(*, client, out, bootstrap, topic, stop_file, **options) -> Client:
    """A librdkafka consumer; `options` are consumer_args' (a group or partitions to assign,
    strategy, commit_every_s, idle_s)."""
    args = consumer_args(bootstrap, topic, stop_file, **options)
    return _start("consumer", [sys.executable, str(RDKAFKA_CLIENT), "consume", *args], client, out, stop_file)


def start_java_producer(*, client, out, bootstrap, topic, count, **options) -> Client:
    """A Java client producer; as start_rdkafka_producer."""
    args = producer_args(bootstrap, topic, count, **options)
    return _start("producer", [*JAVA, "produce", *args], client, out)


def start_java_consumer(*, client, out, bootstrap, topic, stop_file, **options) -> Client:
    """A Java client consumer; as start_rdkafka_consumer."""
    args = consumer_args(bootstrap, topic, stop_file, **options)
    return _start("consumer", [*JAVA, "consume", *args], client, out, stop_file)


def start_rust_producer(*, client, out, bootstrap, topic, count, **options) -> Client:
    """A quipu-client producer (client/examples/fault_client.rs); as start_rdkafka_producer."""
    args = producer_args(bootstrap, topic, count, **options)
    return _start("producer", [str(RUST_CLIENT), "produce", *args], client, out)


def start_rust_consumer(*, client, out, bootstrap, topic, stop_file, **options) -> Client:
    """A quipu-client group member; as start_rdkafka_consumer, but by group only."""
    assert options.get("group"), "the Rust fault client consumes in a group"
    args = consumer_args(bootstrap, topic, stop_file, **options)
    return _start("consumer", [str(RUST_CLIENT), "consume", *args], client, out, stop_file)
