"""Faults on a small Quipu cluster (combined nodes, replication factor 3, min.insync.replicas=2),
driven by real clients and Apache Kafka's own tools:

- a consumer group (librdkafka, then a Java member too) keeps its committed offsets when the
  broker of its group coordinator is killed with kill -9: the coordinator moves with the
  leadership of the group's `__consumer_offsets` partition and serves the same offsets, no record
  is skipped, the group ends committed at the end of every partition, and the killed broker, once
  restarted, does not serve the offsets it held when it died;
- a rolling restart (SIGTERM, controlled shutdown, then start, one broker at a time: out of every
  in-sync set while down, back in all of them before the next) under a steady idempotent
  acks=all load loses and duplicates nothing; the produce latency during the roll is printed on a
  line starting `ROLLING:`;
- `kafka-reassign-partitions` (ReassignPartitionsCommand, kafka-tools 4.3.1) moves a partition from
  brokers 1,2,3 to 2,3,4 (a fourth, broker-only node): --verify says it is complete, it is in sync
  there, readable from its new leader, and gone from broker 1's data directory.

Short session and lag times (broker.session.timeout.ms=2000, replica.lag.time.max.ms=3000) so
that failures are seen within seconds; every wait is bounded and every process is stopped in
`finally`. Run with -s to see the figures each test prints.
"""
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import (JAVA_CLASSPATH, JAVA_DIR, REPLICATION_SETTINGS, TOPIC_COMMAND, Pending, bootstraps,
                     describe_partitions, make_nodes, shutdown, start_cluster, tool, wait_until)
from conftest import Broker

REASSIGN_COMMAND = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
# A hard bound per test (conftest's SIGALRM); each test is meant to take well under it.
TEST_LIMIT_S = 180

SETTINGS = [*REPLICATION_SETTINGS, "group.initial.rebalance.delay.ms=0"]


# ---------------------------------------------------------------------------------------------
# Helpers


def wait_full_isr_by_kafka_topics(node, topic, partitions, replicas=3, timeout_s=60):
    """Until kafka-topics --describe (through `node`) shows every partition led and with all
    `replicas` in sync; returns the rows."""
    def check():
        try:
            rows, out = describe_partitions(node.bootstrap, topic)
        except (AssertionError, subprocess.TimeoutExpired) as e:
            return Pending(str(e)[-300:])
        full = len(rows) == partitions and all(
            len(isr) == replicas and leader not in ("-1", "none") for leader, _, isr in rows.values())
        return rows if full else Pending(rows)
    return wait_until(f"{topic} fully in sync per kafka-topics", check, timeout_s, interval_s=0.5)


def log_lines(node: Broker, pattern: str, limit=40):
    try:
        lines = [l for l in node.log_text().splitlines() if re.search(pattern, l)]
    except OSError:
        return []
    return lines[-limit:]


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, replication_factor=3)])[topic].result(30)


def start_with_topic(nodes, topic, partitions):
    """Starts the cluster and creates `topic` (replication factor 3) on it, fully in sync per
    kafka-topics; returns the bootstrap list of every node."""
    start_cluster(nodes)
    boot = bootstraps(nodes)
    create_topic(boot, topic, partitions)
    wait_full_isr_by_kafka_topics(nodes[0], topic, partitions)
    return boot


def produce_acked(bootstrap, topic, count, partitions, prefix):
    """`count` records, round-robin over the partitions, with acks=all; returns {partition: [offsets]}."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "message.timeout.ms": 60000})
    acked, failed = {}, []

    def done(err, msg):
        if err is not None:
            failed.append(err)
        else:
            acked.setdefault(msg.partition(), []).append(msg.offset())
    for i in range(count):
        while True:
            try:
                p.produce(topic, key=f"k{i}".encode(), value=f"{prefix}-{i}".encode(), partition=i % partitions,
                          on_delivery=done)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(90)
    assert left == 0 and not failed, f"{left} records unflushed, failures: {failed[:5]}"
    assert sum(len(v) for v in acked.values()) == count
    return acked


def end_offsets(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets-probe", "enable.auto.commit": False})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


# librdkafka's AdminClient has crashed this process in these tests: an assertion
# (rd_kafka_enq_once_del_source_return: eonce->refcnt > 0) in describe_consumer_groups while the
# coordinator's broker was down, and a segfault in list_consumer_group_offsets
# (rd_kafka_handle_OffsetFetch -> rd_kafka_cgrp_op on an AdminClient, which has no consumer
# group, when an OffsetFetch answer asks it to look the coordinator up again). A crash here would
# leave the brokers running, so the AdminClient runs in a child process.
_ADMIN_SCRIPT = r"""
import json, sys
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient
bootstrap, what, group = sys.argv[1:4]
admin = AdminClient({"bootstrap.servers": bootstrap})
if what == "offsets":
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                               request_timeout=10)[group].result(timeout=15)
    print(json.dumps([[tp.topic, tp.partition, tp.offset, str(tp.error) if tp.error else None]
                      for tp in result.topic_partitions]))
