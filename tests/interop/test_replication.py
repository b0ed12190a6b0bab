"""Replicated partitions on a 3-node Quipu cluster (combined nodes, replication factor 3,
min.insync.replicas=2), driven by real clients: librdkafka's idempotent acks=all producer loses and
duplicates nothing while the leader is killed with kill -9 and restarted, and the replicas end up
with the same bytes; Apache Kafka's kafka-topics sees a SIGSTOPped follower leave the in-sync set
(--under-replicated-partitions, --under-min-isr-partitions) and come back, while acks=all is refused
with NOT_ENOUGH_REPLICAS below min.insync.replicas; Apache Kafka's Java producer (idempotence on,
acks=all by default) survives a leader kill.

Short session and lag times (broker.session.timeout.ms=2000, replica.lag.time.max.ms=3000) so
that failures are seen within seconds; every wait is bounded.
"""
import collections
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                   ConfigResource, NewTopic)

from cluster import (JAVA_CLASSPATH, JAVA_DIR, NODES, REPLICATION_SETTINGS, Pending, alive, bootstraps,
                     brokers_listed, describe_partitions, running_cluster, wait_until)
from conftest import Broker

# A hard bound per test (conftest's SIGALRM); each test is meant to take well under it.
TEST_LIMIT_S = 240


@pytest.fixture
def cluster(tmp_path):
    with running_cluster(tmp_path, REPLICATION_SETTINGS) as nodes:
        yield nodes


def partition_view(node: Broker, topic: str, partition: int):
    """(leader, sorted replicas, sorted isr) of a partition as `node`'s Metadata states it."""
    try:
        md = AdminClient({"bootstrap.servers": node.bootstrap}).list_topics(topic, timeout=5)
        p = md.topics[topic].partitions[partition]
        return p.leader, tuple(sorted(p.replicas)), tuple(sorted(p.isrs))
    except Exception:
        return None


def agreed_view(nodes, topic, partition):
    """The partition's (leader, replicas, isr) once every live node states the same one and names
    a live leader; else None."""
    views = {n.bootstrap: partition_view(n, topic, partition) for n in nodes if alive(n)}
    distinct = set(views.values())
    if len(distinct) != 1:
        return None
    [view] = distinct
    if view is None or view[0] < 1 or not alive(nodes[view[0] - 1]):
        return None
    return view


def wait_fully_in_sync(nodes, topic, partitions, timeout_s=30):
    for p in range(partitions):
        wait_until(f"{topic}-{p} led with 3 in-sync replicas",
                   lambda: (lambda v: v if v and len(v[2]) == NODES else None)(
                       agreed_view(nodes, topic, p)), timeout_s)


def create_topic(nodes, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstraps(nodes)})
    admin.create_topics([NewTopic(topic, partitions, replication_factor=3)])[topic].result(30)
    wait_fully_in_sync(nodes, topic, partitions)


def segment_data(path: Path) -> bytes:
    """A segment's batches, without the preallocated zero tail (a segment is preallocated to
    log.segment.bytes, 1 GiB, while the broker runs). The batches are walked by their headers
    (base offset, 8 bytes; batch length, 4) up to the first zero length, so the zeros are never
    read; the result is what stripping the trailing zero bytes would leave, but for a last
    record's own trailing zero bytes (its empty header count), which are kept."""
    out = bytearray()
    with open(path, "rb") as f:
        while True:
            head = f.read(12)
            if len(head) < 12:
                break
            length = int.from_bytes(head[8:12], "big", signed=True)
            if length <= 0:
                break
            body = f.read(length)
            out += head + body
            if len(body) < length:
                break
    return bytes(out)


def segment_files(node: Broker, topic: str, partition: int):
    """{file name: batches} of a partition's segments."""
    d = node.data_dir / f"{topic}-{partition}"
    return {f.name: segment_data(f) for f in sorted(d.glob("*.log"))}


