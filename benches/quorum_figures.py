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

--dir keeps the nodes' directories (data, and each Kafka node's server.log) for a look afterwards.

Run: cargo build --release -p quipu-broker && python3 benches/quorum_figures.py
"""
import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).parent))
from kafka_reference import KafkaReference, ensure_jars, random_cluster_id  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NODES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuipuNode:
    def __init__(self, binary, directory: Path, node_id, port, controller_port, voters):
        self.binary, self.dir, self.node_id = binary, directory, node_id
        self.port, self.controller_port, self.voters = port, controller_port, voters
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "quipu.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--data-dir", str(self.dir / "data"), "--listen", self.bootstrap,
             "--set", f"node.id={self.node_id}", "--set", f"controller.quorum.voters={self.voters}",
             "--set", f"controller.listener=127.0.0.1:{self.controller_port}"], stdout=log, stderr=log)
        wait_port(self.port)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


class KafkaNode(KafkaReference):
    def start(self, timeout_s=120, wait=False):
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


def quipu_cluster(binary, root: Path):
    ports = [(free_port(), free_port()) for _ in range(NODES)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
    return [QuipuNode(binary, root / f"q{i + 1}", i + 1, p, c, voters) for i, (p, c) in enumerate(ports)]


def kafka_cluster(root: Path):
    ports = [(free_port(), free_port()) for _ in range(NODES)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
    cluster_id = random_cluster_id()
    return [KafkaNode(p, root / f"k{i + 1}", node_id=i + 1, voters=voters, cluster_id=cluster_id,
                      controller_port=c) for i, (p, c) in enumerate(ports)]


def leader_id(bootstrap) -> int:
    out = subprocess.run(["java", "-cp", ensure_jars(), "org.apache.kafka.tools.MetadataQuorumCommand",
                          "--bootstrap-server", bootstrap, "describe", "--status"],
                         capture_output=True, text=True, timeout=120)
    return int(re.search(r"LeaderId:\s+(\d+)", out.stdout).group(1))


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


def wait_brokers(nodes):
    admin = AdminClient({"bootstrap.servers": nodes[0].bootstrap})
    deadline = time.time() + 120
    while len(admin.list_topics(timeout=10).brokers) < NODES:
        assert time.time() < deadline, "the brokers never all registered"
        time.sleep(0.1)


def measure(nodes, creates, kills, label):
    for n in nodes:
        n.start()
    try:
        for n in nodes:
            wait_port(n.port, 180)
        wait_brokers(nodes)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "quipu"))
    ap.add_argument("--creates", type=int, default=200)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--brokers", default="quipu,kafka")
    ap.add_argument("--dir", help="the nodes' directories (their data and logs) go here and stay; "
                    "by default a temporary directory, removed at the end")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir or tmp)
        if "quipu" in args.brokers:
            results["Quipu"] = measure(quipu_cluster(args.bin, root), args.creates, args.kills, "quipu")
            print("Quipu:", results["Quipu"], flush=True)
        if "kafka" in args.brokers:
            results["Kafka"] = measure(kafka_cluster(root), args.creates, args.kills, "kafka")
            print("Kafka:", results["Kafka"], flush=True)
    print("| figure | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for key, name in [("create_p50_ms", "CreateTopics p50 (ms)"), ("create_p99_ms", "CreateTopics p99 (ms)")]:
        print(f"| {name} | " + " | ".join(f"{r[key]:.1f}" for r in results.values()) + " |")
    if args.kills:
        print("| controller failover, kill to next CreateTopics (ms): min / median / max | " + " | ".join(
            f"{min(r['failover_ms']):.0f} / {statistics.median(r['failover_ms']):.0f} / {max(r['failover_ms']):.0f}"
            for r in results.values()) + " |")


if __name__ == "__main__":
    sys.exit(main())
