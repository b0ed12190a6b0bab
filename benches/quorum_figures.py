#!/usr/bin/env python3
"""The control plane side by side: a 3-node Quipu cluster and a 3-node Apache Kafka KRaft cluster
(combined nodes, kafka_2.13 4.3.1 from Maven Central), one after the other on this machine.

Per system:
- CreateTopics latency: --creates topics (1 partition, replication factor 3) created one after the
  other through confluent-kafka's AdminClient; p50 and p99;
- controller failover: the active controller (kafka-metadata-quorum --describe --status) is
  killed with SIGKILL --kills times; the time from the kill to the next CreateTopics (replication
  factor 2) that succeeds through a surviving node (attempts of at most 2 s each, the client's
  metadata refreshed after each failed one, 20 ms apart); min, median and max. The killed node is
  started again, and has registered again, between kills.

--startup measures instead the start-up of a cluster whose metadata log holds about --records
records, once with no snapshot and once with snapshots: a fresh cluster creates 100 topics, then
IncrementalAlterConfigs on all 100 topics, round after round, each round a new value;
- Kafka writes one ConfigRecord per topic and key: 10 keys, so records / 1000 rounds; snapshots
  forced with metadata.log.max.record.bytes.between.snapshots=1 MiB, kept off with 1 TiB (and a
  day between time-based ones);
- Quipu writes one TopicConfigChanged per topic (its whole override set): retention.ms alone,
  records / 100 rounds; snapshots at the default (20,000 records apart), kept off with
  metadata.log.max.records.between.snapshots=100000000.
The metadata log's high watermark (kafka-metadata-quorum --describe --status; a Quipu entry is one
commit, a batch of records) is reported, and whether every node holds a snapshot. Then, --samples
times: every node stopped (SIGTERM to all, then wait), every node started at once; the seconds
until Metadata lists every broker, and until a CreateTopics (replication factor 3, attempts of at
most 2 s, the client's metadata refreshed after a failed one) succeeds; and per node, from its
process start to its log's line that the metadata is loaded (Quipu: "replayed the metadata quorum's
log"; Kafka: the MetadataLoader's "finished catching up"), and, for Kafka, the MetadataLoader's
catching up alone (its first maybePublishMetadata to that line).

--dir keeps the nodes' directories (data, and each node's log) for a look afterwards.

Run: cargo build --release -p quipu-broker && python3 benches/quorum_figures.py [--startup]
"""
import argparse
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                   ResourceType)

sys.path.insert(0, str(Path(__file__).parent))
from kafka_reference import KafkaReference, ensure_jars, random_cluster_id  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NODES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuipuNode:
    def __init__(self, binary, directory: Path, node_id, port, controller_port, voters, settings=None):
        self.binary, self.dir, self.node_id = binary, directory, node_id
        self.port, self.controller_port, self.voters = port, controller_port, voters
        self.settings = settings or {}
        self.proc = self.started_at = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    @property
    def log(self):
        return self.dir / "quipu.log"

    def start(self, wait=True):
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = {"node.id": self.node_id, "controller.quorum.voters": self.voters,
                    "controller.listener": f"127.0.0.1:{self.controller_port}", **self.settings}
        sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
        self.started_at = time.time()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "--data-dir", str(self.dir / "data"),
                                          "--listen", self.bootstrap, *sets], stdout=log, stderr=log)
        if wait:
            wait_port(self.port)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


