#!/usr/bin/env python3
"""Produce and consume throughput of 1 KiB records through librdkafka, and the broker's peak RSS.

Starts target/release/quipu (see --bin) on a free loopback port with a
temporary data directory, produces --records records of --size bytes to one topic with
confluent-kafka (acks=1, linger 5 ms, batch 1 MiB, no compression), then consumes them all from
offset 0, and prints MB/s for both and the broker's VmHWM (peak RSS) from /proc.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workload(bootstrap, args):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("bench", num_partitions=args.partitions, replication_factor=1)])["bench"].result(60)
    payload = os.urandom(args.size)
    p = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 5, "batch.size": 1 << 20,
                  "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1 << 20})
    start = time.perf_counter()
    for i in range(args.records):
        while True:
            try:
                p.produce("bench", value=payload, partition=i % args.partitions)
                break
            except BufferError:
                p.poll(0.001)
    assert p.flush(300) == 0
    produce_s = time.perf_counter() - start
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 50 << 20, "max.partition.fetch.bytes": 10 << 20})
    c.assign([TopicPartition("bench", part, 0) for part in range(args.partitions)])
    got = 0
    start = time.perf_counter()
    while got < args.records:
        for m in c.consume(10000, timeout=1.0):
            if not m.error():
                got += 1
    consume_s = time.perf_counter() - start
    c.close()
    mb = args.records * args.size / 1e6
    return {"produce MB/s": mb / produce_s, "produce records/s": args.records / produce_s,
            "consume MB/s": mb / consume_s, "consume records/s": args.records / consume_s}


def moved_gb(args):
    """GB into and out of the broker: the Python produce and consume, and the perf tool's produce."""
    return (3 if args.perf_tool else 2) * args.records * args.size / 1e9


def producer_performance(bootstrap, args):
    """Kafka's own ProducerPerformance (kafka-tools) as the load: MB/s and ack latency percentiles.
    Idempotence is off (Quipu has no InitProducerId yet); acks=1, linger 5 ms, batch 1 MiB."""
    sys.path.insert(0, str(Path(__file__).parent))
    from kafka_reference import ensure_jars
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("perf", num_partitions=args.partitions, replication_factor=1)])["perf"].result(60)
    out = subprocess.run(["java", "-cp", ensure_jars(), "org.apache.kafka.tools.ProducerPerformance",
                          "--topic", "perf", "--num-records", str(args.records), "--record-size", str(args.size),
                          "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}", "acks=1",
                          "linger.ms=5", f"batch.size={1 << 20}", "enable.idempotence=false"],
                         capture_output=True, text=True, timeout=900, check=True).stdout
    # "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency, P50 ms 50th, ..."
    final = [line for line in out.splitlines() if "records sent" in line][-1]
    parts = [p.strip() for p in final.replace("(", ",").replace(")", "").split(",")]
    value = lambda i: float(parts[i].split()[0])
    return {"perf-tool MB/s": value(2), "perf-tool p50 ms": value(5), "perf-tool p99 ms": value(7),
            "perf-tool p99.9 ms": value(8)}


def run_quipu(args, tmp):
    port = free_port()
    proc = subprocess.Popen([args.bin, "--data-dir", f"{tmp}/quipu", "--listen", f"127.0.0.1:{port}"],
                            stderr=open(f"{tmp}/quipu.log", "w"))
    try:
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        result = workload(f"127.0.0.1:{port}", args)
        if args.perf_tool:
            result.update(producer_performance(f"127.0.0.1:{port}", args))
        result["peak RSS MiB"] = status_kib(proc.pid, "VmHWM") / 1024
        result["RssAnon MiB"] = status_kib(proc.pid, "RssAnon") / 1024
        result["CPU s per GB"] = cpu_seconds(proc.pid) / (moved_gb(args))
        return result
    finally:
        proc.terminate()
        proc.wait(60)


def run_kafka(args, tmp):
    sys.path.insert(0, str(Path(__file__).parent))
    from kafka_reference import KafkaReference
    k = KafkaReference(free_port(), Path(tmp) / "kafka").start()
    try:
        result = workload(k.bootstrap, args)
        if args.perf_tool:
            result.update(producer_performance(k.bootstrap, args))
        result["peak RSS MiB"] = status_kib(k.proc.pid, "VmHWM") / 1024
        result["RssAnon MiB"] = status_kib(k.proc.pid, "RssAnon") / 1024
        result["CPU s per GB"] = cpu_seconds(k.proc.pid) / (moved_gb(args))
        return result
    finally:
        k.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "quipu"))
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--brokers", default="quipu,kafka")
    ap.add_argument("--perf-tool", action="store_true", help="also load with Kafka's ProducerPerformance")
    args = ap.parse_args()
    results = {}
    for name in args.brokers.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = (run_quipu if name == "quipu" else run_kafka)(args, tmp)
    print(f"records={args.records} size={args.size}B partitions={args.partitions} (peak RSS counts mapped file pages)")
    names = list(results)
    print(f"{'':22}" + "".join(f"{n:>14}" for n in names) + ("   quipu/kafka" if len(names) == 2 else ""))
    for key in results[names[0]]:
        row = f"{key:22}" + "".join(f"{results[n][key]:14.1f}" for n in names)
        if len(names) == 2 and results[names[1]][key]:
            row += f"{results[names[0]][key] / results[names[1]][key]:14.2f}"
        print(row)


if __name__ == "__main__":
    sys.exit(main())
