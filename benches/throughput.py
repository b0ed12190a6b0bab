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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "quipu"))
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=3)
    args = ap.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        broker = subprocess.Popen([args.bin, "--data-dir", f"{tmp}/data", "--listen", f"127.0.0.1:{port}"],
                                  stderr=open(f"{tmp}/quipu.log", "w"))
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            bootstrap = f"127.0.0.1:{port}"
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic("bench", num_partitions=args.partitions, replication_factor=1)])["bench"].result(30)
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
            assert p.flush(120) == 0
            produce_s = time.perf_counter() - start

            c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                          "fetch.max.bytes": 50 << 20, "max.partition.fetch.bytes": 10 << 20})
            c.assign([TopicPartition("bench", p, 0) for p in range(args.partitions)])
            got = 0
            start = time.perf_counter()
            while got < args.records:
                for m in c.consume(10000, timeout=1.0):
                    if not m.error():
                        got += 1
            consume_s = time.perf_counter() - start
            c.close()
            mb = args.records * args.size / 1e6
            rss_mib = status_kib(broker.pid, "VmHWM") / 1024
            anon_mib = status_kib(broker.pid, "RssAnon") / 1024
            print(f"records={args.records} size={args.size}B partitions={args.partitions}")
            print(f"produce: {mb / produce_s:8.1f} MB/s  {args.records / produce_s:10.0f} records/s")
            print(f"consume: {mb / consume_s:8.1f} MB/s  {args.records / consume_s:10.0f} records/s")
            print(f"broker peak RSS (VmHWM): {rss_mib:.1f} MiB, RssAnon at end: {anon_mib:.1f} MiB "
                  f"(file-backed pages of the mapped segments count in RSS)")
        finally:
            broker.terminate()
            broker.wait(30)


if __name__ == "__main__":
    sys.exit(main())