class KafkaNode(KafkaReference):
    @property
    def log(self):
        return self.dir / "server.log"

    def start(self, timeout_s=120, wait=False):
        self.started_at = time.time()
        super().start(timeout_s, wait)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_port(port, timeout_s=90):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def quipu_cluster(binary, root: Path, settings=None):
    ports = [(free_port(), free_port()) for _ in range(NODES)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
    return [QuipuNode(binary, root / f"q{i + 1}", i + 1, p, c, voters, settings)
            for i, (p, c) in enumerate(ports)]


def kafka_cluster(root: Path, extra_properties=None):
    ports = [(free_port(), free_port()) for _ in range(NODES)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
    cluster_id = random_cluster_id()
    return [KafkaNode(p, root / f"k{i + 1}", node_id=i + 1, voters=voters, cluster_id=cluster_id,
                      controller_port=c, extra_properties=extra_properties) for i, (p, c) in enumerate(ports)]


def quorum_status(bootstrap, field) -> int:
    """A number of kafka-metadata-quorum's `describe --status`: LeaderId, HighWatermark, ..."""
    out = subprocess.run(["java", "-cp", ensure_jars(), "org.apache.kafka.tools.MetadataQuorumCommand",
                          "--bootstrap-server", bootstrap, "describe", "--status"],
                         capture_output=True, text=True, timeout=120)
    return int(re.search(rf"{field}:\s+(\d+)", out.stdout).group(1))


def leader_id(bootstrap) -> int:
    return quorum_status(bootstrap, "LeaderId")


def create(admin, name, timeout_s=10.0, replication_factor=3) -> bool:
    topic = NewTopic(name, 1, replication_factor)
    futures = admin.create_topics([topic], operation_timeout=timeout_s, request_timeout=timeout_s)
    try:
        futures[name].result(timeout=timeout_s)
        return True
    except Exception:
        return False


def refresh_metadata(admin):
    try:
        admin.list_topics(timeout=1.0)
    except Exception:
        pass


def wait_brokers(nodes, timeout_s=120):
    """Until Metadata lists every broker; a node not answering yet is asked again (its client
    reconnecting at most 200 ms apart, not librdkafka's 10 s, and quiet about refused connections)."""
    admin = AdminClient({"bootstrap.servers": nodes[0].bootstrap, "reconnect.backoff.max.ms": 200, "log_level": 0})
    deadline = time.time() + timeout_s
    while True:
        try:
            if len(admin.list_topics(timeout=2).brokers) >= NODES:
                return
        except KafkaException:
            pass
        assert time.time() < deadline, "the brokers never all registered"
        time.sleep(0.1)


def start_cluster(nodes):
    """Starts every node, then returns once each answers and Metadata lists every broker."""
    for n in nodes:
        n.start()
    for n in nodes:
        wait_port(n.port, 180)
    wait_brokers(nodes)


def measure(nodes, creates, kills, label):
    try:
        start_cluster(nodes)
        admin = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in nodes)})
        assert create(admin, f"{label}-warm", 30)
        latencies = []
        for i in range(creates):
            started = time.perf_counter()
            assert create(admin, f"{label}-t{i}"), f"create {i} failed"
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        failovers = []
        for k in range(kills):
            victim = leader_id(nodes[0].bootstrap) - 1
            survivors = [n for i, n in enumerate(nodes) if i != victim]
            other = AdminClient({"bootstrap.servers": survivors[0].bootstrap})
            killed_at = time.perf_counter()
            nodes[victim].kill()
            attempt = 0
            # Replication factor 2: two brokers are left.
            while not create(other, f"{label}-failover-{k}-{attempt}", 2.0, 2):
                attempt += 1
                assert time.perf_counter() - killed_at < 120, "no CreateTopics succeeded after the kill"
                # The client sends CreateTopics to the broker its cached metadata names as the
                # controller; Kafka names any live broker there, so it may be the one just killed,
                # and the client would keep sending there until its next periodic refresh (minutes).
                refresh_metadata(other)
                time.sleep(0.02)
            failovers.append((time.perf_counter() - killed_at) * 1000)
            nodes[victim].start()
            wait_port(nodes[victim].port, 180)
            wait_brokers(nodes)
            assert nodes[victim].proc.poll() is None, f"the restarted node {victim + 1} exited"
        return {
            "create_p50_ms": latencies[len(latencies) // 2],
            "create_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "failover_ms": failovers,
        }
    finally:
        for n in nodes:
            n.stop()


CONFIG_TOPICS = 100


class QuipuStartup:
    """Quipu under --startup: one record per topic and round, whatever the keys set."""
    name, keys, records_per_topic = "Quipu", ["retention.ms"], 1
    loaded = "replayed the metadata quorum's log"

    @staticmethod
    def cluster(args, root, snapshots):
        settings = {} if snapshots else {"metadata.log.max.records.between.snapshots": 100_000_000}
        return quipu_cluster(args.bin, root, settings)

    @staticmethod
    def has_snapshot(node):
        return (node.dir / "data" / "__cluster_metadata" / "quorum" / "snapshot").exists()

    @staticmethod
    def timestamp(line):
        """A log line's time (RFC 3339, UTC), as seconds since the epoch."""
        return datetime.fromisoformat(line.split()[0]).timestamp()


class KafkaStartup:
    """Kafka under --startup: one ConfigRecord per topic, key and round."""
    name, records_per_topic = "Kafka", 10
    keys = ["retention.ms", "retention.bytes", "segment.ms", "flush.messages", "flush.ms", "delete.retention.ms",
            "min.compaction.lag.ms", "file.delete.delay.ms", "index.interval.bytes", "segment.jitter.ms"]
    loaded, loading = "loader finished catching up", "maybePublishMetadata("

    @staticmethod
    def cluster(args, root, snapshots):
        return kafka_cluster(root, {"metadata.log.max.record.bytes.between.snapshots": 1 << 20} if snapshots else {
            "metadata.log.max.record.bytes.between.snapshots": 1 << 40,
            "metadata.log.max.snapshot.interval.ms": 86_400_000})

    @staticmethod
    def has_snapshot(node):
        return any((node.dir / "data" / "__cluster_metadata-0").glob("*.checkpoint"))

    @staticmethod
    def timestamp(line):
        """A log line's time (`[2026-12-03 09:02:55,312]`, local time), as seconds since the epoch."""
        return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def write_config_records(admin, keys, rounds):
    """CONFIG_TOPICS topics, then `rounds` IncrementalAlterConfigs setting `keys` on all of them,
    to a new value each round."""
    futures = admin.create_topics([NewTopic(f"cfg-{i}", 1, 3) for i in range(CONFIG_TOPICS)], operation_timeout=60)
    for f in futures.values():
        f.result(60)
    for r in range(rounds):
        entries = [ConfigEntry(k, str(10_000_000 + r), incremental_operation=AlterConfigOpType.SET) for k in keys]
        resources = [ConfigResource(ResourceType.TOPIC, f"cfg-{i}", incremental_configs=entries)
                     for i in range(CONFIG_TOPICS)]
        for f in admin.incremental_alter_configs(resources, request_timeout=120).values():
            f.result(120)


def stop_all(nodes, timeout_s=60):
    """SIGTERM to every node at once, then waits for them all (SIGKILL after `timeout_s`)."""
    running = [n for n in nodes if n.proc and n.proc.poll() is None]
    for n in running:
        n.proc.terminate()
    deadline = time.time() + timeout_s
    for n in running:
        try:
            n.proc.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            print(f"  {n.dir.name} still ran {timeout_s} s after SIGTERM: SIGKILL", flush=True)
            n.proc.kill()
            n.proc.wait()


def start_all_timed(nodes):
    """Starts every node at once; the seconds until Metadata lists every broker, and until a
    CreateTopics succeeds."""
    started = time.perf_counter()
    for n in nodes:
        n.start(wait=False)
    wait_brokers(nodes, 300)
    registered = time.perf_counter() - started
    admin = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in nodes), "log_level": 0})
    while not create(admin, f"startup-{time.time_ns()}", 2.0):
        assert time.perf_counter() - started < 300, "no CreateTopics succeeded"
        refresh_metadata(admin)
    return registered, time.perf_counter() - started


