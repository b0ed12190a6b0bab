"""Consumer groups with real clients: three librdkafka (confluent-kafka) consumers, three Java
consumers, a franz-go consumer and one of our Rust client share a 12-partition topic in one group. While they consume, a seventh member joins, one
librdkafka consumer leaves cleanly and one Java consumer is killed with SIGKILL (its session
expires). Every member commits after every poll. In the end every record was consumed, no record
lies in the committed ranges of two members, and the committed offsets reach the end of every
partition. After a broker restart the group resumes from its committed offsets. A kafka-python
group consumer and Kafka's own kafka-consumer-groups tool are tested too.
"""
import signal
import subprocess
from pathlib import Path

import pytest
import threading
import time
from collections import Counter

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker
import test_java_client as jc

PARTITIONS = 12
RECORDS = 24_000
TOPIC = "grouped"
GROUP = "interop-group"


class Member:
    """Events of one member: ("A", partitions), ("R", partition, offset), ("C",), ("F",)."""

    def __init__(self, name):
        self.name = name
        self.events = []
        self.lock = threading.Lock()

    def add(self, *event):
        with self.lock:
            self.events.append(event)

    def assigned(self):
        with self.lock:
            return [e[1] for e in self.events if e[0] == "A"]

    def owned(self):
        """The partitions owned now: assignments add, revocations remove (eager revokes all,
        cooperative only what moves)."""
        owned = set()
        with self.lock:
            for e in self.events:
                if e[0] == "A":
                    owned |= set(e[1])
                elif e[0] == "V":
                    owned -= set(e[1])
        return owned

    def committed_and_consumed(self):
        """(records this member consumed and then committed while it still held their partition,
        every record it consumed). A commit of position P for a partition covers the records of it
        consumed before P since the partition was last revoked; a failed commit covers nothing."""
        committed, consumed = [], []
        pending = {}
        with self.lock:
            for e in self.events:
                if e[0] == "R":
                    pending.setdefault(e[1], []).append(e[2])
                    consumed.append((e[1], e[2]))
                elif e[0] == "C":
                    for p, position in e[1].items():
                        offsets = pending.get(p, [])
                        committed += [(p, o) for o in offsets if o < position]
                        pending[p] = [o for o in offsets if o >= position]
                elif e[0] == "V":
                    for p in e[1]:
                        pending[p] = []
        return committed, consumed


