"""Self-test of the fault harness's workload clients (clients.py) on one Quipu broker and no fault:
an rdkafka and a Java producer write 2000 records each into a 3-partition topic while an rdkafka and
a Java consumer share a group; the four histories must parse, follow the history format, report
every send as written, and show every record polled once (a re-delivery only of what had not been
committed yet, after a rebalance) and the group's commits reaching the end of every partition.

The broker binary is TEST_QUIPU_BIN (the interop suite's Broker starts it); the Java client is the
interop module's jar (mvn package in tests/interop/java).
"""
import importlib.util
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import pytest

if not os.environ.get("TEST_QUIPU_BIN"):
    pytest.skip("set TEST_QUIPU_BIN to a quipu binary to run the clients' self-test", allow_module_level=True)

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from clients import (JAVA_DIR, start_java_consumer, start_java_producer,  # noqa: E402
                     start_rdkafka_consumer, start_rdkafka_producer)

# The interop suite's Broker, loaded under its own name: "conftest" is this directory's.
_spec = importlib.util.spec_from_file_location("interop_conftest",
                                               Path(__file__).parent.parent / "interop" / "conftest.py")
interop_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(interop_conftest)
Broker = interop_conftest.Broker

TEST_LIMIT_S = 120
TOPIC = "queue"
GROUP = "g1"
EACH = 2000
FIELDS = {
    "send": {"t0", "topic", "key", "value", "idempotent", "result", "partition", "offset", "error"},
    "poll": {"group", "topic", "partition", "offset", "key", "value"},
    "assign": {"group", "partitions"},
    "commit": {"t0", "group", "topic", "partition", "offset"},
}


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data", ["--set", "num.partitions=3"])
    b.start()
    yield b
    b.stop()


def create_topic(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])[TOPIC].result(30)
    partitions = admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    assert sorted(partitions) == [0, 1, 2], partitions


def read_history(client):
    """The client's events; every line must parse and follow the history format."""
    events = []
    for n, line in enumerate(client.out.read_text().splitlines(), 1):
        event = json.loads(line)
        kind = event["type"]
        assert set(event) == {"type", "client", "t"} | FIELDS[kind], f"{client.out}:{n}: {line}"
        assert event["client"] == client.name and isinstance(event["t"], float), f"{client.out}:{n}"
        events.append(event)
    return events


def events_so_far(client, kind):
    """The client's events of one type written so far (a line being written may be torn)."""
    events = []
    for line in client.out.read_text().splitlines() if client.out.exists() else []:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event["type"] == kind:
            events.append(event)
    return events


def polled_values(consumers):
    return {e["value"] for c in consumers for e in events_so_far(c, "poll")}


def assigned(consumer):
    return any(e["partitions"] for e in events_so_far(consumer, "assign"))


def wait_for(what, check, timeout_s):
    deadline = time.time() + timeout_s
    while not check():
        assert time.time() < deadline, f"never {what} within {timeout_s} s"
        time.sleep(0.5)


def check_sends(producers, events):
    """Every record written once; {(partition, offset): value}."""
    written = {}
    for p in producers:
        sends = [e for e in events[p.name] if e["type"] == "send"]
        assert sorted(e["value"] for e in sends) == sorted(f"{p.name}-{n}" for n in range(EACH))
        for e in sends:
            assert e["result"] == "ok" and e["error"] is None, e
            assert e["partition"] in (0, 1, 2) and e["offset"] >= 0 and e["t0"] <= e["t"], e
            assert (e["partition"], e["offset"]) not in written, e
            written[(e["partition"], e["offset"])] = e["value"]
    for partition in range(3):
        offsets = sorted(o for p, o in written if p == partition)
        assert offsets == list(range(len(offsets))), f"partition {partition} has gaps"
    return written