def load_times(system, node, offset):
    """From the node's log past `offset` (this start's lines): seconds from its process start to
    the line that its metadata is loaded, and (Kafka) from the loader's first publish to it."""
    with open(node.log, "rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    loaded = next((system.timestamp(l) for l in lines if system.loaded in l), None)
    if loaded is None:
        return None, None
    loading = getattr(system, "loading", None)
    first = next((system.timestamp(l) for l in lines if loading and loading in l), None)
    return loaded - node.started_at, None if first is None else loaded - first


def restart_sample(system, nodes):
    stop_all(nodes)
    offsets = [n.log.stat().st_size if n.log.exists() else 0 for n in nodes]
    registered, created = start_all_timed(nodes)
    loads = [load_times(system, n, o) for n, o in zip(nodes, offsets)]
    return {"registered_s": registered, "created_s": created, "loaded_s": [l[0] for l in loads],
            "loading_s": [l[1] for l in loads]}


def startup_case(system, args, root, snapshots):
    """A fresh cluster, about `args.records` metadata records, then `args.samples` restarts."""
    nodes = system.cluster(args, root, snapshots)
    rounds = args.records // (CONFIG_TOPICS * system.records_per_topic)
    try:
        start_all_timed(nodes)
        admin = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in nodes), "log_level": 0})
        began = time.perf_counter()
        write_config_records(admin, system.keys, rounds)
        written_s = time.perf_counter() - began
        high_watermark = quorum_status(nodes[0].bootstrap, "HighWatermark")
        stop_all(nodes)
        case = {"rounds": rounds, "records": rounds * CONFIG_TOPICS * system.records_per_topic,
                "written_s": written_s, "high_watermark": high_watermark,
                "snapshots": [system.has_snapshot(n) for n in nodes]}
        case["samples"] = [restart_sample(system, nodes) for _ in range(args.samples)]
        return case
    finally:
        stop_all(nodes)


