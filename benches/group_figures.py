#!/usr/bin/env python3
"""Consumer-group figures, Quipu and Apache Kafka side by side in one run:

- commit throughput: one librdkafka consumer of a one-partition topic that commits synchronously
  after every poll (commits/s);
- rebalance time: six librdkafka consumers (default heartbeat.interval.ms, 3 s) share a topic;
  a seventh subscribes, and the time from its subscribe to its first assignment is taken, the
  median of --rounds joins (each into a fresh group of six).

Both brokers run with group.initial.rebalance.delay.ms=0, so only the rebalance itself is timed.
Build first: cargo build --release -p quipu-broker.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).parent))
from side_by_side import ROOT, free_port  # noqa: E402


def wait_port(port):
    import socket
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("broker did not listen")


def commit_rate(bootstrap, commits):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("commits", 1, 1)])["commits"].result(60)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(commits * 5):
        p.produce("commits", value=b"x" * 100)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "committer", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe(["commits"])
    while not c.assignment():
        c.poll(0.1)
    done = 0
    start = None
    while done < commits:
        msgs = [m for m in c.consume(5, timeout=1.0) if not m.error()]
        if not msgs:
            continue
        if start is None:
            start = time.perf_counter()
        c.commit(message=msgs[-1], asynchronous=False)
        done += 1
    rate = commits / (time.perf_counter() - start)
    c.close()
    return rate


def rebalance_seconds(bootstrap, rounds, members=6):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("rebalance", 12, 1)])["rebalance"].result(60)
    times = []
    for r in range(rounds):
        group = f"rebalance-{r}"
        stop = threading.Event()
        assigned = {}

        def member(name, started):
            c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
            c.subscribe(["rebalance"], on_assign=lambda _, ps: assigned.setdefault(name, time.perf_counter()))
            started[name] = time.perf_counter()
            while not stop.is_set():
                c.poll(0.05)
            c.close()

        started = {}
        threads = [threading.Thread(target=member, args=(i, started)) for i in range(members)]
        for t in threads:
            t.start()
        deadline = time.time() + 120
        while len(assigned) < members and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        joiner = threading.Thread(target=member, args=("joiner", started))
        joiner.start()
        while "joiner" not in assigned and time.time() < deadline + 60:
            time.sleep(0.01)
        times.append(assigned["joiner"] - started["joiner"])
        stop.set()
        for t in threads + [joiner]:
            t.join(60)
    return times


def measure(bootstrap, args):
    rates = [commit_rate(bootstrap, args.commits)]
    times = rebalance_seconds(bootstrap, args.rounds)
    return {"commits/s": statistics.median(rates), "rebalance s (median)": statistics.median(times),
            "rebalance s (min)": min(times), "rebalance s (max)": max(times)}


def run_quipu(args, tmp):
    port = free_port()
    proc = subprocess.Popen([args.bin, "--data-dir", f"{tmp}/quipu", "--listen", f"127.0.0.1:{port}",
                             "--set", "group.initial.rebalance.delay.ms=0"], stderr=open(f"{tmp}/quipu.log", "w"))
    try:
        wait_port(port)
        return measure(f"127.0.0.1:{port}", args)
    finally:
        proc.terminate()
        proc.wait(60)


def run_kafka(args, tmp):
    from kafka_reference import KafkaReference
    k = KafkaReference(free_port(), Path(tmp) / "kafka").start()
    try:
        return measure(k.bootstrap, args)
    finally:
        k.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "quipu"))
    ap.add_argument("--commits", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--brokers", default="quipu,kafka")
    args = ap.parse_args()
    results = {}
    for name in args.brokers.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = (run_quipu if name == "quipu" else run_kafka)(args, tmp)
    names = list(results)
    print(f"commits={args.commits} rounds={args.rounds}; librdkafka consumers, default heartbeat 3 s")
    print(f"{'':24}" + "".join(f"{n:>12}" for n in names) + ("   quipu/kafka" if len(names) == 2 else ""))
    for key in results[names[0]]:
        row = f"{key:24}" + "".join(f"{results[n][key]:12.2f}" for n in names)
        if len(names) == 2 and results[names[1]][key]:
            row += f"{results[names[0]][key] / results[names[1]][key]:14.2f}"
        print(row)


if __name__ == "__main__":
    sys.exit(main())
