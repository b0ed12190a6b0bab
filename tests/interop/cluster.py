"""A cluster of quipu processes on loopback for the interop tests, shared by test_cluster_tools.py,
test_replication.py and test_cluster_faults.py. This module owns:

- starting and stopping the cluster: `make_nodes` (combined nodes, broker and controller, that
  form the Raft metadata quorum, plus optional broker-only nodes, each with the cluster's own
  settings), `start_cluster` (which waits until every node lists every broker as registered),
  `shutdown` (whatever state the nodes are in) and `running_cluster`, the three in a `with` for
  the test files' `cluster` fixtures;
- Apache Kafka's tools (the kafka-tools jars that tests/interop/kafka copies into target/lib, or
  target/dependency) run in a JVM: `run_tool`, `tool`, and kafka-topics --describe read back by
  `describe_partitions`; the interop Java client's class path too;
- polling: `wait_until` and its falsy `Pending`, `alive`, `bootstraps` and `brokers_listed`.

The settings every replicated cluster here shares are REPLICATION_SETTINGS: short session and lag
times so that failures are seen within seconds.
"""
import contextlib
import re
import signal
import subprocess
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from conftest import Broker, free_port

# tests/run.sh copies Kafka's jars to target/lib; a plain `mvn dependency:copy-dependencies`
# puts them in target/dependency.
_KAFKA_TARGET = Path(__file__).parent / "kafka" / "target"
KAFKA_LIB = next((d for d in (_KAFKA_TARGET / "lib", _KAFKA_TARGET / "dependency") if d.exists()),
                 _KAFKA_TARGET / "lib")
JAVA_DIR = Path(__file__).parent / "java" / "target"
JAVA_CLASSPATH = f"{JAVA_DIR / 'quipu-interop-0.1.0.jar'}:{JAVA_DIR / 'lib'}/*"
TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
# The combined nodes (the voters) of a cluster unless told otherwise.
NODES = 3

REPLICATION_SETTINGS = [
    "num.partitions=3",
    "min.insync.replicas=2",
    "default.replication.factor=3",
    "broker.session.timeout.ms=2000",
    "broker.heartbeat.interval.ms=300",
    "replica.lag.time.max.ms=3000",
    "controller.quorum.election.timeout.ms=500",
    "offsets.topic.replication.factor=3",
]


# ---------------------------------------------------------------------------------------------
# Kafka's tools


def run_tool(main_class: str, *args, timeout=60) -> subprocess.CompletedProcess:
    """One of Kafka's tools (a main class in the kafka-tools jars), its exit status unchecked."""
    return subprocess.run(["java", "-cp", f"{KAFKA_LIB}/*", main_class, *args],
                          capture_output=True, text=True, timeout=timeout)


def tool(main_class: str, *args, timeout=60) -> str:
    """One of Kafka's tools, which must succeed; what it printed on stdout."""
    out = run_tool(main_class, *args, timeout=timeout)
    assert out.returncode == 0, f"{main_class} {args}: {out.stdout[-2000:]}{out.stderr[-3000:]}"
    return out.stdout


def describe_partitions(bootstrap, topic, *options, timeout=60):
    """kafka-topics --describe (with `options`, such as --under-replicated-partitions):
    {partition: (leader, replicas, sorted isr)} of the rows it prints, and the text printed."""
    out = tool(TOPIC_COMMAND, "--bootstrap-server", bootstrap, "--describe", "--topic", topic, *options,
               timeout=timeout)
    rows = {}
    for line in out.splitlines():
        if "Partition:" in line and "Leader:" in line:
            p = int(re.search(r"Partition: (\d+)", line).group(1))
            isr = re.search(r"Isr: ([\d,]*)", line).group(1)
            rows[p] = (re.search(r"Leader: (-?\d+|none)", line).group(1),
                       re.search(r"Replicas: ([\d,]*)", line).group(1),
                       tuple(sorted(int(b) for b in isr.split(",") if b)))
    return rows, out


# ---------------------------------------------------------------------------------------------
# Polling


class Pending:
    """A falsy answer to `wait_until` that says what was seen."""

    def __init__(self, seen):
        self.seen = seen

    def __bool__(self):
        return False

    def __repr__(self):
        return repr(self.seen)


def wait_until(what, check, timeout_s=30, interval_s=0.2):
    """Calls `check` until it returns something truthy (returned); fails after `timeout_s` with
    the last value seen."""
    deadline = time.time() + timeout_s
    while True:
        last = check()
        if last:
            return last
        assert time.time() < deadline, f"never {what} within {timeout_s} s: last seen {last!r}"
        time.sleep(interval_s)


def alive(node: Broker) -> bool:
    return node.proc is not None and node.proc.poll() is None


def bootstraps(nodes) -> str:
    return ",".join(n.bootstrap for n in nodes)


def brokers_listed(node: Broker):
    """The broker ids `node`'s Metadata lists (the unfenced brokers), or None if it does not answer."""
    try:
        return sorted(AdminClient({"bootstrap.servers": node.bootstrap}).list_topics(timeout=5).brokers)
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------
# The cluster


def make_nodes(tmp_path, settings, voters=NODES, observers=0):
    """`voters` combined nodes (ids 1..voters, the metadata quorum), then `observers` broker-only
    nodes (not voters), each with `settings` (a list of "key=value"); not started."""
    ports = [free_port() for _ in range(voters + observers)]
    voter_list = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports[:voters]))
    nodes = []
    for i, port in enumerate(ports):
        roles = "broker,controller" if i < voters else "broker"
        node_settings = [f"node.id={i + 1}", f"process.roles={roles}", f"controller.quorum.voters={voter_list}",
                         f"controller.listener=127.0.0.1:{port}", *settings]
        args = [a for s in node_settings for a in ("--set", s)]
        nodes.append(Broker(tmp_path / f"node{i + 1}" / "data", args))
    return nodes


def start_cluster(nodes):
    """Starts every node, then waits until each lists every broker as registered."""
    for n in nodes:
        n.data_dir.parent.mkdir(parents=True, exist_ok=True)
        n.start()
    # Every node places replicas over the brokers its own image holds: wait for all to list all.
    wanted = list(range(1, len(nodes) + 1))
    for n in nodes:
        wait_until(f"node at {n.bootstrap} lists brokers {wanted}",
                   lambda: brokers_listed(n) == wanted or Pending(brokers_listed(n)), 30)


def shutdown(nodes):
    """Stops every node, whatever state it is in: a SIGSTOPped one is continued first."""
    for n in nodes:
        if alive(n):
            n.proc.send_signal(signal.SIGCONT)
            n.proc.send_signal(signal.SIGTERM)
    for n in nodes:
        if n.proc is None:
            continue
        try:
            n.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait()
        n.proc = None


@contextlib.contextmanager
def running_cluster(tmp_path, settings, voters=NODES, observers=0):
    """A started cluster (the nodes, see `make_nodes`), stopped on the way out."""
    assert KAFKA_LIB.exists(), "tests/interop/kafka is not built: tests/run.sh builds it"
    nodes = make_nodes(tmp_path, settings, voters, observers)
    try:
        start_cluster(nodes)
        yield nodes
    finally:
        shutdown(nodes)
