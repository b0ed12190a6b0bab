#!/usr/bin/env python3
"""The probes of issue 11 ("Hardening"), run again for figures, on demand (not in the test
command): each starts its own broker and prints what it measured.

- concurrent producers: librdkafka producers on one partition from separate connections for
  --seconds; delivery failures, acknowledged records, and a read-back of every acknowledged one;
- hostile input: hostile array and tagged-field counts, stalled frames, and a flood of bad
  requests, while a bystander connects afresh and asks ApiVersions every 10 ms; the bystander's
  worst and p99 round trip, the broker's peak RSS, and the log lines the flood left;
- kill -9: an acks=all producer and a kill -9 at a random moment, --kills times; acknowledged
  records missing after each restart (must be 0).

The full-disk and file-descriptor cases are integration tests (broker/tests/hardening.rs,
topic_changes.rs), as are the other items.

Usage: cargo build --release -p quipu-broker && python3 benches/hardening_probes.py
"""
import argparse
import os
import random
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, data):
        self.binary, self.data, self.port = binary, data, free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = Path(data).parent / "quipu.log"
        self.proc = None

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen([self.binary, "--data-dir", str(self.data), "--listen", self.bootstrap],
                                     stdout=log, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                api_versions(self.port)
                return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("broker did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def peak_rss_mib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return -1


def api_versions(port, timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        req = struct.pack(">hhih", 18, 0, 1, -1)
        s.sendall(struct.pack(">i", len(req)) + req)
        n = struct.unpack(">i", s.recv(4))[0]
        got = 0
        while got < n:
            chunk = s.recv(n - got)
            if not chunk:
                raise OSError("closed")
            got += len(chunk)


def create(bootstrap, topic, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result()


def count_records(bootstrap, topic, partition=0):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe-read", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, 0)])
    values, idle = [], time.time()
    while time.time() - idle < 3:
        m = c.poll(0.5)
        if m is not None and not m.error():
            values.append(m.value())
            idle = time.time()
    c.close()
    return values


def concurrent_producers(binary, seconds, producers=3):
    with tempfile.TemporaryDirectory() as d:
        b = Broker(binary, Path(d) / "data")
        b.start()
        create(b.bootstrap, "shared")
        acked, failed = [0], [0]
        lock = threading.Lock()

        def produce(n):
            p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 1, "acks": "all"})

            def done(err, _msg):
                with lock:
                    if err:
                        failed[0] += 1
                    else:
                        acked[0] += 1
            end, i = time.time() + seconds, 0
            while time.time() < end:
                try:
                    p.produce("shared", value=b"%d-%d" % (n, i), partition=0, on_delivery=done)
                    i += 1
                except BufferError:
                    p.poll(0.01)
                p.poll(0)
            p.flush(30)
        threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = count_records(b.bootstrap, "shared")
        panics = b.log_path.read_text().count("panicked")
        b.stop()
        print(f"concurrent producers: {producers} librdkafka producers on one partition for {seconds} s: "
              f"{acked[0]} acknowledged, {failed[0]} failed deliveries, {len(stored)} read back, "
              f"{len(set(stored))} distinct, {panics} panics in the log")


def frame(api, version, header_tags, body):
    f = struct.pack(">hhih", api, version, 7, -1) + header_tags + body
    return struct.pack(">i", len(f)) + f


def varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def hostile_frames():
    tags = lambda n: varint(n) + b"\x64\x00" * n  # noqa: E731
    fetch = b"\xff\xff\xff\xff" + bytes([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]) + struct.pack(">i", 2**31 - 1)
    join = (b"\x00\x01g\x00\x00\x27\x10\x00\x00\x27\x10\x00\x00\xff\xff\x00\x08consumer"
            + struct.pack(">i", 1_000_001) + bytes(6 * 1_000_001))
    return [
        frame(3, 12, b"\x00", b"\xff\xff\xff\xff\x0f\x01\x01\x00"),
        frame(1, 4, b"", fetch),
        frame(11, 5, b"", join),
        frame(18, 3, tags(10_001), b"\x01\x01\x00"),
        frame(3, 12, b"\x00", b"\x01\x01\x01" + tags(10_001)),
        frame(999, 0, b"", b""),  # unknown api key
    ]


def send_and_wait_close(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(data)
            while s.recv(65536):
                pass
        except OSError:
            pass


def hostile_input(binary, rounds):
    with tempfile.TemporaryDirectory() as d:
        b = Broker(binary, Path(d) / "data")
        b.start()
        rss_before = b.peak_rss_mib()
        log_before = b.log_path.stat().st_size
        rtts, stop = [], threading.Event()

        def bystander():
            while not stop.is_set():
                t = time.perf_counter()
                api_versions(b.port)
                rtts.append((time.perf_counter() - t) * 1000)
                time.sleep(0.01)
        by = threading.Thread(target=bystander)
        by.start()
        frames = hostile_frames()
        for _ in range(rounds):
            for f in frames:
                send_and_wait_close(b.port, f)
        # Stalled frames: each claims 100 MiB and sends 1 MiB of it, then waits.
        stalled = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", b.port))
            s.sendall(struct.pack(">i", 100 << 20) + struct.pack(">hhih", 0, 9, 1, -1) + bytes(1 << 20))
            stalled.append(s)
        time.sleep(2)
        for s in stalled:
            s.close()
        stop.set()
        by.join()
        rtts.sort()
        p99 = rtts[int(len(rtts) * 0.99)] if rtts else -1
        log_grew = b.log_path.stat().st_size - log_before
        print(f"hostile input: {rounds} rounds of {len(frames)} hostile requests and 20 stalled 100 MiB frames; "
              f"bystander {len(rtts)} round trips, worst {rtts[-1]:.1f} ms, p99 {p99:.1f} ms; "
              f"broker peak RSS {rss_before:.0f} -> {b.peak_rss_mib():.0f} MiB; log grew {log_grew / 1024:.0f} KiB; "
              f"broker alive: {b.proc.poll() is None}")
        b.stop()


def kill_nine(binary, kills):
    with tempfile.TemporaryDirectory() as d:
        b = Broker(binary, Path(d) / "data")
        b.start()
        create(b.bootstrap, "durable")
        acked = set()
        missing_total = 0
        for k in range(kills):
            p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 2,
                          "message.timeout.ms": 3000, "retries": 0})

            def done(err, msg):
                if not err:
                    acked.add(msg.value())
            killer = threading.Timer(random.uniform(0.5, 2.0), b.kill)
            killer.start()
            end, i = time.time() + 2.5, 0
            while time.time() < end:
                try:
                    p.produce("durable", value=b"%d-%d" % (k, i), partition=0, on_delivery=done)
                    i += 1
                except BufferError:
                    pass
                p.poll(0)
            killer.join()
            p.flush(5)
            b.start()
            stored = set(count_records(b.bootstrap, "durable"))
            missing = len(acked - stored)
            missing_total += missing
        b.stop()
        print(f"kill -9: {kills} kills while an acks=all producer wrote; {len(acked)} acknowledged, "
              f"{missing_total} acknowledged records missing after the restarts")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "quipu"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--kills", type=int, default=5)
    args = ap.parse_args()
    concurrent_producers(args.bin, args.seconds)
    hostile_input(args.bin, args.rounds)
    kill_nine(args.bin, args.kills)


if __name__ == "__main__":
    main()