else:
    d = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    print(json.dumps({"coordinator": d.coordinator.id, "state": str(d.state),
                      "members": len(d.members)}))
"""


def admin_call(bootstrap, what, group):
    """confluent-kafka's AdminClient in a child process: list_consumer_group_offsets ("offsets")
    or describe_consumer_groups ("describe"); the decoded answer, or a Pending with the failure."""
    try:
        out = subprocess.run([sys.executable, "-c", _ADMIN_SCRIPT, bootstrap, what, group],
                             capture_output=True, text=True, timeout=45)
    except subprocess.TimeoutExpired:
        return Pending("the AdminClient did not answer within 45 s")
    if out.returncode != 0:
        tail = [l for l in out.stderr.splitlines() if not l.startswith("%")][-5:]
        return Pending(f"AdminClient exited with {out.returncode}: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def committed_offsets(bootstrap, group, topic):
    """The group's committed offsets as AdminClient list_consumer_group_offsets states them,
    {partition: offset}, or a Pending with the error."""
    answer = admin_call(bootstrap, "offsets", group)
    if isinstance(answer, Pending):
        return answer
    errors = [e for _, _, _, e in answer if e]
    if errors:
        return Pending(errors)
    return {p: o for t, p, o, _ in answer if t == topic}


def find_coordinator(node: Broker, group):
    """FindCoordinator (v1) for `group`, sent to `node` on a plain socket: the coordinator's node
    id, or a Pending with the error."""
    body = struct.pack(">h", len(group)) + group.encode() + struct.pack(">b", 0)
    client = b"faults"
    header = struct.pack(">hhih", 10, 1, 7, len(client)) + client
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
            s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
            size = struct.unpack(">i", _read_exactly(s, 4))[0]
            resp = _read_exactly(s, size)
    except OSError as e:
        return Pending(repr(e))
    correlation, _throttle, error = struct.unpack(">iih", resp[:10])
    assert correlation == 7
    if error != 0:
        return Pending(f"FindCoordinator error {error}")
    rest = resp[10:]
    msg_len = struct.unpack(">h", rest[:2])[0]
    rest = rest[2 + max(msg_len, 0):]
    return struct.unpack(">i", rest[:4])[0]


def _read_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def offset_fetch(node: Broker, group, topic, partitions):
    """OffsetFetch (v2) for `group` sent to `node` itself on a plain socket (no coordinator
    look-up): {partition: committed offset} (-1 where none), or a Pending with the error
    (NOT_COORDINATOR is 16)."""
    body = struct.pack(">h", len(group)) + group.encode()
    body += struct.pack(">ih", 1, len(topic)) + topic.encode() + struct.pack(">i", len(partitions))
    body += b"".join(struct.pack(">i", p) for p in partitions)
    client = b"faults"
    header = struct.pack(">hhih", 9, 2, 11, len(client)) + client
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
            s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
            resp = _read_exactly(s, struct.unpack(">i", _read_exactly(s, 4))[0])
    except OSError as e:
        return Pending(repr(e))
    assert struct.unpack(">i", resp[:4])[0] == 11
    i = 4
    offsets, errors = {}, {}
    (topics,) = struct.unpack(">i", resp[i:i + 4])
    i += 4
    for _ in range(topics):
        (name_len,) = struct.unpack(">h", resp[i:i + 2])
        i += 2 + name_len
        (count,) = struct.unpack(">i", resp[i:i + 4])
        i += 4
        for _ in range(count):
            p, offset = struct.unpack(">iq", resp[i:i + 12])
            i += 12
            (meta_len,) = struct.unpack(">h", resp[i:i + 2])
            i += 2 + max(meta_len, 0)
            (error,) = struct.unpack(">h", resp[i:i + 2])
            i += 2
            offsets[p] = offset
            if error:
                errors[p] = error
    (group_error,) = struct.unpack(">h", resp[i:i + 2])
    if group_error or errors:
        return Pending(f"OffsetFetch error {group_error}, partitions {errors}")
    return offsets


def committed_by_consumer(bootstrap, group, topic, partitions):
    """The group's committed offsets as a consumer that does not join it reads them (OffsetFetch),
    {partition: offset} (-1001 where none), or a Pending with the error."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    except KafkaException as e:
        return Pending(repr(e))
    finally:
        c.close()
    errors = [tp.error for tp in tps if tp.error is not None]
    if errors:
        return Pending(errors)
    return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}