def seconds(values):
    return " / ".join("?" if v is None else f"{v:.2f}" for v in values)


def print_startup(results):
    print("| system | case | records written | metadata high watermark | snapshot on every node "
          "| all brokers registered (s) | first CreateTopics (s) | process start to metadata loaded, "
          "per node (s) | Kafka's loader catching up, per node (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, label), c in results.items():
        for s in c["samples"]:
            print(f"| {name} | {label} | {c['records']} ({c['rounds']} rounds) | {c['high_watermark']} "
                  f"| {'yes' if all(c['snapshots']) else 'no'} | {s['registered_s']:.2f} | {s['created_s']:.2f} "
                  f"| {seconds(s['loaded_s'])} | {seconds(s['loading_s']) if name == 'Kafka' else '-'} |")


def startup(args, root):
    systems = [s for s in (QuipuStartup, KafkaStartup) if s.name.lower() in args.brokers]
    results = {}
    for system in systems:
        for snapshots, label in [(False, "no snapshot"), (True, "snapshots")]:
            directory = root / f"{system.name.lower()}-{'snap' if snapshots else 'nosnap'}"
            results[system.name, label] = case = startup_case(system, args, directory, snapshots)
            print(f"{system.name}, {label}:", case, flush=True)
    print_startup(results)


def print_control_plane(results, kills):
    print("| figure | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for key, name in [("create_p50_ms", "CreateTopics p50 (ms)"), ("create_p99_ms", "CreateTopics p99 (ms)")]:
        print(f"| {name} | " + " | ".join(f"{r[key]:.1f}" for r in results.values()) + " |")
    if kills:
        print("| controller failover, kill to next CreateTopics (ms): min / median / max | " + " | ".join(
            f"{min(r['failover_ms']):.0f} / {statistics.median(r['failover_ms']):.0f} / {max(r['failover_ms']):.0f}"
            for r in results.values()) + " |")


def control_plane(args, root):
    results = {}
    if "quipu" in args.brokers:
        results["Quipu"] = measure(quipu_cluster(args.bin, root), args.creates, args.kills, "quipu")
        print("Quipu:", results["Quipu"], flush=True)
    if "kafka" in args.brokers:
        results["Kafka"] = measure(kafka_cluster(root), args.creates, args.kills, "kafka")
        print("Kafka:", results["Kafka"], flush=True)
    print_control_plane(results, args.kills)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "quipu"))
    ap.add_argument("--creates", type=int, default=200)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--brokers", default="quipu,kafka")
    ap.add_argument("--dir", help="the nodes' directories (their data and logs) go here and stay; "
                    "by default a temporary directory, removed at the end")
    ap.add_argument("--startup", action="store_true", help="the start-up after --records metadata records "
                    "instead of the CreateTopics and failover figures")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=2, help="restarts per --startup case")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir or tmp)
        (startup if args.startup else control_plane)(args, root)


if __name__ == "__main__":
    sys.exit(main())
