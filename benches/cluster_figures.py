#!/usr/bin/env python3
"""A 3-node cluster side by side: 3 combined Quipu nodes, then 3 combined Apache Kafka 4.3.1 KRaft
nodes (quorum_figures.py starts both), one after the other on this machine, never both at once.
Both with replication factor 3, min.insync.replicas=2, broker.session.timeout.ms=2000 and
broker.heartbeat.interval.ms=300 (so that a killed broker is fenced within about 2 s); everything
else at its default.

Per system, on one cluster, each figure --runs times on a fresh topic (3 partitions unless said),
every partition with 3 in-sync replicas on every node before it starts:
- produce at acks=all, 1 KiB records, linger 5 ms: Kafka's ProducerPerformance (--records
  records, batch.size 16 KiB and 1 MiB) and the librdkafka generator (batch 1 MiB) of
  side_by_side.py, bootstrapped from all three nodes; the topic is deleted afterwards;
- end-to-end latency p50 / p99 / p99.9 at --latency-rate records/s of 1 KiB for --latency-s
  seconds, acks=all (side_by_side.py's: librdkafka producer, linger 0, to a librdkafka consumer),
  and the seconds the run took to deliver them all: more than --latency-s when the cluster fell
  behind the rate, and then the latencies grow with the length of the run;
- failover, --kills times: an idempotent librdkafka producer (acks=all, linger 0,
  message.timeout.ms 120 s, retries and metadata refreshes at most 100 ms apart) sends
  --failover-rate records/s of 1 KiB to one partition whose leader is not the active controller
  (so that no controller election is timed); that leader is killed with SIGKILL. Two figures: the
  time from the kill to the first acknowledgement after it (later than 50 ms after the killed
  process was reaped: an acknowledgement the old leader sent before it died may still be handed
  over by the client's next poll), and to the first Metadata answer (of the active controller's
  node, asked every 10 ms) naming another leader. librdkafka asks for the leader of a partition
  whose broker is down once a second (its topic scan), so the first figure comes in steps of
  about a second after the second. Then the victim is started again and must be back in every
  in-sync set before the next kill; every acknowledged record is read back at its acknowledged
  offset, once, and nothing else is there;
- follower catch-up, --catchup-runs times: a topic of 3 partitions placed by hand so that one
  node F (not the active controller) follows all three; F is stopped with SIGSTOP and, once the
  live nodes' Metadata shows it out of every in-sync set (fenced after the session timeout),
  --catchup-mb MB are written at acks=1 by the librdkafka generator (to the live nodes); then F
  is continued (SIGCONT) and the figure is the MB written over the seconds from SIGCONT until a
  live node's Metadata shows F in all three in-sync sets again (polled every 50 ms).
After every figure the topic's record count (the sum of its partitions' high watermarks) is
checked against what was acknowledged. A figure that fails, or whose records do not add up, is
reported as not measured, with the error and the nodes' warnings, errors and fencing log lines.

Prints a Markdown table: median (min–max, n) per system and the ratio Quipu/Kafka of the medians,
then every sample, marked * when another session's brokers, JVMs, builds or tests ran at its start
or end (the machine is shared; --quiet-wait-s waits for them to be gone before each sample).

Run: cargo build --release -p quipu-broker && python3 benches/cluster_figures.py [--dir D]
(about 50 minutes on 2 cores; `--figures latency --latency-rate 200` for one figure at another
rate, `--set KEY=VALUE` for an experiment with one more setting on both systems' nodes).
Smoke run (the test command runs it): --smoke (Quipu only, tiny numbers).
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).parent))
import quorum_figures as qf  # noqa: E402
import side_by_side as sbs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NODES = qf.NODES
RECORD_BYTES = sbs.RECORD_BYTES
PARTITIONS = sbs.PARTITIONS
SETTINGS = {
    "min.insync.replicas": 2,
    "default.replication.factor": 3,
    "broker.session.timeout.ms": 2000,
    "broker.heartbeat.interval.ms": 300,
}
# The log lines reported beside a figure that failed: warnings and errors, and fencing.
LOG_PATTERN = re.compile(r"\b(WARN|ERROR|FATAL)\b|panic|fencing changed|fenced=1")


def metadata_v4(port, topic, timeout_s=2.0):
    """One Metadata v4 request (a version both Quipu and Kafka 4 answer) for `topic` to the broker
    on `port`: {partition: (leader, replicas, sorted isr)}, or None when the topic has an error."""
    name = topic.encode()
    body = struct.pack(">hhih", 3, 4, 1, 7) + b"cluster" + struct.pack(">ih", 1, len(name)) + name + b"\0"
    with socket.create_connection(("127.0.0.1", port), timeout_s) as s:
        s.settimeout(timeout_s)
        s.sendall(struct.pack(">i", len(body)) + body)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise ValueError("connection closed")
            buf += chunk
    at = 4 + 4 + 4  # size, correlation id, throttle time

    def take(fmt):
        nonlocal at
        values = struct.unpack_from(fmt, buf, at)
        at += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def string():
        nonlocal at
        n = take(">h")
        if n < 0:
            return None
        at += n
        return buf[at - n:at].decode()

    for _ in range(take(">i")):  # brokers: node id, host, port, rack
        take(">i"), string(), take(">i"), string()
    string(), take(">i")  # cluster id, controller id
    partitions = None
    for _ in range(take(">i")):
        error, t, _internal = take(">h"), string(), take(">?")
        rows = {}
        for _ in range(take(">i")):
            _perror, index, leader = take(">hii")
            replicas = tuple(take(">i") for _ in range(take(">i")))
            isr = tuple(sorted(take(">i") for _ in range(take(">i"))))
            rows[index] = (leader, replicas, isr)
        if t == topic and error == 0:
            partitions = rows
    return partitions


WATCHED = {"quipu", "java", "cargo", "rustc", "cc1", "ld", "clang"}


def foreign_processes():
    """Busy-looking processes outside this benchmark's process tree (another session's brokers,
    JVMs, builds or tests): {pid: name}. The machine is shared; they make a figure noisier."""
    parents, names = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        parents[int(d.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        if name in WATCHED or "pytest" in cmdline:
            names[int(d.name)] = "pytest" if "pytest" in cmdline else name
    mine = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                grew = True
    return {pid: name for pid, name in names.items() if pid not in mine}


def wait_quiet(limit_s, quiet_s=5.0):
    """Waits, up to `limit_s`, until no other session's processes (foreign_processes) have been seen
    for `quiet_s`."""
    if limit_s <= 0:
        return
    began = last_seen = time.time()
    seen = set()
    while time.time() - began < limit_s:
        others = foreign_processes()
        if others:
            seen |= set(others.values())
            last_seen = time.time()
        elif time.time() - last_seen >= quiet_s:
            break
        time.sleep(1.0)
    if seen:
        print(f"  waited {time.time() - began:.0f} s for other sessions' {sorted(seen)} to finish"
              + ("" if time.time() - last_seen >= quiet_s else " (still running)"), file=sys.stderr, flush=True)


class Unmeasured(Exception):
    """A figure that could not be measured, and why."""


class Cluster:
    def __init__(self, name, nodes):
        self.name, self.nodes = name, nodes

    def alive(self, node):
        return node.proc is not None and node.proc.poll() is None

    def bootstrap(self, skip=()):
        return ",".join(n.bootstrap for n in self.nodes if n not in skip)

    def node(self, node_id):
        return self.nodes[node_id - 1]

    def start(self):
        qf.start_cluster(self.nodes)
        # Every node places replicas over the brokers its own image holds: all must list all.
        for n in self.nodes:
            qf.wait_brokers([n])

    def shutdown(self):
        for n in self.nodes:
            if self.alive(n):
                n.proc.send_signal(signal.SIGCONT)
        for n in self.nodes:
            if self.alive(n):
                try:
                    n.stop()
                except Exception:
                    n.proc.kill()
                    n.proc.wait()

    def view(self, node, topic):
        """{partition: (leader, replicas, sorted isr)} as `node`'s Metadata states it, or None.
        Asked of that node alone (librdkafka would ask any broker it knows, a stopped one too)."""
        try:
            return metadata_v4(node.port, topic)
        except (OSError, ValueError, struct.error):
            return None

    def agreed_view(self, topic, skip=()):
        """The topic's partitions once every live node (but `skip`) states the same and names
        live leaders; else None."""
        views = [self.view(n, topic) for n in self.nodes if self.alive(n) and n not in skip]
        if not views or views[0] is None or any(v != views[0] for v in views):
            return None
        if any(leader < 1 or not self.alive(self.node(leader)) for leader, _, _ in views[0].values()):
            return None
        return views[0]

    def wait_in_sync(self, topic, partitions, timeout_s=60):
        deadline = time.time() + timeout_s
        while True:
            v = self.agreed_view(topic)
            if v and len(v) == partitions and all(len(isr) == NODES for _, _, isr in v.values()):
                return v
            if time.time() > deadline:
                raise Unmeasured(f"{topic} never had {NODES} in-sync replicas on every partition within "
                                 f"{timeout_s} s; last seen {v or [self.view(n, topic) for n in self.nodes]}")
            time.sleep(0.1)

    def create(self, topic, partitions=PARTITIONS, assignment=None):
        # librdkafka wants the partition count beside an assignment (-1 is refused).
        new = (NewTopic(topic, len(assignment), replica_assignment=assignment) if assignment
               else NewTopic(topic, partitions, NODES))
        admin = AdminClient({"bootstrap.servers": self.bootstrap(), "log_level": 0})
        admin.create_topics([new], operation_timeout=60, request_timeout=60)[topic].result(120)
        return self.wait_in_sync(topic, partitions)

    def delete(self, topic):
        admin = AdminClient({"bootstrap.servers": self.bootstrap(), "log_level": 0})
        try:
            admin.delete_topics([topic], operation_timeout=60)[topic].result(120)
        except Exception as e:
            print(f"  {self.name}: deleting {topic}: {e}", file=sys.stderr, flush=True)

    def end_offsets(self, topic, partitions, bootstrap=None):
        """The partitions' high watermarks."""
        c = Consumer({"bootstrap.servers": bootstrap or self.bootstrap(), "group.id": "count", "log_level": 0})
        try:
            return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)]
        finally:
            c.close()

    def check_count(self, topic, expected, partitions=PARTITIONS, bootstrap=None, timeout_s=60):
        """That the topic's high watermarks add up to `expected` records, within `timeout_s` (at
        acks=1 the high watermark follows the followers)."""
        deadline = time.time() + timeout_s
        while (found := sum(self.end_offsets(topic, partitions, bootstrap))) < expected and time.time() < deadline:
            time.sleep(0.1)
        if found != expected:
            raise Unmeasured(f"{topic} holds {found} records (sum of high watermarks), {expected} were acknowledged")

    def controller(self):
        return qf.leader_id(self.bootstrap())

    def log_lines(self, since, limit=15):
        """Per node, the last `limit` lines past the offsets `since` that match LOG_PATTERN."""
        out = []
        for n, offset in zip(self.nodes, since):
            try:
                with open(n.log, "rb") as f:
                    f.seek(offset)
                    lines = f.read().decode(errors="replace").splitlines()
            except FileNotFoundError:
                continue
            hits = [l for l in lines if LOG_PATTERN.search(l)]
            if hits:
                out.append(f"  {n.log}:\n" + "\n".join("    " + l[:400] for l in hits[-limit:]))
        return "\n".join(out)

    def log_offsets(self):
        return [n.log.stat().st_size if n.log.exists() else 0 for n in self.nodes]

    def restart(self, node):
        node.start()
        qf.wait_port(node.port, 180)


