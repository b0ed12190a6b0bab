#!/usr/bin/env python3
"""Quipu and Apache Kafka side by side: one command, same machine, same settings, one broker after
the other, each figure the median of --runs runs (with min and max), printed as a Markdown table
with the ratio Quipu/Kafka and the hardware limit.

Per run and broker (a fresh broker and data directory each time):
- produce throughput of 1 KiB records to a 3-partition topic, linger 5 ms, with Kafka's own
  ProducerPerformance at acks=1 and acks=all, batch.size 16 KiB and 1 MiB, and with a
  librdkafka generator (confluent-kafka) at acks=1 and acks=all, batch 1 MiB;
- end-to-end latency p50 / p99 / p99.9 at a fixed moderate rate (--latency-rate records/s of
  1 KiB for --latency-s seconds): librdkafka producer send to librdkafka consumer receipt;
- replay: a --backlog-gb backlog consumed from offset 0 by librdkafka and by Kafka's own
  ConsumerPerformance (in a consumer group);
- the broker's peak RSS and CPU seconds per GB moved over the whole run;
- start-up time with --startup-partitions partitions holding data, after a clean shutdown.
Once per run, the limits: loopback TCP bandwidth (a plain socket copy between two processes) and
page-cache write bandwidth (1 MiB writes to a file, no fsync).

Full run: cargo build --release -p quipu-broker && python3 benches/side_by_side.py
Smoke run (the test command runs it): --smoke
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).parent))
from kafka_reference import KafkaReference, ensure_jars  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECORD_BYTES = 1024
PARTITIONS = 3


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


class Moved:
    """Bytes into and out of the broker, for CPU seconds per GB."""

    def __init__(self):
        self.bytes = 0


def create(bootstrap, topic, partitions=PARTITIONS):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(120)


def settle():
    """Writes back what earlier figures left dirty in the page cache, so that a produce figure
    does not pay for the one before it (the second figure of a run used to, on both brokers)."""
    os.sync()
    time.sleep(1)


def perf_producer(bootstrap, topic, records, acks, batch_bytes, moved, create_topic=True):
    if create_topic:
        create(bootstrap, topic)
    settle()
    out = subprocess.run(["java", "-cp", ensure_jars(), "org.apache.kafka.tools.ProducerPerformance",
                          "--topic", topic, "--num-records", str(records), "--record-size", str(RECORD_BYTES),
                          "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}", f"acks={acks}",
                          "linger.ms=5", f"batch.size={batch_bytes}"],
                         capture_output=True, text=True, timeout=1800, check=True).stdout
    # "N records sent, R records/sec (M MB/sec), A ms avg latency, ..."
    final = [line for line in out.splitlines() if "records sent" in line][-1]
    parts = [p.strip() for p in final.replace("(", ",").replace(")", "").split(",")]
    moved.bytes += records * RECORD_BYTES
    return float(parts[2].split()[0]), float(parts[1].split()[0])


def rdkafka_producer(bootstrap, topic, records, acks, batch_bytes, moved, create_topic=True):
    if create_topic:
        create(bootstrap, topic)
    settle()
    payload = os.urandom(RECORD_BYTES)
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5, "batch.size": batch_bytes,
                  "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1 << 20})
    start = time.perf_counter()
    for i in range(records):
        while True:
            try:
                p.produce(topic, value=payload, partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.001)
    assert p.flush(600) == 0
    elapsed = time.perf_counter() - start
    moved.bytes += records * RECORD_BYTES
    return records * RECORD_BYTES / 1e6 / elapsed, records / elapsed


def rdkafka_replay(bootstrap, topic, records, moved):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "replay", "enable.auto.commit": False,
                  "fetch.max.bytes": 50 << 20, "max.partition.fetch.bytes": 10 << 20})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = 0
    start = time.perf_counter()
    while got < records:
        got += sum(1 for m in c.consume(10000, timeout=1.0) if not m.error())
    elapsed = time.perf_counter() - start
    c.close()
    moved.bytes += records * RECORD_BYTES
    return records * RECORD_BYTES / 1e6 / elapsed


def perf_consumer(bootstrap, topic, records, moved):
    out = subprocess.run(["java", "-cp", ensure_jars(), "org.apache.kafka.tools.ConsumerPerformance",
                          "--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(records),
                          "--group", f"perf-{time.time_ns()}", "--timeout", "60000"],
                         capture_output=True, text=True, timeout=1800, check=True).stdout
    # header, then: start, end, MB, MB.sec, nMsg, nMsg.sec, rebalance.ms, fetch.ms, fetch.MB.sec, ...
    row = [line for line in out.splitlines() if line and line[0].isdigit()][-1].split(",")
    moved.bytes += records * RECORD_BYTES
    return float(row[8].strip())  # fetch MB/s: the rebalance before the first fetch excluded


def latency(bootstrap, rate, seconds, moved, topic="latency", create_topic=True):
    """Percentiles (ms) of producer send to consumer receipt at a fixed rate."""
    if create_topic:
        create(bootstrap, topic)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "latency", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    c.consume(1, timeout=1.0)  # connected and fetching
    samples = []
    total = int(rate * seconds)
    done = threading.Event()

    def receive():
        # poll() hands over each record as it arrives (consume(n) would wait for n records).
        while len(samples) < total and not done.is_set():
            m = c.poll(0.1)
            if m is not None and not m.error():
                samples.append(time.perf_counter_ns() - int.from_bytes(m.value()[:8], "big"))

    t = threading.Thread(target=receive)
    t.start()
    pad = os.urandom(RECORD_BYTES - 8)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        while time.perf_counter() < due:
            p.poll(0)
            time.sleep(max(0.0, min(0.0005, due - time.perf_counter())))
        p.produce(topic, value=time.perf_counter_ns().to_bytes(8, "big") + pad, partition=i % PARTITIONS)
    p.flush(60)
    t.join(60)
    done.set()
    c.close()
    moved.bytes += 2 * total * RECORD_BYTES
    samples.sort()
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] / 1e6
    return pick(0.50), pick(0.99), pick(0.999)


def answers_metadata(bootstrap, topic, partitions):
    try:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "startup", "socket.timeout.ms": 1000})
        try:
            md = c.list_topics(topic, timeout=0.5)
            t = md.topics.get(topic)
            return t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader >= 0 for p in t.partitions.values())
        finally:
            c.close()
    except Exception:
        return False


def fill_partitions(bootstrap, partitions):
    create(bootstrap, "startup", partitions)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for part in range(partitions):
        p.produce("startup", value=b"x" * 100, partition=part)
    assert p.flush(120) == 0


class QuipuBroker:
    name = "quipu"

    def __init__(self, binary, tmp):
        self.binary, self.dir, self.port = binary, Path(tmp) / "quipu", free_port()
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        log = open(self.dir.parent / "quipu.log", "ab")
        self.proc = subprocess.Popen([self.binary, "--data-dir", str(self.dir), "--listen", self.bootstrap,
                                      "--set", "group.initial.rebalance.delay.ms=0"], stdout=log, stderr=log)
        for _ in range(1200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("quipu did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(120)


class KafkaBroker:
    name = "kafka"

    def __init__(self, tmp):
        self.ref = KafkaReference(free_port(), Path(tmp) / "kafka")

    @property
    def bootstrap(self):
        return self.ref.bootstrap

    @property
    def proc(self):
        return self.ref.proc

    def start(self):
        self.ref.start()
        return self

    def stop(self):
        self.ref.stop()


def one_run(broker, args):
    r = {}
    moved = Moved()
    broker.start()
    try:
        pid = broker.proc.pid
        b = broker.bootstrap
        for acks in ["1", "all"]:
            for batch in [16 << 10, 1 << 20]:
                mb, recs = perf_producer(b, f"perf-{acks}-{batch}", args.records, acks, batch, moved)
                label = f"ProducerPerformance acks={acks} batch={batch >> 10} KiB"
                r[f"{label} (MB/s)"], r[f"{label} (records/s)"] = mb, recs
        if args.produce_only:
            return r
        for acks in ["1", "all"]:
            mb, recs = rdkafka_producer(b, f"rd-{acks}", args.records, acks, 1 << 20, moved)
            r[f"librdkafka produce acks={acks} batch=1024 KiB (MB/s)"] = mb
            r[f"librdkafka produce acks={acks} batch=1024 KiB (records/s)"] = recs
        p50, p99, p999 = latency(b, args.latency_rate, args.latency_s, moved)
        r["end-to-end latency p50 (ms)"], r["end-to-end latency p99 (ms)"] = p50, p99
        r["end-to-end latency p99.9 (ms)"] = p999
        backlog = int(args.backlog_gb * 1e9 / RECORD_BYTES)
        rdkafka_producer(b, "backlog", backlog, "1", 1 << 20, moved)
        r[f"replay {args.backlog_gb:g} GB from offset 0, librdkafka (MB/s)"] = rdkafka_replay(b, "backlog", backlog, moved)
        r[f"replay {args.backlog_gb:g} GB from offset 0, ConsumerPerformance (MB/s)"] = perf_consumer(
            b, "backlog", backlog, moved)
        fill_partitions(b, args.startup_partitions)
        r["peak RSS (MiB)"] = status_kib(pid, "VmHWM") / 1024
        r["RssAnon at the end (MiB)"] = status_kib(pid, "RssAnon") / 1024
        r["CPU seconds per GB moved"] = cpu_seconds(pid) / (moved.bytes / 1e9)
    finally:
        broker.stop()
    if args.produce_only:
        return r
    started = time.perf_counter()
    broker.start()
    try:
        while not answers_metadata(broker.bootstrap, "startup", args.startup_partitions):
            assert time.perf_counter() - started < 300, "no answer within 300 s"
            time.sleep(0.05)
        r[f"start-up, {args.startup_partitions} partitions with data (s)"] = time.perf_counter() - started
    finally:
        broker.stop()
    return r


def loopback_mb_s(gigabytes):
    receiver = subprocess.Popen([sys.executable, "-c", """
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
buf = bytearray(1 << 20)
while c.recv_into(buf):
    pass
