#!/usr/bin/env python3
"""Storage figures: idle memory and clean start-up time with many partitions, and recovery time
after kill -9 per GB of unflushed log.

    cargo build --release -p quipu-broker
    python3 benches/storage_figures.py [--partitions 1000] [--recovery-mb 1024]

Each figure comes from a broker started here on a free loopback port with a temporary data
directory. Start-up is timed from exec to the first ApiVersions answer.
"""
import argparse
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port) -> bool:
    """Whether the broker answers an ApiVersions v0 request (the port alone may accept earlier)."""
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.settimeout(5)
            s.sendall(struct.pack(">ihhih", 10, 18, 0, 1, -1))
            return len(s.recv(4)) == 4
    except OSError:
        return False


def start(binary, data, port, *args):
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "--data-dir", data, "--listen", f"127.0.0.1:{port}", *args],
                            stderr=open(f"{data}.log", "a"))
    while not answers(port):
        assert proc.poll() is None, open(f"{data}.log").read()[-2000:]
        time.sleep(0.005)
    return proc, time.perf_counter() - t0


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def many_partitions(binary, tmp, partitions):
    port, data = free_port(), f"{tmp}/many"
    proc, _ = start(binary, data, port)
    boot = f"127.0.0.1:{port}"
    admin = AdminClient({"bootstrap.servers": boot})
    topics = [NewTopic(f"t{i}", 10, 1) for i in range(partitions // 10)]
    for f in admin.create_topics(topics, request_timeout=120).values():
        f.result(120)
    p = Producer({"bootstrap.servers": boot, "linger.ms": 5})
    for t in topics:
        for part in range(10):
            for _ in range(10):
                p.produce(t.topic, value=os.urandom(1000), partition=part)
        p.poll(0)
    assert p.flush(120) == 0
    time.sleep(2)
    anon_mib = status_kib(proc.pid, "RssAnon") / 1024
    rss_mib = status_kib(proc.pid, "VmRSS") / 1024
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    proc, startup_s = start(binary, data, port)
    after_anon = status_kib(proc.pid, "RssAnon") / 1024
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    print(f"{partitions} partitions, 10 x 1 KB records each, idle: RssAnon {anon_mib:.1f} MiB, VmRSS {rss_mib:.1f} MiB")
    print(f"start-up after a clean shutdown with {partitions} partitions: {startup_s:.3f} s (RssAnon then {after_anon:.1f} MiB)")


def recovery(binary, tmp, megabytes):
    port, data = free_port(), f"{tmp}/recovery"
    proc, _ = start(binary, data, port)
    boot = f"127.0.0.1:{port}"
    p = Producer({"bootstrap.servers": boot, "linger.ms": 5, "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20})
    value = os.urandom(1024)
    for i in range(megabytes * 1024):
        while True:
            try:
                p.produce("recover", value=value)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(300) == 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Drop the page cache's dirty state from the picture as far as a user can: sync first.
    os.sync()
    proc, startup_s = start(binary, data, port)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    gb = megabytes / 1024
    print(f"recovery after kill -9 of {megabytes} MB unflushed (page cache warm): {startup_s:.2f} s, {startup_s / gb:.2f} s/GB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "quipu"))
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--recovery-mb", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        many_partitions(args.bin, tmp, args.partitions)
        recovery(args.bin, tmp, args.recovery_mb)


if __name__ == "__main__":
    main()