def read_everything(bootstrap, topic, partitions, timeout_s=60):
    """Every record of every partition from offset 0 to the high watermark: {p: [(offset, value)]}."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "replication-check",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    out = {p: [] for p in range(partitions)}
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        at_end = set()
        deadline = time.time() + timeout_s
        while len(at_end) < partitions:
            assert time.time() < deadline, f"reading {topic} did not reach the end of {set(range(partitions)) - at_end}"
            for m in c.consume(10000, timeout=1):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    raise AssertionError(f"consumer error: {m.error()}")
                out[m.partition()].append((m.offset(), m.value().decode()))
                at_end.discard(m.partition())
        return out
    finally:
        c.close()


def log_tails(nodes, pattern=r"(?i)warn|error|fenc|isr|leader|truncat|epoch", lines=60):
    text = []
    for i, n in enumerate(nodes):
        hits = [l for l in n.log_text().splitlines() if re.search(pattern, l)]
        text.append(f"--- node {i + 1} ({n.log_path}) ---\n" + "\n".join(hits[-lines:]))
    return "\n".join(text)


def test_idempotent_acks_all_producer_loses_and_duplicates_nothing_through_leader_kills(cluster):
    nodes = cluster
    # The short form by default; the long one on demand (the 1 000 000 records and ten
    # kills): REPLICATION_RECORDS=1000000 REPLICATION_KILLS=10.
    records = int(os.environ.get("REPLICATION_RECORDS", "20000"))
    kill_rounds = int(os.environ.get("REPLICATION_KILLS", "3"))
    topic, partitions = "replicated", 3
    create_topic(nodes, topic, partitions)

    acked = {}     # value -> (partition, offset)
    failed = []    # (value, error)
    kills = []     # (round, killed node id, records produced by then, new leader, seconds to it)
    killer_errors = []
    killer_done = threading.Event()
    produced = [0]

    def killer():
        try:
            time.sleep(1.0)
            for round_no in range(kill_rounds):
                leader, _, _ = wait_until(f"partition 0 fully in sync before kill {round_no + 1}",
                                          lambda: (lambda v: v if v and len(v[2]) == NODES else None)(
                                              agreed_view(nodes, topic, 0)), 45)
                victim = nodes[leader - 1]
                victim.stop(signal.SIGKILL)
                killed_at = time.time()
                at = produced[0]
                new_leader, _, isr = wait_until(
                    f"a new leader of partition 0 after node {leader} was killed",
                    lambda: (lambda v: v if v and v[0] != leader else None)(agreed_view(nodes, topic, 0)), 20)
                elected_s = time.time() - killed_at
                assert leader not in isr, f"killed node {leader} still in the ISR {isr}"
                kills.append((round_no + 1, leader, at, new_leader, round(elected_s, 2)))
                time.sleep(max(0.0, 3.0 - (time.time() - killed_at)))
                victim.start()
        except BaseException as e:  # reported by the main thread
            killer_errors.append(e)
        finally:
            killer_done.set()

    def on_delivery(err, msg):
        if err is not None:
            failed.append((msg.value().decode(), err))
        else:
            acked[msg.value().decode()] = (msg.partition(), msg.offset())

    producer = Producer({"bootstrap.servers": bootstraps(nodes), "enable.idempotence": True,
                         "acks": "all", "message.timeout.ms": 60000, "linger.ms": 5,
                         "reconnect.backoff.max.ms": 200})
    thread = threading.Thread(target=killer, daemon=True)
    started = time.time()
    thread.start()
    try:
        # Paced while the killer runs (about eight seconds a round), so that the kills land
        # throughout the stream: 1000 records a second in the short form, more in the long one;
        # whatever is left once it is done goes at full speed.
        per_tenth_s = max(100, records // (kill_rounds * 80))
        n = 0
        while n < records:
            chunk = per_tenth_s if not killer_done.is_set() else records - n
            for _ in range(chunk):
                while True:
                    try:
                        producer.produce(topic, key=f"k-{n}", value=f"p-{n}", on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.1)
                n += 1
                produced[0] = n
            producer.poll(0)
            if not killer_done.is_set():
                time.sleep(0.1)
        remaining = producer.flush(90)
        flushed_s = time.time() - started
        thread.join(120)
        assert not thread.is_alive(), "the killer thread never finished"
        if killer_errors:
            raise killer_errors[0]
        print(f"kills (round, node, produced by then, new leader, s to elect): {kills}; "
              f"produced {n}, all delivered {flushed_s:.1f} s after the start, killer done at "
              f"{time.time() - started:.1f} s")
        assert len(kills) == kill_rounds, kills
        assert all(k[2] < records for k in kills), f"a kill came after the last record was produced: {kills}"
        assert remaining == 0, f"{remaining} records still undelivered after flush"
        assert not failed, f"{len(failed)} records failed, first {failed[:5]}\n{log_tails(nodes)}"
        assert len(acked) == records

        # Everything acknowledged is there exactly once, at the offset it was acknowledged at.
        read = read_everything(bootstraps(nodes), topic, partitions)
        print(f"read back by {time.time() - started:.1f} s")
        by_position = {}
        for p, rows in read.items():
            offsets = [o for o, _ in rows]
            assert all(a < b for a, b in zip(offsets, offsets[1:])), \
                f"partition {p}: offsets not strictly increasing near " \
                f"{[(a, b) for a, b in zip(offsets, offsets[1:]) if a >= b][:5]}"
            for o, v in rows:
                by_position[(p, o)] = v
        counts = collections.Counter(v for rows in read.values() for _, v in rows)
        duplicated = sorted(v for v, c in counts.items() if c > 1)
        assert not duplicated, f"{len(duplicated)} values read more than once, e.g. " \
            f"{[(v, [(p, o) for p, rows in read.items() for o, x in rows if x == v]) for v in duplicated[:5]]}"
        moved = [(v, pos, by_position.get(pos)) for v, pos in acked.items() if by_position.get(pos) != v]
        assert not moved, f"{len(moved)} acknowledged records not at their acknowledged offset " \
            f"(value, (partition, offset), read there): {sorted(moved, key=lambda m: m[1])[:10]}\n{log_tails(nodes)}"
        unexpected = sorted(set(counts) - set(acked))
        assert not unexpected, f"records read that were never acknowledged: {unexpected[:10]}"

        # kafka-topics sees every replica back in sync ...
        def all_in_sync():
            rows, out = describe_partitions(nodes[0].bootstrap, topic)
            ok = len(rows) == partitions and all(len(r[2]) == NODES for r in rows.values())
            return rows if ok else Pending(rows)
        rows = wait_until("every partition with Isr of 3 brokers in kafka-topics --describe", all_in_sync, 60, 1)
        print(f"all in sync by {time.time() - started:.1f} s: {rows}")

        # ... and every replica's log is the same bytes.
        def same_bytes(p):
            files = [segment_files(n, topic, p) for n in nodes]
            return bool(files[0]) and all(files[0].values()) and all(f == files[0] for f in files)
        for p in range(partitions):
            deadline = time.time() + 30
            while not same_bytes(p):
                if time.time() > deadline:
                    files = [segment_files(n, topic, p) for n in nodes]
                    sizes = [{k: len(v) for k, v in f.items()} for f in files]
                    firsts = []
                    for name in files[0]:
                        a = files[0][name]
                        for i, f in enumerate(files[1:], 2):
                            b = f.get(name, b"")
                            diff = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), None)
                            firsts.append((name, f"node1 vs node{i}", diff))
                    raise AssertionError(f"partition {p}: the replicas' segments differ: sizes {sizes}, "
                                         f"first differing byte {firsts}")
                time.sleep(0.2)
        sizes = {p: len(b"".join(segment_files(nodes[0], topic, p).values())) for p in range(partitions)}
        print(f"replicas identical by {time.time() - started:.1f} s, segment bytes per partition {sizes}; "
              f"records per partition {[len(read[p]) for p in range(partitions)]}")
    finally:
        killer_done.wait(60)


def produce_results(bootstrap, topic, count, **config):
    """Produces `count` records to partition 0 and returns their delivery errors (None: acknowledged)
    with the producer's log lines."""
    logs = []

    class Collect:
        def log(self, level, msg, *args, **kwargs):
            logs.append(msg % args if args else msg)

        debug = info = warning = error = critical = exception = log

    results = []
    p = Producer({"bootstrap.servers": bootstrap, **config}, logger=Collect())
    for i in range(count):
        p.produce(topic, value=f"x-{i}", partition=0,
                  on_delivery=lambda err, msg: results.append(err))
    left = p.flush(30)
    assert left == 0, f"{left} records not delivered nor failed"
    return results, logs