"""], stdout=subprocess.PIPE, text=True)
    port = int(receiver.stdout.readline())
    chunk = memoryview(bytearray(1 << 20))
    total = int(gigabytes * 1e9)
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.perf_counter()
        sent = 0
        while sent < total:
            s.sendall(chunk)
            sent += len(chunk)
    s.close()
    receiver.wait(60)
    return sent / 1e6 / (time.perf_counter() - start)


def page_cache_mb_s(directory, gigabytes):
    path = Path(directory) / "page-cache-probe"
    chunk = os.urandom(1 << 20)
    total = int(gigabytes * 1e9)
    start = time.perf_counter()
    with open(path, "wb") as f:
        written = 0
        while written < total:
            f.write(chunk)
            written += len(chunk)
    elapsed = time.perf_counter() - start
    path.unlink()
    return written / 1e6 / elapsed


def fmt(values):
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.1f}"
    return f"{med:.1f} ({min(values):.1f}–{max(values):.1f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "quipu"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--records", type=int, default=500_000, help="records per produce figure")
    ap.add_argument("--backlog-gb", type=float, default=2.0)
    ap.add_argument("--latency-rate", type=int, default=2000)
    ap.add_argument("--latency-s", type=float, default=10.0)
    ap.add_argument("--startup-partitions", type=int, default=1000)
    ap.add_argument("--limit-gb", type=float, default=2.0)
    ap.add_argument("--brokers", default="quipu,kafka")
    ap.add_argument("--smoke", action="store_true", help="tiny numbers, Quipu only, one run")
    ap.add_argument("--produce-only", action="store_true",
                    help="only the ProducerPerformance figures (acks 1 and all, 16 KiB and 1 MiB batches)")
    args = ap.parse_args()
    if args.smoke:
        args.runs, args.records, args.backlog_gb, args.latency_rate = 1, 2000, 0.004, 200
        args.latency_s, args.startup_partitions, args.limit_gb, args.brokers = 1.0, 10, 0.01, "quipu"
    names = args.brokers.split(",")
    results = {n: {} for n in names}
    limits = {"loopback TCP (MB/s)": [], "page-cache write (MB/s)": []}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            limits["loopback TCP (MB/s)"].append(loopback_mb_s(args.limit_gb))
            limits["page-cache write (MB/s)"].append(page_cache_mb_s(tmp, args.limit_gb))
        # Alternate the order so neither broker always runs on a warmer or colder machine.
        for name in names if run % 2 == 0 else list(reversed(names)):
            with tempfile.TemporaryDirectory() as tmp:
                broker = QuipuBroker(args.bin, tmp) if name == "quipu" else KafkaBroker(tmp)
                for k, v in one_run(broker, args).items():
                    results[name].setdefault(k, []).append(v)
            print(f"run {run + 1}/{args.runs} {name} done", file=sys.stderr, flush=True)
    tcp = statistics.median(limits["loopback TCP (MB/s)"])
    disk = statistics.median(limits["page-cache write (MB/s)"])
    print(f"1 KiB records, {PARTITIONS} partitions, {args.records} records per produce figure, "
          f"median (min–max) of {args.runs} run(s)\n")
    header = "| figure | " + " | ".join(names) + (" | Quipu/Kafka" if len(names) == 2 else "") + " | limit |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for key in results[names[0]]:
        cells = [fmt(results[n][key]) for n in names]
        ratio = ""
        if len(names) == 2:
            a, b = statistics.median(results[names[0]][key]), statistics.median(results[names[1]][key])
            ratio = f" | {a / b:.2f}" if b else " | "
        limit = ""
        if "produce" in key.lower() or "producer" in key.lower():
            limit = f"{min(tcp, disk):.0f} MB/s" if "MB/s" in key else ""
        elif "replay" in key:
            limit = f"{tcp:.0f} MB/s"
        print(f"| {key} | " + " | ".join(cells) + ratio + f" | {limit} |")
    for key, values in limits.items():
        print(f"| limit: {key} | " + " | ".join(fmt(values) for _ in names) + (" | " if len(names) == 2 else "")
              + " | |")


if __name__ == "__main__":
    sys.exit(main())