class RdkafkaMember(Member):
    """A confluent-kafka consumer in a thread, committing each batch's offsets explicitly."""

    def __init__(self, name, bootstrap, strategy="eager"):
        super().__init__(name)
        self.stop = threading.Event()
        conf = {"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                "partition.assignment.strategy": "cooperative-sticky" if strategy == "cooperative" else "range"}
        self.consumer = Consumer(conf)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started_at = None

    def start(self):
        self.started_at = time.time()
        self.consumer.subscribe([TOPIC], on_assign=lambda c, ps: self.add("A", [p.partition for p in ps]),
                                on_revoke=lambda c, ps: self.add("V", [p.partition for p in ps]),
                                on_lost=lambda c, ps: self.add("V", [p.partition for p in ps]))
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            msgs = self.consumer.consume(50, timeout=0.2)
            batch = [m for m in msgs if not m.error()]
            if not batch:
                continue
            last = {}
            for m in batch:
                self.add("R", m.partition(), m.offset())
                last[m.partition()] = m.offset()
            try:
                result = self.consumer.commit(offsets=[TopicPartition(TOPIC, p, o + 1) for p, o in last.items()],
                                              asynchronous=False)
                self.add("C", {tp.partition: tp.offset for tp in result if tp.error is None})
            except Exception:
                self.add("F")
            time.sleep(0.02)
        self.consumer.close()

    def leave(self):
        self.stop.set()
        self.thread.join(30)


class JavaMember(Member):
    def __init__(self, name, bootstrap, stop_file, strategy="eager"):
        super().__init__(name)
        self.stop_file = stop_file
        self.proc = subprocess.Popen(["java", "-cp", jc.CLASSPATH, "quipu.Interop", "group", bootstrap, TOPIC,
                                      GROUP, str(stop_file), strategy], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            parts = line.split()
            if not parts:
                continue
            if parts[0] in ("A", "V"):
                self.add(parts[0], [int(p) for p in parts[1].split(",") if p] if len(parts) > 1 else [])
            elif parts[0] == "R":
                self.add("R", int(parts[1]), int(parts[2]))
            elif parts[0] == "C":
                self.add("C", {int(p): int(o) for p, o in (x.split(":") for x in parts[1:] if x)})
            elif parts[0] == "F":
                self.add("F")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def finish(self):
        self.proc.wait(60)
        self.reader.join(10)


RUST_MEMBER = Path(__file__).resolve().parents[2] / "target" / "debug" / "examples" / "interop_group_member"
FRANZ_DRIVER = Path(__file__).resolve().parent / "go" / "franz-interop"


class RustMember(JavaMember):
    """Our client as a group member (client/examples/interop_group_member.rs): the same events,
    printed the same way as the Java member's."""

    def __init__(self, name, bootstrap, stop_file, strategy="eager"):
        Member.__init__(self, name)
        self.stop_file = stop_file
        self.proc = subprocess.Popen([str(RUST_MEMBER), bootstrap, TOPIC, GROUP, str(stop_file), strategy],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()


class FranzMember(JavaMember):
    """A franz-go consumer (tests/interop/go): the same events as the Java member's."""

    def __init__(self, name, bootstrap, stop_file, strategy="eager"):
        Member.__init__(self, name)
        self.stop_file = stop_file
        self.proc = subprocess.Popen([str(FRANZ_DRIVER), "group", bootstrap, TOPIC, GROUP, str(stop_file), strategy],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()


def wait_for(predicate, timeout_s, what):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def committed_offsets(bootstrap):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset for tp in
                c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=20)}
    finally:
        c.close()


def produce(bootstrap, start, count, rate_per_s=None):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    began = time.time()
    for i in range(start, start + count):
        p.produce(TOPIC, key=str(i).encode(), value=str(i).encode(), partition=i % PARTITIONS)
        if i % 500 == 0:
            p.poll(0)
            if rate_per_s:
                ahead = (i - start) / rate_per_s - (time.time() - began)
                if ahead > 0:
                    time.sleep(ahead)
    assert p.flush(60) == 0


@pytest.mark.parametrize("strategy", ["eager", "cooperative"])
def test_a_mixed_group_shares_partitions_survives_churn_and_resumes_after_restart(tmp_path, strategy):
    assert (jc.JAVA_DIR / "lib").exists(), "tests/interop/java is not built: tests/run.sh builds it"
    assert RUST_MEMBER.exists(), "the Rust member is not built: tests/run.sh builds it"
    assert FRANZ_DRIVER.exists(), "the franz-go driver is not built: tests/run.sh builds it"
    broker = Broker(tmp_path / "data", ["--set", "group.initial.rebalance.delay.ms=500"])
    broker.start()
    members = []
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(30)
        produce(broker.bootstrap, 0, RECORDS // 4)

        rd = [RdkafkaMember(f"rd{i}", broker.bootstrap, strategy).start() for i in range(3)]
        java = [JavaMember(f"java{i}", broker.bootstrap, tmp_path / f"stop-java{i}", strategy) for i in range(3)]
        rust = RustMember("rust", broker.bootstrap, tmp_path / "stop-rust", strategy)
        franz = FranzMember("franz", broker.bootstrap, tmp_path / "stop-franz", strategy)
        members = rd + java + [rust, franz]

        # The eight split the twelve partitions: every partition owned once in the latest assignments.
        def split():
            owned = [m.owned() for m in members]
            return all(owned) and sorted(p for o in owned for p in o) == list(range(PARTITIONS))
        wait_for(split, 90, "eight members to split twelve partitions")

        # The rest of the records arrive while the membership changes.
        feeder = threading.Thread(target=lambda: produce(broker.bootstrap, RECORDS // 4, RECORDS - RECORDS // 4,
                                                         rate_per_s=1500))
        feeder.start()
        # A ninth joins; the rebalance for a group of eight measured to its first assignment.
        joiner = RdkafkaMember("rd-join", broker.bootstrap, strategy).start()
        members.append(joiner)
        wait_for(lambda: joiner.owned(), 60, "the joining member's assignment")
        rebalance_s = time.time() - joiner.started_at
        print(f"{strategy}: rebalance of a group of 8 when one joins: {rebalance_s:.2f} s")
        time.sleep(2)
        rd[2].leave()                       # clean leave
        time.sleep(2)
        java[0].kill()                      # killed: its session (6 s) expires
        feeder.join(120)

        # Everything gets committed.
        wait_for(lambda: sum(committed_offsets(broker.bootstrap).values()) == RECORDS, 180,
                 "all offsets to be committed")
        for m in rd[:2] + [joiner]:
            m.leave()
        for j in java[1:] + [rust, franz]:
            j.stop_file.write_text("stop")
        for j in java[1:] + [rust, franz]:
            j.finish()

        committed = Counter()
        consumed = set()
        for m in members:
            c, seen = m.committed_and_consumed()
            print(f"{m.name}: {len(seen)} consumed, {len(c)} committed, "
                  f"{sum(1 for e in m.events if e[0] == 'F')} failed commits, {len(m.assigned())} assignments")
            committed.update(c)
            consumed.update(seen)
        assert rust.committed_and_consumed()[0], "the Rust member committed records of its own"
        assert franz.committed_and_consumed()[0], "the franz-go member committed records of its own"
        every = {(i % PARTITIONS, i // PARTITIONS) for i in range(RECORDS)}
        assert consumed == every, f"{len(every - consumed)} records never consumed"
        twice = [r for r, n in committed.items() if n > 1]
        assert not twice, f"{len(twice)} records committed by two members, e.g. {twice[:5]}"
        # The killed member may have had a commit acknowledged and been killed before it could say
        # so: only its own records after its last reported commit may lack a committer.
        killed_committed, killed_seen = java[0].committed_and_consumed()
        unreported = set(killed_seen) - set(killed_committed)
        missing = every - set(committed)
        assert missing <= unreported, f"{len(missing - unreported)} records committed by nobody"
        offsets = committed_offsets(broker.bootstrap)
        assert offsets == {p: RECORDS // PARTITIONS for p in range(PARTITIONS)}
        assert "member session expired" in broker.log_text(), "the killed member left by session expiry"

        # After a restart the group resumes from its committed offsets: only new records come.
        broker.restart()
        assert committed_offsets(broker.bootstrap) == offsets
        produce(broker.bootstrap, RECORDS, 1200)
        again = RdkafkaMember("rd-after", broker.bootstrap, strategy).start()
        members.append(again)
        wait_for(lambda: len(again.committed_and_consumed()[1]) >= 1200, 60, "the new records")
        time.sleep(1)
        again.leave()
        seen = again.committed_and_consumed()[1]
        assert len(seen) == 1200 and min(o for _, o in seen) == RECORDS // PARTITIONS, seen[:5]
    finally:
        for m in members:
            if isinstance(m, RdkafkaMember) and m.thread.is_alive():
                m.leave()
            if isinstance(m, JavaMember) and m.proc.poll() is None:  # and the Rust and franz-go ones
                m.kill()
        broker.stop()


def test_kafka_python_group_consumer_commits_and_resumes(broker):
    from kafka import KafkaConsumer, KafkaProducer
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("kp-group", 3, 1)])["kp-group"].result(30)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(300):
        p.send("kp-group", value=str(i).encode(), partition=i % 3)
    p.flush()
    p.close()

    def consume(expected):
        c = KafkaConsumer("kp-group", bootstrap_servers=broker.bootstrap, group_id="kp", enable_auto_commit=False,
                          auto_offset_reset="earliest", session_timeout_ms=10000, heartbeat_interval_ms=1000)
        values = []
        deadline = time.time() + 60
        while len(values) < expected and time.time() < deadline:
            for records in c.poll(timeout_ms=500).values():
                values += [int(r.value) for r in records]
            c.commit()
        assignment = c.assignment()
        c.close()
        return values, assignment

    values, assignment = consume(300)
    assert sorted(values) == list(range(300))
    assert len(assignment) == 3
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(300, 330):
        p.send("kp-group", value=str(i).encode(), partition=i % 3)
    p.flush()
    p.close()
    values, _ = consume(30)
    assert sorted(values) == list(range(300, 330)), "resumed from the committed offsets"


def test_kafka_consumer_groups_tool_describes_members_offsets_and_lag(broker, tmp_path):
    """Apache Kafka's kafka-consumer-groups (ConsumerGroupCommand, kafka-tools 4.3.1) lists our
    group and describes its members, committed offsets and lag."""
    from test_kafka_tools import KAFKA_LIB
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("lagging", 2, 1)])["lagging"].result(30)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        p.produce("lagging", value=b"x", partition=i % 2)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lag-group", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "client.id": "lag-client"})
    c.subscribe(["lagging"])
    got = []
    deadline = time.time() + 30
    while len(got) < 100 and time.time() < deadline:
        got += [m for m in c.consume(100, timeout=0.5) if not m.error()]
    # Commit 30 of partition 0 and 40 of partition 1: lag 20 and 10.
    c.commit(offsets=[TopicPartition("lagging", 0, 30), TopicPartition("lagging", 1, 40)], asynchronous=False)

    def tool(*args):
        out = subprocess.run(["java", "-cp", f"{KAFKA_LIB}/*", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                              "--bootstrap-server", broker.bootstrap, *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    try:
        assert "lag-group" in tool("--list")
        described = tool("--describe", "--group", "lag-group")
        rows = [line.split() for line in described.splitlines() if line.startswith("lag-group")]
        by_partition = {int(r[2]): r for r in rows}
        assert set(by_partition) == {0, 1}, described
        # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID
        assert by_partition[0][3:6] == ["30", "50", "20"], described
        assert by_partition[1][3:6] == ["40", "50", "10"], described
        assert all(r[8] == "lag-client" for r in rows), described
        members = tool("--describe", "--group", "lag-group", "--members")
        assert "lag-client" in members, members
    finally:
        c.close()


def test_static_members_rejoin_without_a_rebalance(broker):
    """A member with a group.instance.id that restarts within its session timeout gets its old
    partitions back, and the other member sees no rebalance (KIP-345)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("static", 4, 1)])["static"].result(30)

    def member(instance):
        events = []
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "static-group",
                      "group.instance.id": instance, "session.timeout.ms": 30000, "enable.auto.commit": False})
        c.subscribe(["static"], on_assign=lambda _, ps: events.append(("A", sorted(p.partition for p in ps))),
                    on_revoke=lambda _, ps: events.append(("V", sorted(p.partition for p in ps))))
        return c, events

    a, a_events = member("instance-a")
    b, b_events = member("instance-b")
    deadline = time.time() + 60
    while time.time() < deadline and not (a_events and b_events and a_events[-1][0] == "A" and b_events[-1][0] == "A"
                                          and len(a_events[-1][1]) + len(b_events[-1][1]) == 4):
        a.poll(0.1)
        b.poll(0.1)
    a_parts = a_events[-1][1]
    assert len(a_parts) == 2 and len(b_events[-1][1]) == 2, (a_events, b_events)
    b_before = list(b_events)
    a.close()  # a static member leaves no LeaveGroup behind: its place waits for it
    a, a_events = member("instance-a")
    deadline = time.time() + 30
    while time.time() < deadline and not a_events:
        a.poll(0.1)
        b.poll(0.1)
    for _ in range(30):  # 3 s more in which B must see nothing
        a.poll(0.05)
        b.poll(0.05)
    assert a_events == [("A", a_parts)], a_events
    assert b_events == b_before, "the other member saw a rebalance"
    groups = admin.describe_consumer_groups(["static-group"])["static-group"].result()
    assert sorted(m.group_instance_id for m in groups.members) == ["instance-a", "instance-b"]
    a.close()
    b.close()
