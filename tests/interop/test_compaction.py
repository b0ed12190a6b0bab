"""Compaction in the manner of Kafka's LogCompactionTester: librdkafka writes 1 000 000 records over
10 000 keys, about one in ten a tombstone, to a compacted topic with small segments while the cleaner
runs; once the cleaner has caught up, a consumer reads the whole partition from offset 0 and for each
key the last value read is the last value produced, no deleted key comes back, every record is at the
offset it was written at, and far fewer records remain. The second test kills the broker with
SIGKILL several times while it cleans, then checks the same.

Crash story of a clean: cleaned segments are written to `.cleaned` files and synced; the rename to
`.swap` is the commit point; at start a `.cleaned` file is deleted and a `.swap` file is completed.
"""
import random
import re
import signal
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker

RECORDS = 1_000_000
KEYS = 10_000
TOPIC = "compacted"


def start_broker(tmp_path):
    broker = Broker(tmp_path / "data", ["--set", "log.cleaner.backoff.ms=200"])
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 1, config={
        "cleanup.policy": "compact",
        "segment.bytes": str(256 * 1024),
        "min.cleanable.dirty.ratio": "0.1",
        "delete.retention.ms": "0",
    })])[TOPIC].result(30)
    return broker


def produce(bootstrap):
    """Writes the records; returns the last value produced per key (None for a tombstone)."""
    rng = random.Random(7)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 65536,
                  "compression.type": "lz4", "max.in.flight.requests.per.connection": 1,
                  "queue.buffering.max.messages": 200_000})
    last = {}
    failed = []

    def on_delivery(err, msg):
        if err:
            failed.append(err)

    for i in range(RECORDS):
        key = f"key-{rng.randrange(KEYS)}"
        value = None if rng.random() < 0.1 else str(i).encode()
        last[key] = value
        while True:
            try:
                p.produce(TOPIC, key=key.encode(), value=value, partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    assert not failed, failed[:5]
    return last


def cleaned_to(broker):
    """The partition's first dirty offset from the cleaner checkpoint, or -1."""
    path = broker.data_dir / "cleaner-offset-checkpoint"
    if not path.exists():
        return -1
    m = re.search(rf"^{TOPIC} 0 (\d+)$", path.read_text(), re.M)
    return int(m.group(1)) if m else -1


def active_segment_base(broker):
    return max(int(f.name.split(".")[0]) for f in (broker.data_dir / f"{TOPIC}-0").glob("*.log"))


def wait_until_cleaned(broker, timeout_s=300):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if cleaned_to(broker) >= active_segment_base(broker):
            return
        time.sleep(0.5)
    raise AssertionError(f"cleaner did not catch up: {cleaned_to(broker)} < {active_segment_base(broker)}")


def read_partition(bootstrap):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-check", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    out = []
    try:
        c.assign([TopicPartition(TOPIC, 0, 0)])
        while True:
            msgs = c.consume(10_000, timeout=10)
            assert msgs, "no end of partition seen"
            done = False
            for m in msgs:
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        done = True
                        continue
                    raise RuntimeError(m.error())
                out.append((m.offset(), m.key().decode(), m.value()))
            if done:
                return out
    finally:
        c.close()


def check(broker, last):
    records = read_partition(broker.bootstrap)
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(set(offsets)), "offsets grow"
    seen = {}
    for offset, key, value in records:
        if value is not None:
            assert value == str(offset).encode(), f"record at {offset} holds {value!r}: offsets moved"
        seen[key] = value
    for key, value in last.items():
        if value is None:
            assert seen.get(key) is None, f"deleted key {key} came back with {seen[key]!r}"
        else:
            assert seen.get(key) == value, f"{key}: last produced {value!r}, read {seen.get(key)!r}"
    assert set(seen) <= set(last)
    # Compaction happened: the cleaned part holds one record per key at most.
    active = active_segment_base(broker)
    cleaned_keys = [k for o, k, _ in records if o < active]
    assert len(cleaned_keys) == len(set(cleaned_keys)), "a key appears twice in the cleaned part"
    assert len(records) < RECORDS // 10, len(records)
    deleted = sum(1 for v in last.values() if v is None)
    tombstones = sum(1 for _, _, v in records if v is None)
    return len(records), deleted, tombstones


def test_compaction_keeps_the_last_value_per_key(tmp_path):
    broker = start_broker(tmp_path)
    try:
        last = produce(broker.bootstrap)
        wait_until_cleaned(broker)
        remaining, deleted, tombstones = check(broker, last)
        print(f"{remaining} records remain of {RECORDS}; {deleted} keys deleted, {tombstones} tombstones kept")
        assert "cleaned log" in broker.log_text()
        # Compacted state survives a restart unchanged.
        broker.restart()
        assert check(broker, last)[0] == remaining
    finally:
        broker.stop()


def test_compaction_survives_kill_9_while_cleaning(tmp_path):
    broker = start_broker(tmp_path)
    try:
        # Hold the cleaner back while the data goes in, then kill it repeatedly as it works.
        broker.stop()
        broker.extra_args = ["--set", "log.cleaner.enable=false"]
        broker.start()
        last = produce(broker.bootstrap)
        broker.stop()
        broker.extra_args = ["--set", "log.cleaner.backoff.ms=100"]
        rng = random.Random(11)
        partition_dir = broker.data_dir / f"{TOPIC}-0"
        mid_clean_kills = 0
        for _ in range(6):
            broker.start()
            # Wait for the cleaner to start writing cleaned segments, then kill it soon after.
            deadline = time.time() + 60
            while time.time() < deadline and not any(partition_dir.glob("*.cleaned")):
                time.sleep(0.01)
            mid_clean_kills += any(partition_dir.glob("*.cleaned"))
            time.sleep(rng.uniform(0, 0.3))
            broker.stop(sig=signal.SIGKILL)
        assert mid_clean_kills >= 3, mid_clean_kills
        broker.start()
        wait_until_cleaned(broker)
        check(broker, last)
        assert "cleaned log" in broker.log_text()
    finally:
        broker.stop()