def one_produce(cluster, args, topic, batch, fn, moved):
    cluster.create(topic)
    try:
        try:
            mb, _ = fn(cluster.bootstrap(), topic, args.records, "all", batch, moved, create_topic=False)
        except subprocess.CalledProcessError as e:
            raise Unmeasured(f"ProducerPerformance exited with {e.returncode}: {(e.stdout or '')[-1500:]}"
                             f"{(e.stderr or '')[-1500:]}")
        except AssertionError:
            raise Unmeasured("the librdkafka producer's flush left records undelivered")
        cluster.check_count(topic, args.records)
        return mb
    finally:
        cluster.delete(topic)


def latency_figure(cluster, args, run, moved):
    topic = f"latency-{run}"
    cluster.create(topic)
    try:
        began = time.perf_counter()
        p50, p99, p999 = sbs.latency(cluster.bootstrap(), args.latency_rate, args.latency_s, moved, topic, False)
        # Past --latency-s when the cluster fell behind the rate (the latencies then grow with the run).
        delivered_s = time.perf_counter() - began - 1.0  # the consumer's first 1 s poll before the timed loop
        cluster.check_count(topic, int(args.latency_rate * args.latency_s))
        return p50, p99, p999, delivered_s
    finally:
        cluster.delete(topic)


class SteadyProducer(threading.Thread):
    """An idempotent acks=all librdkafka producer sending `rate` records/s of 1 KiB to one
    partition; records when each acknowledgement was handed over, and every failure."""

    def __init__(self, bootstrap, topic, partition, rate):
        super().__init__(daemon=True)
        self.topic, self.partition, self.rate = topic, partition, rate
        # Retries and metadata refreshes at most 100 ms and 50 ms apart (librdkafka's defaults back
        # off to 1 s), so that the figure is the cluster's more than the client's back-off.
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 0, "message.timeout.ms": 120_000, "retry.backoff.ms": 20,
                                  "retry.backoff.max.ms": 100, "topic.metadata.refresh.fast.interval.ms": 50,
                                  "log_level": 0})
        self.acks, self.failed = [], []   # (time, seq, offset); (seq, error)
        self.stopping = threading.Event()
        self.sent = self.left = 0

    def _delivered(self, err, msg):
        seq = int(msg.value()[:12])
        if err is not None:
            self.failed.append((seq, str(err)))
        else:
            self.acks.append((time.perf_counter(), seq, msg.offset()))

    def run(self):
        pad = b"x" * (RECORD_BYTES - 12)
        start = time.perf_counter()
        while not self.stopping.is_set():
            due = start + self.sent / self.rate
            while time.perf_counter() < due:
                self.producer.poll(0)
                time.sleep(max(0.0, min(0.0005, due - time.perf_counter())))
            try:
                self.producer.produce(self.topic, value=b"%012d" % self.sent + pad, partition=self.partition,
                                      on_delivery=self._delivered)
                self.sent += 1
            except BufferError:
                self.producer.poll(0.01)
            self.producer.poll(0)
        self.left = self.producer.flush(150)

    def acked_after(self, t):
        return next((a for a in list(self.acks) if a[0] > t), None)


