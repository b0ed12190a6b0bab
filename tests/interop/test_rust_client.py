"""Our Rust client and the `quipu` command-line tool against Apache Kafka, and next to
librdkafka against Quipu.

- The client crate's whole test suite runs again with QUIPU_TEST_BOOTSTRAP pointing at a Kafka
  broker from the reference harness (benches/kafka_reference.py): what it expects of Quipu is
  what Kafka does. (Its fault-injection tests, which need a proxy in the broker's advertised
  address, run against an in-process Quipu either way.)
- The command-line tool creates, produces, consumes and describes groups on Kafka.
- Keys produced by `quipu produce` land on the partitions librdkafka's Java-compatible
  partitioner (murmur2_random) picks, and records each writes the other reads.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import QUIPU_BIN, ROOT, free_port

sys.path.insert(0, str(ROOT / "benches"))
from kafka_reference import KafkaReference  # noqa: E402


def quipu(bootstrap, *args, stdin=None, check=True):
    out = subprocess.run([str(QUIPU_BIN), *args], input=stdin, capture_output=True, text=True,
                         env={**os.environ, "QUIPU_BOOTSTRAP": bootstrap}, timeout=120)
    if check:
        assert out.returncode == 0, f"quipu {args}: {out.stderr}"
    return out


def cli_round_trip(bootstrap, topic):
    quipu(bootstrap, "topic", "create", topic, "--partitions", "3")
    assert topic in quipu(bootstrap, "topic", "list").stdout.split()
    lines = "".join(f"key-{i % 11}|value {i}\n" for i in range(300))
    quipu(bootstrap, "produce", topic, "--key-separator", "|", "--header", "origin=cli",
          "--compression", "zstd", stdin=lines)
    out = quipu(bootstrap, "consume", topic, "--from-beginning", "--exit-at-end", "--format", "json").stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 300
    assert {r["value"] for r in records} == {f"value {i}" for i in range(300)}
    assert all(r["headers"] == {"origin": "cli"} for r in records)
    first = quipu(bootstrap, "consume", topic, "--group", "cli-group", "--from-beginning", "-n", "100").stdout
    assert len(first.splitlines()) == 100
    described = quipu(bootstrap, "group", "describe", "cli-group").stdout
    lag = sum(int(line.split("\t")[4]) for line in described.splitlines() if line.startswith(topic + "\t"))
    assert lag == 200, described
    # kafka-consumer-groups --reset-offsets --to-earliest --execute, by our tool.
    quipu(bootstrap, "group", "reset-offsets", "cli-group", topic, "--to-earliest", "--execute")
    described = quipu(bootstrap, "group", "describe", "cli-group").stdout
    lag = sum(int(line.split("\t")[4]) for line in described.splitlines() if line.startswith(topic + "\t"))
    assert lag == 300, described
    missing = quipu(bootstrap, "consume", "no-such-topic", "-e", check=False)
    assert missing.returncode == 1 and missing.stderr.strip() == "error: topic `no-such-topic` does not exist"
    return records


def test_client_suite_and_cli_pass_against_apache_kafka(tmp_path):
    kafka = KafkaReference(free_port(), tmp_path / "kafka").start()
    try:
        suite = subprocess.run(["cargo", "test", "-q", "-p", "quipu-client"], cwd=ROOT,
                               env={**os.environ, "QUIPU_TEST_BOOTSTRAP": kafka.bootstrap},
                               capture_output=True, text=True, timeout=600)
        assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-4000:]
        assert "test result: FAILED" not in suite.stdout
        cli_round_trip(kafka.bootstrap, "cli-on-kafka")
    finally:
        kafka.stop()


def test_cli_keys_land_where_librdkafka_puts_them(broker):
    records = cli_round_trip(broker.bootstrap, "cli-on-quipu")
    ours = {r["key"]: r["partition"] for r in records}
    # librdkafka with the Java client's partitioner writes the same keys to another topic.
    quipu(broker.bootstrap, "topic", "create", "rdkafka-keys", "--partitions", "3")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"})
    placed = {}

    def delivered(err, msg):
        assert err is None, err
        placed[msg.key().decode()] = msg.partition()

    for key in ours:
        producer.produce("rdkafka-keys", key=key, value=b"x", on_delivery=delivered)
    producer.flush(30)
    assert placed == ours
    # And librdkafka reads what the CLI wrote.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "rd-reader",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition("cli-on-quipu", p, 0) for p in range(3)])
    seen = []
    while len(seen) < 300:
        msg = consumer.poll(10)
        assert msg is not None, f"only {len(seen)} records"
        assert msg.error() is None, msg.error()
        seen.append((msg.key().decode(), msg.value().decode(), msg.headers()))
    consumer.close()
    assert sorted(v for _, v, _ in seen) == sorted(f"value {i}" for i in range(300))
    assert all(h == [("origin", b"cli")] for _, _, h in seen)