def gaps(consumed_offsets, end):
    """The offsets in 0..end that are missing from `consumed_offsets` (a set), at most 20."""
    missing = [o for o in range(end) if o not in consumed_offsets]
    return missing[:20], len(missing)


# ---------------------------------------------------------------------------------------------
# 1. The group coordinator's broker is killed


class JavaMember:
    """Kafka's Java consumer as a member of a group (quipu.Interop group): it commits after every
    poll; its stdout lines are collected on a thread."""

    def __init__(self, bootstrap, topic, group, stop_file: Path):
        self.stop_file = stop_file
        self.records = []   # (partition, offset)
        self.commits = []   # {partition: offset}
        self.failed_commits = 0
        self.assignments = []
        self.lines = []
        self.proc = subprocess.Popen(["java", "-cp", JAVA_CLASSPATH, "quipu.Interop", "group", bootstrap, topic,
                                      group, str(stop_file)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.err_lines = []
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.err_reader.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if line.startswith("R "):
                _, p, o = line.split()
                self.records.append((int(p), int(o)))
            elif line.startswith("C"):
                self.commits.append({int(p): int(o) for p, o in (x.split(":") for x in line.split()[1:])})
            elif line == "F":
                self.failed_commits += 1
            elif line.startswith("A "):
                self.assignments.append([int(x) for x in line[2:].split(",") if x])

    def _read_err(self):
        for line in self.proc.stderr:
            self.err_lines.append(line.rstrip("\n"))

    def stop(self):
        if self.proc.poll() is None:
            self.stop_file.touch()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        self.err_reader.join(timeout=5)


def test_consumer_group_keeps_its_offsets_when_the_coordinators_broker_is_killed(tmp_path):
    assert (JAVA_DIR / "lib").exists(), "tests/interop/java is not built: tests/run.sh builds it"
    topic, group, partitions = "faulted-group", "g", 3
    first_wave, second_wave = 3000, 1500
    nodes = make_nodes(tmp_path, SETTINGS)
    consumer = None
    java = None
    started = time.time()
    try:
        boot = start_with_topic(nodes, topic, partitions)
        produce_acked(boot, topic, first_wave, partitions, "first")

        consumed = {p: set() for p in range(partitions)}   # by the librdkafka member
        events = []

        def on_assign(c, parts):
            events.append(("assign", time.time(), sorted(tp.partition for tp in parts)))

        def on_revoke(c, parts):
            events.append(("revoke", time.time(), sorted(tp.partition for tp in parts)))

        consumer = Consumer({"bootstrap.servers": boot, "group.id": group, "enable.auto.commit": False,
                             "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
                             "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 100})
        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        commit_log = {"ok": 0, "retried": [], "dropped": []}
        last_committed = {}
        retriable_commit_errors = (KafkaError._WAIT_COORD, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
                                   KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                                   KafkaError.NOT_COORDINATOR, KafkaError.REQUEST_TIMED_OUT)
        # A commit refused because the group rebalanced: its records come again from the
        # committed offsets, to the member that gets the partition.
        rebalance_commit_errors = (KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
                                   KafkaError.REBALANCE_IN_PROGRESS, KafkaError._ASSIGNMENT_LOST, KafkaError._STATE)

        def consume_and_commit(max_messages=50, commit_deadline_s=45):
            """One batch, then a synchronous commit of the offsets after it; retriable failures
            are retried (bounded). Returns the number of records in the batch."""
            msgs = consumer.consume(num_messages=max_messages, timeout=0.5)
            nxt = {}
            for m in msgs:
                if m.error():
                    assert m.error().retriable() or m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    continue
                consumed[m.partition()].add(m.offset())
                nxt[m.partition()] = max(nxt.get(m.partition(), 0), m.offset() + 1)
            if not nxt:
                return 0
            offsets = [TopicPartition(topic, p, o) for p, o in sorted(nxt.items())]
            deadline = time.time() + commit_deadline_s
            while True:
                try:
                    result = consumer.commit(offsets=offsets, asynchronous=False)
                    bad = [tp for tp in result if tp.error is not None]
                    if bad:
                        raise KafkaException(bad[0].error)
                    commit_log["ok"] += 1
                    last_committed.update(nxt)
                    return len(msgs)
                except KafkaException as e:
                    err = e.args[0]
                    if err.retriable() or err.code() in retriable_commit_errors:
                        commit_log["retried"].append(err.name())
                        assert time.time() < deadline, \
                            f"a commit kept failing for {commit_deadline_s} s: {commit_log['retried'][-10:]}"
                        time.sleep(0.2)
                        continue
                    if err.code() in rebalance_commit_errors:
                        commit_log["dropped"].append(err.name())
                        return len(msgs)
                    raise

        # About half the records, each batch committed.
        deadline = time.time() + 60
        while sum(len(s) for s in consumed.values()) < first_wave // 2:
            assert time.time() < deadline, f"consumed only {[len(s) for s in consumed.values()]}"
            consume_and_commit()
        before_kill = dict(last_committed)
        assert committed_offsets(boot, group, topic) == before_kill

        described = admin_call(boot, "describe", group)
        assert not isinstance(described, Pending), described
        coordinator = described["coordinator"]
        assert all(find_coordinator(n, group) == coordinator for n in nodes), \
            [find_coordinator(n, group) for n in nodes]
        victim = nodes[coordinator - 1]
        survivors = [n for n in nodes if n is not victim]
        print(f"coordinator of {group!r} is node {coordinator} ({described}); committed {before_kill}; killing it")
        victim.stop(signal.SIGKILL)
        killed_at = time.time()

        # The group's offsets survive: the new coordinator (elsewhere) serves the same commits.
        def new_coordinator():
            answers = [find_coordinator(n, group) for n in survivors]
            ids = [a for a in answers if not isinstance(a, Pending)]
            if len(ids) == len(survivors) and len(set(ids)) == 1 and ids[0] != coordinator:
                return ids[0]
            return Pending(answers)
        moved_to = wait_until("a new coordinator for the group", new_coordinator, 30, interval_s=0.2)
        after_kill = wait_until("the group's offsets from the new coordinator",
                                lambda: offset_fetch(nodes[moved_to - 1], group, topic, range(partitions)),
                                30, interval_s=0.2)
        failover_s = time.time() - killed_at
        print(f"coordinator moved to node {moved_to} after {failover_s:.1f} s; committed there {after_kill}")
        assert {p: o for p, o in after_kill.items() if o >= 0} == before_kill, \
            f"the group's committed offsets changed when its coordinator moved: {before_kill} -> {after_kill}"

        # Keep consuming and committing through the move, until commits succeed after it.
        ok_before = commit_log["ok"]
        deadline = time.time() + 45
        while commit_log["ok"] == ok_before or sum(len(s) for s in consumed.values()) < first_wave * 3 // 4:
            assert time.time() < deadline, \
                f"no commit after the kill: {commit_log}, consumed {[len(s) for s in consumed.values()]}"
            consume_and_commit()

        # A Java member joins the group (its first offsets come from the new coordinator).
        java = JavaMember(boot, topic, group, tmp_path / "java-stop")
        deadline = time.time() + 45
        while not java.assignments:
            assert java.proc.poll() is None, f"the Java member exited: {java.err_lines[-20:]}"
            assert time.time() < deadline, f"the Java member never got an assignment: {java.lines[-10:]}"
            consume_and_commit()

        # The killed broker comes back. Until it has caught up it must not serve the group's
        # offsets as they were when it died: any OffsetFetch it answers (rather than refusing with
        # NOT_COORDINATOR) is at least what the real coordinator held a moment before.
        victim.start()
        restarted_at = time.time()
        stale = []
        probes = 0
        while time.time() - restarted_at < 3:
            current = offset_fetch(nodes[moved_to - 1], group, topic, range(partitions))
            answer = offset_fetch(victim, group, topic, range(partitions))
            probes += 1
            if not isinstance(current, Pending) and not isinstance(answer, Pending) \
                    and any(answer.get(p, -1) < o for p, o in current.items()):
                stale.append((round(time.time() - restarted_at, 2), answer, current,
                              find_coordinator(victim, group)))
            time.sleep(0.05)
        print(f"node {coordinator} restarted {restarted_at - killed_at:.1f} s after the kill; {probes} probes, "
              f"{len(stale)} stale OffsetFetch answers from it; Java member assigned {java.assignments[-1]}")

        # A second wave, consumed by both members.
        acked = produce_acked(boot, topic, second_wave, partitions, "second")
        ends = end_offsets(boot, topic, partitions)
        assert sum(ends.values()) == first_wave + second_wave, ends
        assert {p: max(o) + 1 for p, o in acked.items()} == ends, (acked.keys(), ends)

        # Both members consume until the group is committed at the end of every partition.
        deadline = time.time() + 60
        last_check = 0
        final = None
        while True:
            assert java.proc.poll() is None, f"the Java member exited: {java.err_lines[-20:]}"
            consume_and_commit()
            if time.time() - last_check > 1:
                last_check = time.time()
                final = committed_by_consumer(boot, group, topic, partitions)
                if final == ends:
                    break
            assert time.time() < deadline, \
                f"the group never committed the end offsets {ends}: last {final!r}; librdkafka commits " \
                f"{commit_log['ok']} ok, last retried {commit_log['retried'][-5:]}, dropped " \
                f"{commit_log['dropped'][-5:]}; Java commits {len(java.commits)}, failed {java.failed_commits}"
        java.stop()
        consumer.close()
        consumer = None

        union = {p: set(consumed[p]) for p in range(partitions)}
        for p, o in java.records:
            union[p].add(o)
        for p in range(partitions):
            missing, n_missing = gaps(union[p], ends[p])
            assert n_missing == 0, f"partition {p}: {n_missing} offsets never consumed, first {missing}"
            assert max(union[p]) == ends[p] - 1
        assert java.records, "the Java member consumed nothing"
        assert wait_until("the group's offsets from the AdminClient",
                          lambda: committed_offsets(boot, group, topic), 30, interval_s=1) == ends
        total = sum(len(s) for s in consumed.values()) + len(java.records)
        print(f"GROUP: coordinator {coordinator} -> {moved_to} in {failover_s:.1f} s; consumed "
              f"{sum(len(s) for s in consumed.values())} distinct by librdkafka, {len(java.records)} by Java "
              f"({total - sum(ends.values())} by both); librdkafka commits ok {commit_log['ok']}, "
              f"retried {len(commit_log['retried'])} ({sorted(set(commit_log['retried']))}), dropped "
              f"{len(commit_log['dropped'])} ({sorted(set(commit_log['dropped']))}); Java commits "
              f"{len(java.commits)}, failed {java.failed_commits}; rebalances {len(events)}; "
              f"{time.time() - started:.1f} s")
        assert not stale, (
            f"the restarted node {coordinator} answered OffsetFetch with the group's offsets as they were "
            f"before it was killed, while node {moved_to} coordinates the group: (seconds after start, its "
            f"answer, the coordinator's, its FindCoordinator answer) {stale[:5]}")
    finally:
        if java is not None:
            java.stop()
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                pass
        shutdown(nodes)


# ---------------------------------------------------------------------------------------------
# 2. A rolling restart under a steady load


class SteadyProducer:
    """An idempotent acks=all librdkafka producer sending `rate` records a second on a thread;
    each record's value is its sequence number; delivery reports give its latency."""

    def __init__(self, bootstrap, topic, rate):
        self.topic = topic
        self.interval = 1.0 / rate
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 5, "message.timeout.ms": 90000})
        self.sent_at = {}
        self.acked = {}      # seq -> (partition, offset, latency_s, delivered_at)
        self.failed = {}     # seq -> KafkaError
        self.fatal = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.seq = 0

    def start(self):
        self.thread.start()

    def _report(self, err, msg):
        seq = int(msg.value())
        now = time.time()
        if err is not None:
            self.failed[seq] = err
        else:
            self.acked[seq] = (msg.partition(), msg.offset(), now - self.sent_at[seq], now)

    def _run(self):
        next_t = time.time()
        while not self.stopping.is_set():
            now = time.time()
            if now >= next_t:
                seq = self.seq
                self.sent_at[seq] = time.time()
                try:
                    self.producer.produce(self.topic, value=str(seq).encode(), on_delivery=self._report)
                    self.seq += 1
                except BufferError:
                    del self.sent_at[seq]
                except KafkaException as e:
                    self.fatal = e
                    return
                next_t += self.interval
            self.producer.poll(min(max(next_t - time.time(), 0), 0.05))
        self.producer.flush(100)

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=110)


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


def read_partition(bootstrap, topic, partition, end):
    """{offset: value} of records 0..end of one partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "read-back", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 100})
    got = {}
    try:
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = time.time() + 60
        while len(got) < end and time.time() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    continue
                got[m.offset()] = m.value()
    finally:
        c.close()
    return got


def test_rolling_restart_under_load_loses_nothing(tmp_path):
    topic, partitions, rate = "rolled", 3, 200
    nodes = make_nodes(tmp_path, SETTINGS)
    producer = None
    started = time.time()
    try:
        boot = start_with_topic(nodes, topic, partitions)

        producer = SteadyProducer(boot, topic, rate)
        producer.start()
        time.sleep(3)
        assert producer.acked, "nothing acknowledged before the roll"
        roll_start = time.time()
        steps = []
        for node in nodes:
            t0 = time.time()
            node.stop(signal.SIGTERM)       # controlled shutdown: leadership moves away first
            stopped_s = time.time() - t0
            others = [n for n in nodes if n is not node]
            node_id = nodes.index(node) + 1

            def left_isr():
                try:
                    rows, _ = describe_partitions(others[0].bootstrap, topic)
                except (AssertionError, subprocess.TimeoutExpired) as e:
                    return Pending(str(e)[-300:])
                out = len(rows) == partitions and all(
                    node_id not in isr and leader != str(node_id) for leader, _, isr in rows.values())
                return rows if out else Pending(rows)
            # While it is down it leads nothing and is out of every in-sync set: so the wait for
            # the full set below waits for it to catch up.
            wait_until(f"node {node_id} out of every ISR while it is down", left_isr, 20, interval_s=0.5)
            out_s = time.time() - t0
            node.start()
            wait_full_isr_by_kafka_topics(others[0], topic, partitions, timeout_s=60)
            steps.append((stopped_s, out_s, time.time() - t0))
            assert producer.fatal is None, producer.fatal
        roll_end = time.time()
        time.sleep(2)
        producer.stop()
        assert not producer.thread.is_alive(), "the producer did not finish flushing"
        assert producer.fatal is None, f"the producer raised {producer.fatal}"

        sent = producer.seq
        non_retriable = {s: e for s, e in producer.failed.items() if not e.retriable()}
        assert not non_retriable, \
            f"{len(non_retriable)} deliveries failed with a non-retriable error: {list(non_retriable.items())[:5]}"
        assert len(producer.acked) + len(producer.failed) == sent, \
            f"{sent} sent, {len(producer.acked)} acknowledged, {len(producer.failed)} failed: reports missing"

        ends = end_offsets(boot, topic, partitions)
        seen = {}   # seq -> [(partition, offset)]
        for p in range(partitions):
            got = read_partition(boot, topic, p, ends[p])
            assert len(got) == ends[p], f"partition {p}: read {len(got)} of {ends[p]} records"
            for o, v in got.items():
                seen.setdefault(int(v), []).append((p, o))
        duplicated = {s: at for s, at in seen.items() if len(at) > 1}
        assert not duplicated, f"{len(duplicated)} records written more than once: {list(duplicated.items())[:5]}"
        lost = [s for s in producer.acked if s not in seen]
        assert not lost, f"{len(lost)} acknowledged records are not in the log: first {lost[:10]}"
        misplaced = [(s, producer.acked[s][:2], seen[s]) for s in producer.acked if seen[s] != [producer.acked[s][:2]]]
        assert not misplaced, f"records not where their acknowledgement said: {misplaced[:5]}"

        during = sorted(lat for seq, (_, _, lat, _) in producer.acked.items()
                        if roll_start <= producer.sent_at[seq] <= roll_end)
        lat_ms = [x * 1000 for x in during]
        line = (f"ROLLING: {len(nodes)} brokers restarted in {roll_end - roll_start:.1f} s "
                f"(seconds from SIGTERM: exited {', '.join(f'{s:.1f}' for s, _, _ in steps)}; seen out of "
                f"every ISR {', '.join(f'{o:.1f}' for _, o, _ in steps)}; back in all "
                f"{', '.join(f'{t:.1f}' for _, _, t in steps)}); {sent} records at {rate}/s, "
                f"{len(producer.acked)} acknowledged, {len(producer.failed)} failed; produce latency during "
                f"the roll over {len(lat_ms)} records: p50 {percentile(lat_ms, 0.5):.1f} ms, "
                f"p99 {percentile(lat_ms, 0.99):.1f} ms, max {max(lat_ms):.1f} ms")
        print(line)
        assert len(lat_ms) > rate * (roll_end - roll_start) * 0.5, "the producer fell well behind its rate"
        print(f"rolling test took {time.time() - started:.1f} s")
    finally:
        if producer is not None and producer.thread.is_alive():
            producer.stopping.set()
            producer.thread.join(timeout=30)
        shutdown(nodes)


# ---------------------------------------------------------------------------------------------
# 3. kafka-reassign-partitions onto a fourth, broker-only node


def partition_dirs(node: Broker, topic, partition):
    """The entries of `node`'s data directory that belong to the partition (its log directory, or
    one renamed for deletion)."""
    name = f"{topic}-{partition}"
    if not node.data_dir.exists():
        return []
    return sorted(p.name for p in node.data_dir.iterdir() if p.name == name or p.name.startswith(name + "."))


def test_kafka_reassign_partitions_moves_a_partition_to_a_fourth_broker(tmp_path):
    topic, count = "moving", 2000
    nodes = make_nodes(tmp_path, SETTINGS, voters=3, observers=1)
    started = time.time()
    try:
        start_cluster(nodes)
        boot = bootstraps(nodes)
        tool(TOPIC_COMMAND, "--bootstrap-server", nodes[1].bootstrap, "--create", "--topic", topic,
             "--replica-assignment", "1:2:3")
        rows = wait_full_isr_by_kafka_topics(nodes[0], topic, 1)
        assert rows[0][1] == "1,2,3", rows
        acked = produce_acked(boot, topic, count, 1, "moved")
        assert acked[0] == list(range(count))
        assert partition_dirs(nodes[0], topic, 0) == [f"{topic}-0"]
        assert partition_dirs(nodes[3], topic, 0) == []

        plan = tmp_path / "reassignment.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": topic, "partition": 0, "replicas": [2, 3, 4]}]}))
        executed = tool(REASSIGN_COMMAND, "--bootstrap-server", nodes[2].bootstrap,
                        "--reassignment-json-file", str(plan), "--execute")
        print(executed)
        assert "Successfully started partition reassignment" in executed, executed

        verified = None
        deadline = time.time() + 60
        while True:
            verified = tool(REASSIGN_COMMAND, "--bootstrap-server", nodes[0].bootstrap,
                            "--reassignment-json-file", str(plan), "--verify")
            if f"Reassignment of partition {topic}-0 is completed" in verified \
                    or f"Reassignment of partition {topic}-0 is complete" in verified:
                break
            assert "is still in progress" in verified, verified
            assert time.time() < deadline, f"the reassignment is not complete after 60 s: {verified}"
            time.sleep(1)
        moved_s = time.time() - started
        print(verified)

        rows, out = describe_partitions(nodes[3].bootstrap, topic)
        leader, replicas, isr = rows[0]
        assert replicas == "2,3,4", out
        assert isr == (2, 3, 4), out
        assert leader in ("2", "3", "4"), out

        # Every record, read from the new leader alone.
        leader_node = nodes[int(leader) - 1]
        got = read_partition(leader_node.bootstrap, topic, 0, count)
        assert sorted(got) == list(range(count)), f"read {len(got)} of {count} from node {leader}"
        assert [got[o] for o in range(count)] == [f"moved-{i}".encode() for i in range(count)]
        assert end_offsets(leader_node.bootstrap, topic, 1) == {0: count}

        # Broker 1 is no longer a replica: its log of the partition is gone; node 4 has one.
        wait_until("node 1's directory of the partition removed",
                   lambda: partition_dirs(nodes[0], topic, 0) == [] or Pending(
                       (partition_dirs(nodes[0], topic, 0), log_lines(nodes[0], topic, 10))), 30)
        assert partition_dirs(nodes[3], topic, 0) == [f"{topic}-0"]
        print(f"REASSIGN: {topic}-0 moved 1,2,3 -> 2,3,4 (leader {leader}) in {moved_s:.1f} s; "
              f"test {time.time() - started:.1f} s")
    finally:
        shutdown(nodes)