def read_partition(bootstrap, topic, partition, end):
    """{offset: seq} of the partition from offset 0 up to `end`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "read-back", "enable.auto.commit": False,
                  "log_level": 0})
    c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    read, seen = {}, {}
    deadline = time.time() + 120
    try:
        while (max(read) + 1 if read else 0) < end:
            if time.time() > deadline:
                raise Unmeasured(f"reading {topic}-{partition} back stopped at {len(read)} of {end} records")
            for m in c.consume(10000, timeout=1.0):
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise Unmeasured(f"reading {topic}-{partition} back: {m.error()}")
                    continue
                seq = int(m.value()[:12])
                read[m.offset()] = seq
                seen[seq] = seen.get(seq, 0) + 1
    finally:
        c.close()
    return read, seen


def failover_round(cluster, args, k):
    topic = f"failover-{k}"
    cluster.create(topic)
    controller = cluster.controller()
    view = cluster.wait_in_sync(topic, PARTITIONS)
    candidates = [p for p, (leader, _, _) in sorted(view.items()) if leader != controller]
    if not candidates:
        raise Unmeasured(f"every partition of {topic} is led by the active controller {controller}: {view}")
    partition = candidates[0]
    victim_id = view[partition][0]
    victim = cluster.node(victim_id)
    producer = SteadyProducer(cluster.bootstrap(), topic, partition, args.failover_rate)
    producer.start()
    try:
        time.sleep(args.failover_warm_s)
        if not producer.acks or producer.failed:
            raise Unmeasured(f"before the kill: {len(producer.acks)} acknowledged, failed {producer.failed[:3]}")
        survivor = cluster.node(controller)
        killed_at = time.perf_counter()
        victim.kill()
        reaped = time.perf_counter()
        elected_ms = None
        while (first := producer.acked_after(reaped + 0.05)) is None or elected_ms is None:
            if elected_ms is None:
                v = cluster.view(survivor, topic)
                if v and v[partition][0] not in (victim_id, -1):
                    elected_ms = (time.perf_counter() - killed_at) * 1000
            if time.perf_counter() - killed_at > 60:
                raise Unmeasured(f"within 60 s of killing node {victim_id} (leader of {topic}-{partition}): "
                                 f"{'an' if first else 'no'} acknowledgement, {'a' if elected_ms else 'no'} new "
                                 f"leader in the Metadata of node {controller}; failed: {producer.failed[:3]}")
            time.sleep(0.01)
        failover_ms = (first[0] - killed_at) * 1000
        time.sleep(1.0)
    finally:
        producer.stopping.set()
        producer.join(180)
    new_view = cluster.view(cluster.nodes[victim_id % NODES], topic)
    print(f"  {cluster.name} kill {k + 1}: node {victim_id} (leader of {topic}-{partition}; controller "
          f"{controller}) killed; new leader in Metadata {elected_ms:.0f} ms, next ack {failover_ms:.0f} ms later; "
          f"now {new_view and new_view.get(partition)}",
          file=sys.stderr, flush=True)
    cluster.restart(victim)
    if producer.left or producer.failed:
        raise Unmeasured(f"{producer.left} records undelivered after flush, {len(producer.failed)} failed "
                         f"(first: {producer.failed[:3]})")
    acked = {seq: offset for _, seq, offset in producer.acks}
    end = cluster.end_offsets(topic, PARTITIONS)[partition]
    read, seen = read_partition(cluster.bootstrap(), topic, partition, end)
    missing = [(s, o) for s, o in acked.items() if read.get(o) != s]
    twice = [s for s, c in seen.items() if c > 1]
    if missing or twice or len(read) != len(acked):
        raise Unmeasured(f"{topic}-{partition}: {len(acked)} acknowledged, {len(read)} read back; "
                         f"{len(missing)} acknowledged records not at their offset (first {missing[:5]}), "
                         f"{len(twice)} read more than once (first {twice[:5]})")
    try:
        cluster.wait_in_sync(topic, PARTITIONS, 120)
    except Unmeasured as e:
        raise Unmeasured(f"node {victim_id} never rejoined after its restart: {e}")
    cluster.delete(topic)
    return failover_ms, elected_ms


def catchup_round(cluster, args, k):
    controller = cluster.controller()
    follower = next(n for n in range(NODES, 0, -1) if n != controller)
    a, b = [n for n in range(1, NODES + 1) if n != follower]
    topic = f"catchup-{k}"
    view = cluster.create(topic, PARTITIONS, [[a, b, follower], [b, a, follower], [a, b, follower]])
    if any(leader == follower for leader, _, _ in view.values()):
        raise Unmeasured(f"node {follower} leads a partition of {topic} placed with it last: {view}")
    stopped = cluster.node(follower)
    live = [n for n in cluster.nodes if n is not stopped]
    stopped.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.perf_counter()
    try:
        while True:
            v = cluster.view(live[0], topic)
            if v and all(follower not in isr for _, _, isr in v.values()):
                break
            if time.perf_counter() - stopped_at > 60:
                raise Unmeasured(f"node {follower} still in an in-sync set 60 s after SIGSTOP: {v}")
            time.sleep(0.05)
        shrunk_s = time.perf_counter() - stopped_at
        records = int(args.catchup_mb * 1e6 / RECORD_BYTES)
        bootstrap = cluster.bootstrap(skip=[stopped])
        try:
            sbs.rdkafka_producer(bootstrap, topic, records, "1", 1 << 20, sbs.Moved(), create_topic=False)
        except AssertionError:
            raise Unmeasured("the acks=1 producer's flush left records undelivered with one follower stopped")
        cluster.check_count(topic, records, bootstrap=bootstrap)
        behind = records * RECORD_BYTES / 1e6
    finally:
        stopped.proc.send_signal(signal.SIGCONT)
    continued = time.perf_counter()
    while True:
        v = cluster.view(live[0], topic)
        if v and all(follower in isr for _, _, isr in v.values()):
            break
        if time.perf_counter() - continued > args.catchup_timeout_s:
            raise Unmeasured(f"node {follower} not back in every in-sync set {args.catchup_timeout_s} s after "
                             f"SIGCONT ({behind:.0f} MB behind): {v}")
        time.sleep(0.05)
    seconds = time.perf_counter() - continued
    print(f"  {cluster.name} catch-up {k + 1}: node {follower} (controller {controller}) out of the ISR "
          f"{shrunk_s:.1f} s after SIGSTOP; {behind:.0f} MB written; back in {seconds:.2f} s",
          file=sys.stderr, flush=True)
    cluster.delete(topic)
    return behind / seconds, seconds


def measure(cluster, args):
    """{figure: [(value, contended)]} (every figure, in order; empty: not measured; contended: other
    sessions' brokers, JVMs, builds or tests ran at the start or end of that sample), and the
    failures: [(figure, when and why, log lines)]."""
    produce = ["ProducerPerformance acks=all batch=16 KiB (MB/s)", "ProducerPerformance acks=all batch=1024 KiB (MB/s)",
               "librdkafka produce acks=all batch=1024 KiB (MB/s)"]
    rate = f"{args.latency_rate} records/s"
    latencies = [f"end-to-end latency {q} at {rate}, acks=all (ms)" for q in ["p50", "p99", "p99.9"]] + [
        f"end-to-end latency run: seconds to deliver {args.latency_s:g} s of records"]
    failover = ["failover: kill -9 of a partition leader to the next acknowledged produce (ms)",
                "failover: kill -9 of a partition leader to a new leader in Metadata (ms)"]
    catchup = [f"follower catch-up from {args.catchup_mb:g} MB behind, SIGCONT to back in the ISR (MB/s)",
               f"follower catch-up from {args.catchup_mb:g} MB behind (s)"]
    results = {k: [] for k in [*produce, *latencies, *failover, *catchup]}
    issues = []

    def attempt(keys, fn):
        wait_quiet(args.quiet_wait_s)
        offsets = cluster.log_offsets()
        began = time.strftime("%H:%M:%S")
        others = foreign_processes()
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported, none hidden
            why = str(e) if isinstance(e, Unmeasured) else f"{type(e).__name__}: {e}"
            issues.append((keys[0], f"{began}–{time.strftime('%H:%M:%S')}: {why}", cluster.log_lines(offsets)))
            print(f"  {cluster.name}: {keys[0]}: NOT MEASURED: {why}", file=sys.stderr, flush=True)
            for n in cluster.nodes:  # a node the figure left dead or stopped comes back for the next
                if n.proc is not None and n.proc.poll() is None:
                    n.proc.send_signal(signal.SIGCONT)
                elif n.proc is not None:
                    print(f"  {cluster.name}: node {n.node_id} exited ({n.proc.returncode}); restarting it",
                          file=sys.stderr, flush=True)
                    cluster.restart(n)
            return
        others.update(foreign_processes())
        contended = bool(others)
        values = value if isinstance(value, tuple) else (value,)
        for key, v in zip(keys, values):
            results[key].append((v, contended))
        load = open("/proc/loadavg").read().split()[0]
        print(f"  {time.strftime('%H:%M:%S')} {cluster.name}: {keys[0]}: "
              f"{', '.join(f'{v:.2f}' for v in values)}; load {load}"
              + (f"; other sessions' processes: {sorted(set(others.values()))}" if contended else ""),
              file=sys.stderr, flush=True)

    wanted = set(args.figures.split(","))
    results = {k: v for k, v in results.items()
               if (k in produce and "produce" in wanted) or (k in latencies and "latency" in wanted)
               or (k in failover and "failover" in wanted) or (k in catchup and "catchup" in wanted)}
    moved = sbs.Moved()
    for run in range(args.runs if "produce" in wanted else 0):
        for key, (batch, fn) in zip(produce, [(16 << 10, sbs.perf_producer), (1 << 20, sbs.perf_producer),
                                              (1 << 20, sbs.rdkafka_producer)]):
            topic = f"produce-{batch >> 10}-{fn.__name__}-{run}"
            attempt([key], lambda: one_produce(cluster, args, topic, batch, fn, moved))
    for run in range(args.runs if "latency" in wanted else 0):
        attempt(latencies, lambda: latency_figure(cluster, args, run, moved))
    for k in range(args.kills if "failover" in wanted else 0):
        attempt(failover, lambda: failover_round(cluster, args, k))
    for k in range(args.catchup_runs if "catchup" in wanted else 0):
        attempt(catchup, lambda: catchup_round(cluster, args, k))
    return results, issues


def fmt(samples):
    if not samples:
        return "not measured"
    values = [v for v, _ in samples]
    med = statistics.median(values)
    digits = 0 if med >= 100 else 1 if med >= 1 else 2
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f}, n={len(values)})"


def median(samples):
    return statistics.median(v for v, _ in samples)


def print_table(all_results, args):
    names = list(all_results)
    print(f"\n3 combined nodes, RF 3, min.insync.replicas=2; 1 KiB records; {args.records} records per "
          f"produce figure; median (min–max, n) of the runs\n")
    header = "| figure | " + " | ".join(names) + (" | Quipu/Kafka |" if len(names) == 2 else " |")
    print(header)
    print("|---|" + "---:|" * (header.count("|") - 2))
    for key in all_results[names[0]][0]:
        cells = [fmt(all_results[n][0].get(key, [])) for n in names]
        ratio = ""
        if len(names) == 2:
            a, b = (all_results[n][0].get(key) for n in names)
            r = median(a) / median(b) if a and b and median(b) else None
            ratio = (" - |" if r is None else f" {r:.2f} |" if r >= 0.1 else f" {r:.3f} |" if r >= 0.001
                     else " <0.001 |")
        print(f"| {key} | " + " | ".join(cells) + " |" + ratio)
    print("\nEvery sample, in order; * = other sessions' processes (brokers, JVMs, builds, tests) ran "
          "at its start or end:")
    for name, (results, _) in all_results.items():
        for key, samples in results.items():
            print(f"- {name}, {key}: " + (", ".join(f"{v:.2f}{'*' if c else ''}" for v, c in samples) or "-"))
    for name, (_, issues) in all_results.items():
        for key, why, lines in issues:
            print(f"\n{name}: NOT MEASURED once: {key}\n  {why}" + (f"\n{lines}" if lines else ""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "quipu"))
    ap.add_argument("--brokers", default="quipu,kafka")
    ap.add_argument("--figures", default="produce,latency,failover,catchup",
                    help="which figures, comma-separated: produce, latency, failover, catchup")
    ap.add_argument("--runs", type=int, default=3, help="runs of each produce and latency figure")
    ap.add_argument("--records", type=int, default=1_000_000, help="records per produce figure")
    ap.add_argument("--latency-rate", type=int, default=5000)
    ap.add_argument("--latency-s", type=float, default=20.0)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--failover-rate", type=int, default=1000, help="records/s of the producer under the kill")
    ap.add_argument("--failover-warm-s", type=float, default=2.0)
    ap.add_argument("--catchup-mb", type=float, default=1000.0)
    ap.add_argument("--catchup-runs", type=int, default=3)
    ap.add_argument("--catchup-timeout-s", type=float, default=300.0)
    ap.add_argument("--dir", help="the nodes' directories go here and stay (their logs; the data is "
                    "removed after each system unless --keep-data); by default a temporary directory")
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--quiet-wait-s", type=float, default=0.0, help="before each sample, wait up to this "
                    "long for other sessions' brokers, JVMs, builds and tests to be gone (the machine is shared)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one more setting for both systems' nodes (for experiments; the figures use none)")
    ap.add_argument("--smoke", action="store_true", help="tiny numbers, Quipu only")
    args = ap.parse_args()
    if args.smoke:
        args.brokers, args.runs, args.records, args.latency_rate, args.latency_s = "quipu", 1, 2000, 200, 1.0
        args.kills, args.failover_warm_s, args.catchup_mb, args.catchup_runs = 1, 1.0, 20.0, 1
    names = args.brokers.split(",")
    settings = {**SETTINGS, **dict(kv.split("=", 1) for kv in args.set)}
    all_results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir or tmp)
        for name in names:
            directory = root / name
            if name == "quipu":
                cluster = Cluster("Quipu", qf.quipu_cluster(args.bin, directory, settings))
            else:
                cluster = Cluster("Kafka", qf.kafka_cluster(directory, settings))
            print(f"{cluster.name}: starting 3 nodes in {directory} ({time.strftime('%Y-%m-%d %H:%M:%S')})",
                  file=sys.stderr, flush=True)
            try:
                cluster.start()
                all_results[cluster.name] = measure(cluster, args)
            finally:
                cluster.shutdown()
            if not args.keep_data:
                for n in cluster.nodes:
                    shutil.rmtree(n.dir / "data", ignore_errors=True)
        print_table(all_results, args)
        if args.dir:
            print(f"\nnode logs: {root}/*/*/{{quipu,server,kafka}}.log")


if __name__ == "__main__":
    sys.exit(main())