def test_stopped_follower_shows_in_under_replicated_and_under_min_isr_and_rejoins(cluster):
    nodes = cluster
    topic = "lagging"
    create_topic(nodes, topic, 1)
    ok, _ = produce_results(bootstraps(nodes), topic, 5, acks="all")
    assert ok == [None] * 5, ok
    leader, _, _ = agreed_view(nodes, topic, 0) or wait_until("partition 0 led", lambda: agreed_view(nodes, topic, 0))
    followers = [i + 1 for i in range(NODES) if i + 1 != leader]
    stopped_id = followers[0]
    stopped = nodes[stopped_id - 1]
    others = [n for n in nodes if n is not stopped]
    ask = others[0].bootstrap
    live = bootstraps(others)
    stopped.proc.send_signal(signal.SIGSTOP)
    t0 = time.time()
    try:
        # Fenced after broker.session.timeout.ms: the live nodes' Metadata no longer lists it (so
        # kafka-topics' admin client, bootstrapped from them, never sends a request to it).
        def fenced():
            listed = [brokers_listed(n) for n in others]
            return all(b is not None and stopped_id not in b for b in listed) or Pending(listed)
        wait_until(f"node {stopped_id} fenced", fenced, 15)
        print(f"node {stopped_id} stopped; fenced after {time.time() - t0:.1f} s")

        def under_replicated():
            rows, _ = describe_partitions(ask, topic, "--under-replicated-partitions")
            return rows if 0 in rows and stopped_id not in rows[0][2] else Pending(rows)
        rows = wait_until("partition 0 under-replicated in kafka-topics", under_replicated, 30, 0.5)
        print(f"under-replicated after {time.time() - t0:.1f} s: {rows}")
        assert len(rows[0][2]) == 2, rows

        # ISR 2 >= min.insync.replicas 2: acks=all is acknowledged.
        ok, _ = produce_results(live, topic, 5, acks="all")
        assert ok == [None] * 5, ok
        # Not under min ISR yet.
        rows, out = describe_partitions(ask, topic, "--under-min-isr-partitions")
        assert rows == {}, out

        admin = AdminClient({"bootstrap.servers": live})
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry("min.insync.replicas", "3", incremental_operation=AlterConfigOpType.SET)])
        [f] = admin.incremental_alter_configs([resource]).values()
        f.result(30)
        rows = wait_until("partition 0 under min ISR in kafka-topics",
                          lambda: describe_partitions(ask, topic, "--under-min-isr-partitions")[0] or None, 30, 0.5)
        assert list(rows) == [0] and len(rows[0][2]) == 2, rows

        # ISR 2 < 3: acks=all refused with NOT_ENOUGH_REPLICAS. Without retries, that is the
        # delivery error itself.
        refused, _ = produce_results(live, topic, 3, acks="all", retries=0)
        assert [e and e.code() for e in refused] == [KafkaError.NOT_ENOUGH_REPLICAS] * 3, refused
        # With retries, librdkafka retries the (retriable) error until message.timeout.ms: the
        # record then fails as timed out, and the refusals it retried were NOT_ENOUGH_REPLICAS.
        timed_out, logs = produce_results(live, topic, 1, acks="all", **{
            "message.timeout.ms": 3000, "debug": "msg,protocol"})
        assert [e and e.code() for e in timed_out] == [KafkaError._MSG_TIMED_OUT], timed_out
        retried = [l for l in logs if "encountered error: Broker: Not enough in-sync replicas" in l]
        assert len(retried) >= 2, "\n".join(logs[-40:])
        last_error = [l for l in logs if "encountered error" in l][-1]
        assert "Not enough in-sync replicas" in last_error, last_error
        # acks=1 does not wait for replicas.
        ok, _ = produce_results(live, topic, 3, acks=1)
        assert ok == [None] * 3, ok

        stopped.proc.send_signal(signal.SIGCONT)
        t1 = time.time()

        def back_in_sync():
            rows, out = describe_partitions(ask, topic)
            return rows if rows.get(0) and len(rows[0][2]) == NODES else Pending(rows)
        rows = wait_until("partition 0 back to 3 in-sync replicas", back_in_sync, 45, 0.5)
        print(f"node {stopped_id} continued; back in sync after {time.time() - t1:.1f} s: {rows}")
        rows, out = describe_partitions(ask, topic, "--under-replicated-partitions")
        assert rows == {}, out
        rows, out = describe_partitions(ask, topic, "--under-min-isr-partitions")
        assert rows == {}, out
        # ISR 3 >= min.insync.replicas 3: acks=all goes through again.
        ok, _ = produce_results(bootstraps(nodes), topic, 3, acks="all")
        assert ok == [None] * 3, ok
    finally:
        if alive(stopped):
            stopped.proc.send_signal(signal.SIGCONT)