def check_polls(polls, commits, written):
    """Every record polled once, again only when the group had not yet committed past it."""
    seen = defaultdict(list)
    for e in sorted(polls, key=lambda e: e["t"]):
        assert written.get((e["partition"], e["offset"])) == e["value"], e
        assert e["group"] == GROUP and e["topic"] == TOPIC, e
        seen[(e["partition"], e["offset"])].append(e)
    assert len(seen) == len(written), f"{len(written) - len(seen)} records never polled"
    again = 0
    for (partition, offset), repeats in seen.items():
        for e in repeats[1:]:
            past = [c for c in commits if c["partition"] == partition and c["offset"] > offset and c["t"] < e["t"]]
            assert not past, f"{e} polled again after commit {past[0]}"
            again += 1
    return again


def check_commits(commits, consumers, written):
    """Each consumer committed; the group's commits of a partition never go back and reach its end."""
    for c in consumers:
        assert any(e["client"] == c.name for e in commits), f"{c.name} never committed"
    for partition in range(3):
        offsets = [e["offset"] for e in sorted(commits, key=lambda e: e["t"]) if e["partition"] == partition]
        assert offsets == sorted(offsets), f"partition {partition}: commits went back: {offsets}"
        end = sum(1 for p, _ in written if p == partition)
        assert offsets and offsets[-1] == end, f"partition {partition}: last commit {offsets[-1:]}, end {end}"


def check_assigns(consumers, events):
    """Assign events on every rebalance; each consumer had partitions, and none when it left."""
    for c in consumers:
        assigns = [e for e in events[c.name] if e["type"] == "assign"]
        assert any(e["partitions"] for e in assigns), f"{c.name} never had partitions: {assigns}"
        assert assigns[-1]["partitions"] == [], f"{c.name} left the group with {assigns[-1]}"
        assert all(e["group"] == GROUP for e in assigns)


def run_clients(bootstrap, workdir):
    stop_file = workdir / "consumers.stop"
    common = dict(bootstrap=bootstrap, topic=TOPIC)
    consumers = [start_rdkafka_consumer(client="rdkafka-c1", out=workdir / "rdkafka-c1.jsonl",
                                        stop_file=stop_file, group=GROUP, **common),
                 start_java_consumer(client="java-c1", out=workdir / "java-c1.jsonl",
                                     stop_file=stop_file, group=GROUP, **common)]
    producers = []
    try:
        # The producers start once the group has formed, so that it reads and commits while they write.
        wait_for("both consumers had partitions", lambda: all(assigned(c) for c in consumers), 30)
        producers += [start_rdkafka_producer(client="rdkafka-p1", out=workdir / "rdkafka-p1.jsonl",
                                             count=EACH, rate=1000, **common),
                      start_java_producer(client="java-p1", out=workdir / "java-p1.jsonl", count=EACH, **common)]
        for p in producers:
            assert p.wait(45) == 0, p.log.read_text()[-3000:]
        wait_for("polled every record", lambda: len(polled_values(consumers)) >= 2 * EACH, 30)
        stop_file.touch()
        for c in consumers:
            assert c.stop(timeout_s=30, signal_first=False) == 0, c.log.read_text()[-3000:]
    finally:
        for c in producers + consumers:
            c.kill()
    return producers, consumers


def test_clients_record_a_faultless_history(broker, tmp_path):
    assert (JAVA_DIR / "quipu-interop-0.1.0.jar").exists(), "build tests/interop/java with mvn package"
    create_topic(broker.bootstrap)
    started = time.time()
    producers, consumers = run_clients(broker.bootstrap, tmp_path / "clients")
    events = {c.name: read_history(c) for c in producers + consumers}
    everything = [e for history in events.values() for e in history]
    polls = [e for e in everything if e["type"] == "poll"]
    commits = [e for e in everything if e["type"] == "commit"]
    written = check_sends(producers, events)
    again = check_polls(polls, commits, written)
    check_commits(commits, consumers, written)
    check_assigns(consumers, events)
    counts = {name: len(history) for name, history in events.items()}
    print(f"\nclients ran {time.time() - started:.1f} s; events {counts}; {len(polls)} polls "
          f"({again} re-deliveries before a commit), {len(commits)} commits")
