"""Topic configs and admin tools as real clients and Apache Kafka's own 4.3.1 tools see them:
batches recompressed to a topic's compression.type are read by librdkafka and Kafka's console
consumer (and stored in that codec), kafka-configs alters and describes topic and group configs,
ClusterTool and BrokerApiVersionsCommand find DescribeCluster, and a record stamped too far in the
future is refused with INVALID_TIMESTAMP."""
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer
from kafka.errors import InvalidTimestampError

KAFKA_LIB = Path(__file__).parent / "kafka" / "target" / "lib"
TEST_LIMIT_S = 90  # conftest bounds each test here by it
PER_PRODUCER = 2000

# Topic compression.type -> the codec kafka-python produces with (never the topic's own), and the
# codec DumpLogSegments must then report for every stored batch.
RECOMPRESSED = {
    "lz4": ("none", "lz4"),
    "zstd": ("none", "zstd"),
    "gzip": ("none", "gzip"),
    "snappy": ("none", "snappy"),
    "uncompressed": ("gzip", "none"),
}


def kafka_tool(main_class, *args, timeout=60):
    """Runs one of Kafka's command-line tools; returns (returncode, stdout + stderr)."""
    assert KAFKA_LIB.exists(), "tests/interop/kafka is not built: tests/run.sh builds it"
    out = subprocess.run(["java", "-cp", f"{KAFKA_LIB}/*", main_class, *map(str, args)],
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr


def config_command(bootstrap, *args):
    return kafka_tool("kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap, *args)


def create_topics(bootstrap, topics):
    """topics: {name: {config}}; each with one partition."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1, config=c)
                                   for t, c in topics.items()])
    for f in futures.values():
        f.result(30)


def value(topic: str, producer: str, i: int) -> bytes:
    # No newline: Kafka's console consumer prints one value a line.
    return (f"{topic}|{producer}|{i:05d}|" + "lorem ipsum dolor " * (i % 13 + 1)).encode()


def produce_kafka_python(bootstrap, topic, codec, count):
    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec,
                      linger_ms=5, acks=1, batch_size=16 * 1024, max_in_flight_requests_per_connection=1)
    try:
        futures = [p.send(topic, value=value(topic, "kp", i), partition=0) for i in range(count)]
        p.flush(60)
        offsets = [f.get(timeout=30).offset for f in futures]
        assert offsets == sorted(offsets) and len(set(offsets)) == count
    finally:
        p.close(timeout=10)


def produce_librdkafka(bootstrap, topic, codec, count):
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5, "acks": "all",
                  "batch.size": 16 * 1024, "max.in.flight.requests.per.connection": 1})
    errors = []
    for i in range(count):
        p.produce(topic, value=value(topic, "rk", i), partition=0,
                  on_delivery=lambda err, msg: err is not None and errors.append(err))
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:3]


def consume_librdkafka(bootstrap, topic, count):
    """Every record of partition 0 from offset 0, as (offset, value)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"recompress-{topic}", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        out = []
        deadline = time.time() + 30
        while len(out) < count and time.time() < deadline:
            for m in c.consume(1000, timeout=0.2):
                if m.error():
                    raise KafkaException(m.error())
                out.append((m.offset(), m.value()))
        # Anything past `count` would be a duplicate: give it a moment to show up.
        for m in c.consume(1000, timeout=0.5):
            out.append((m.offset(), m.value()))
        return out
    finally:
        c.close()


def stored_batches(data_dir, topics):
    """Kafka's DumpLogSegments over partition 0 of each topic (the broker stopped):
    {topic: (set of the codecs its batches are stored in, number of records)}."""
    logs = {topic: sorted((data_dir / f"{topic}-0").glob("*.log")) for topic in topics}
    for topic, files in logs.items():
        assert files, f"no segment for {topic}"
    rc, out = kafka_tool("org.apache.kafka.tools.DumpLogSegments", "--deep-iteration",
                         "--files", ",".join(str(f) for files in logs.values() for f in files))
    assert rc == 0, out[-3000:]
    assert "isvalid: false" not in out and "Exception" not in out, out[-3000:]
    found = {topic: (set(), 0) for topic in topics}
    topic = None
    for line in out.splitlines():
        if line.startswith("Dumping "):
            topic = Path(line.removeprefix("Dumping ").strip()).parent.name.removesuffix("-0")
        elif "compresscodec:" in line:
            codec = line.split("compresscodec:", 1)[1].split()[0]
            found[topic][0].add(codec)
        elif line.startswith("| offset:"):
            found[topic] = (found[topic][0], found[topic][1] + 1)
    return found


def test_recompressed_topics_are_read_by_librdkafka_and_kafka_console_consumer(broker):
    topics = {f"recompress-{codec}": codec for codec in RECOMPRESSED}
    create_topics(broker.bootstrap, {t: {"compression.type": codec} for t, codec in topics.items()})

    expected = {}
    for topic, codec in topics.items():
        sent_codec = RECOMPRESSED[codec][0]
        produce_kafka_python(broker.bootstrap, topic, sent_codec, PER_PRODUCER)
        expected[topic] = [value(topic, "kp", i) for i in range(PER_PRODUCER)]
    # librdkafka's zstd batches into the lz4 topic, after kafka-python's uncompressed ones.
    produce_librdkafka(broker.bootstrap, "recompress-lz4", "zstd", PER_PRODUCER)
    expected["recompress-lz4"] += [value("recompress-lz4", "rk", i) for i in range(PER_PRODUCER)]

    for topic, values in expected.items():
        got = consume_librdkafka(broker.bootstrap, topic, len(values))
        assert [o for o, _ in got] == list(range(len(values))), f"{topic}: offsets not 0..{len(values) - 1}"
        assert [v for _, v in got] == values, f"{topic}: librdkafka read other values than were produced"

    # Kafka's console consumer, one group subscribed to all five topics by pattern.
    total = sum(map(len, expected.values()))
    rc, out = kafka_tool("org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", broker.bootstrap,
                         "--include", "^recompress-.*", "--from-beginning", "--max-messages", total,
                         "--timeout-ms", 20000, "--group", "recompress-console",
                         "--formatter-property", "print.offset=true", timeout=60)
    assert rc == 0, out[-3000:]
    assert f"Processed a total of {total} messages" in out, out[-3000:]
    read = {topic: [] for topic in expected}
    for line in out.splitlines():
        if line.startswith("Offset:"):
            offset, v = line.split("\t", 1)
            topic = v.split("|", 1)[0]
            read[topic].append((int(offset.removeprefix("Offset:")), v.encode()))
    for topic, values in expected.items():
        assert [o for o, _ in read[topic]] == list(range(len(values))), f"{topic}: console consumer offsets"
        assert [v for _, v in read[topic]] == values, f"{topic}: console consumer read other values"

    # The stored batches are in the topic's codec, whatever the producer sent.
    broker.stop()
    stored = stored_batches(broker.data_dir, list(topics))
    for topic, codec in topics.items():
        codecs, records = stored[topic]
        assert codecs == {RECOMPRESSED[codec][1]}, f"{topic} (compression.type={codec}): batches stored as {codecs}"
        assert records == len(expected[topic]), f"{topic}: {records} records in the segments"


def test_kafka_configs_alters_and_describes_topic_and_group_configs(broker):
    create_topics(broker.bootstrap, {"configured": {}})
    rc, out = config_command(broker.bootstrap, "--entity-type", "topics", "--entity-name", "configured", "--alter",
                             "--add-config", "file.delete.delay.ms=1000,segment.jitter.ms=5,compression.type=zstd")
    assert rc == 0, out[-3000:]
    assert "Completed updating config for topic configured" in out, out[-3000:]

    rc, out = config_command(broker.bootstrap, "--entity-type", "topics", "--entity-name", "configured", "--describe")
    assert rc == 0, out[-3000:]
    for entry in ["file.delete.delay.ms=1000", "segment.jitter.ms=5", "compression.type=zstd"]:
        assert f"  {entry} " in out, f"{entry} not described:\n{out[-3000:]}"

    rc, out = config_command(broker.bootstrap, "--entity-type", "topics", "--entity-name", "configured", "--alter",
                             "--add-config", "remote.storage.enable=true")
    assert rc != 0, out[-3000:]
    assert "Tiered Storage functionality is disabled" in out, out[-3000:]
    # The refused change left the topic as it was.
    rc, out = config_command(broker.bootstrap, "--entity-type", "topics", "--entity-name", "configured", "--describe")
    assert rc == 0 and "remote.storage.enable" not in out and "  compression.type=zstd " in out, out[-3000:]

    # DescribeConfigs for a GROUP resource: the group need not exist; its defaults are described.
    rc, out = config_command(broker.bootstrap, "--entity-type", "groups", "--entity-name", "some-group",
                             "--describe", "--all")
    assert rc == 0, out[-3000:]
    assert "All configs for group some-group are:" in out, out[-3000:]
    assert "  consumer.session.timeout.ms=45000 " in out, out[-3000:]

    # The compression.type set through kafka-configs is applied to what is produced next.
    produce_librdkafka(broker.bootstrap, "configured", "none", 100)
    broker.stop()
    assert stored_batches(broker.data_dir, ["configured"])["configured"] == ({"zstd"}, 100)


def test_cluster_tool_and_broker_api_versions_see_describe_cluster(broker):
    rc, out = kafka_tool("org.apache.kafka.tools.ClusterTool", "cluster-id", "--bootstrap-server", broker.bootstrap)
    assert rc == 0, out[-3000:]
    ids = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Cluster ID:")]
    assert len(ids) == 1 and ids[0] and ids[0] != "null", out[-3000:]

    rc, out = kafka_tool("org.apache.kafka.tools.BrokerApiVersionsCommand", "--bootstrap-server", broker.bootstrap)
    assert rc == 0, out[-3000:]
    assert f"{broker.bootstrap} (id: " in out, out[-3000:]
    [line] = [line for line in out.splitlines() if "DescribeCluster(60):" in line]
    assert "usable:" in line and "UNSUPPORTED" not in line, line


def test_record_from_two_hours_ahead_is_refused_with_invalid_timestamp(broker):
    topic = "timestamps"  # created on first use, with the broker's defaults
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=0)
    try:
        now_ms = int(time.time() * 1000)
        future = p.send(topic, value=b"from the future", partition=0, timestamp_ms=now_ms + 2 * 3600 * 1000)
        started = time.monotonic()
        with pytest.raises(InvalidTimestampError):
            future.get(timeout=30)
        assert time.monotonic() - started < 10, "INVALID_TIMESTAMP is not retriable: the send must fail at once"
        ok = p.send(topic, value=b"on time", partition=0, timestamp_ms=int(time.time() * 1000)).get(timeout=30)
        assert ok.offset == 0
    finally:
        p.close(timeout=10)
    got = consume_librdkafka(broker.bootstrap, topic, 1)
    assert got == [(0, b"on time")], got