def test_java_producer_acks_all_survives_a_leader_kill(cluster):
    assert (JAVA_DIR / "lib").exists(), "tests/interop/java is not built: tests/run.sh builds it"
    nodes = cluster
    # The short form by default, one kill; the long one on demand, with the librdkafka test's
    # variables: REPLICATION_RECORDS=1000000 REPLICATION_KILLS=10.
    count = int(os.environ.get("REPLICATION_RECORDS", "150000"))
    kill_rounds = int(os.environ.get("REPLICATION_KILLS", "1"))
    topic, partitions = "java-replicated", 3
    create_topic(nodes, topic, partitions)
    # Paced in the long form, about eight seconds a kill, so that the kills land throughout.
    env = dict(os.environ, **({"QUIPU_PRODUCE_RATE": str(count // (kill_rounds * 8))} if kill_rounds > 1 else {}))
    java = subprocess.Popen(["java", "-cp", JAVA_CLASSPATH, "quipu.Interop", "produce",
                             bootstraps(nodes), topic, "none", str(count)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        watch = [Consumer({"bootstrap.servers": bootstraps(nodes), "group.id": "java-watch"})]
        try:
            for round_no in range(kill_rounds):
                # Kill partition 0's leader at evenly spaced points of its stream, the first once
                # a fifteenth of its records are in.
                wanted = (count // partitions) * (round_no + 1) // (kill_rounds + 4)

                def far_enough():
                    if java.poll() is not None:
                        return "exited"
                    try:
                        end = watch[0].get_watermark_offsets(TopicPartition(topic, 0), timeout=5)[1]
                    except KafkaException as e:  # its metadata lags a kill: ask with a new one
                        watch[0].close()
                        watch[0] = Consumer({"bootstrap.servers": bootstraps(nodes), "group.id": "java-watch"})
                        return Pending(e)
                    return end >= wanted and end or Pending(end)
                at_kill = wait_until(f"the Java producer at {wanted} in partition 0", far_enough, 90, 0.05)
                assert java.poll() is None, f"the producer finished before kill {round_no + 1}: {java.communicate()}"
                leader, _, _ = wait_until(f"partition 0 fully in sync before kill {round_no + 1}",
                                          lambda: (lambda v: v if v and len(v[2]) == NODES else None)(
                                              agreed_view(nodes, topic, 0)), 45)
                victim = nodes[leader - 1]
                victim.stop(signal.SIGKILL)
                killed_at = time.time()
                new_leader, _, _ = wait_until(
                    "a new leader of partition 0",
                    lambda: (lambda v: v if v and v[0] != leader else None)(agreed_view(nodes, topic, 0)), 20)
                print(f"kill {round_no + 1}: node {leader} at partition 0's high watermark {at_kill} of "
                      f"{count // partitions}; node {new_leader} leads after {time.time() - killed_at:.1f} s")
                time.sleep(max(0.0, 3.0 - (time.time() - killed_at)))
                victim.start()
        finally:
            watch[0].close()
        out, err = java.communicate(timeout=120)
        print(f"the Java producer finished {time.time() - killed_at:.1f} s after the kill")
        assert java.returncode == 0, f"{out[-2000:]}{err[-3000:]}\n{log_tails(nodes)}"
        assert f"produced {count}" in out, out

        read = read_everything(bootstraps(nodes), topic, partitions)
        for p, rows in read.items():
            offsets = [o for o, _ in rows]
            assert all(a < b for a, b in zip(offsets, offsets[1:])), f"partition {p}: offsets not increasing"
            indexes = [int(re.match(r"v(\d{8})-", v).group(1)) for _, v in rows]
            dup = [i for i, c in collections.Counter(indexes).items() if c > 1]
            assert not dup, f"partition {p}: records read more than once: {sorted(dup)[:10]}"
            expected = list(range(p, count, partitions))
            missing = sorted(set(expected) - set(indexes))
            assert not missing, f"partition {p}: {len(missing)} acknowledged records missing, e.g. {missing[:10]}"
            # One producer, idempotent, in order per partition.
            assert indexes == expected, f"partition {p}: records out of order"
        print(f"records per partition {[len(read[p]) for p in range(partitions)]}")
    finally:
        if java.poll() is None:
            java.kill()
            java.wait()
