"""Retention and DeleteRecords as librdkafka sees them: the log start offset moves, earliest
offsets and consumers follow it, and it survives a restart."""
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from conftest import Broker


def low_watermark(bootstrap, topic, partition=0):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "retention-check", "enable.auto.commit": False})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return low, high
    finally:
        c.close()


def first_offset_from_earliest(bootstrap, topic):
    """Where a consumer that asks for offset 0 and resets to the earliest actually starts."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "retention-check", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        for _ in range(100):
            for m in c.consume(1, timeout=0.2):
                assert not m.error(), m.error()
                return m.offset()
        raise AssertionError("nothing consumed")
    finally:
        c.close()


def produce(bootstrap, topic, count, timestamp=None):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.size": 1000})
    for i in range(count):
        kwargs = {"timestamp": timestamp} if timestamp else {}
        p.produce(topic, value=b"x" * 500, partition=0, **kwargs)
        p.poll(0)
    assert p.flush(30) == 0


def wait_for(predicate, timeout_s=15):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def settled_low_watermark(bootstrap, topic, check_interval_s):
    """The watermarks once retention has caught up with everything written: a retention pass
    that ran while records were still arriving moves the start again at the next one, so the
    start must hold still across several check intervals."""
    previous = low_watermark(bootstrap, topic)
    for _ in range(50):
        time.sleep(3 * check_interval_s)
        current = low_watermark(bootstrap, topic)
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"the log start of {topic} never settled: last {previous}")


def test_retention_and_delete_records_move_the_log_start_offset(tmp_path):
    broker = Broker(tmp_path / "data", ["--set", "log.retention.check.interval.ms=200"])
    broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        fs = admin.create_topics([
            NewTopic("by-bytes", 1, 1, config={"segment.bytes": "16384", "retention.bytes": "50000"}),
            NewTopic("by-time", 1, 1, config={"segment.bytes": "16384", "retention.ms": "60000"}),
            NewTopic("by-request", 1, 1),
        ])
        for f in fs.values():
            f.result(30)

        # retention.bytes: about 300 KB in 16 KB segments, at most ~50 KB kept.
        produce(broker.bootstrap, "by-bytes", 600)
        wait_for(lambda: low_watermark(broker.bootstrap, "by-bytes")[0] > 400)
        low, high = settled_low_watermark(broker.bootstrap, "by-bytes", 0.2)
        assert high == 600
        assert first_offset_from_earliest(broker.bootstrap, "by-bytes") == low

        # retention.ms: records stamped an hour ago are past a one-minute retention at once;
        # fresh ones after them keep their segments.
        produce(broker.bootstrap, "by-time", 200, timestamp=int(time.time() * 1000) - 3_600_000)
        produce(broker.bootstrap, "by-time", 100)
        wait_for(lambda: low_watermark(broker.bootstrap, "by-time")[0] >= 190)
        assert low_watermark(broker.bootstrap, "by-time")[0] <= 200

        # A retention change applies without a restart (IncrementalAlterConfigs).
        produce(broker.bootstrap, "by-request", 50)
        resource = ConfigResource(ConfigResource.Type.TOPIC, "by-request", incremental_configs=[
            ConfigEntry("segment.bytes", "8192", incremental_operation=AlterConfigOpType.SET),
        ])
        [f] = admin.incremental_alter_configs([resource]).values()
        f.result(30)
        [f] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "by-request")]).values()
        assert f.result(30)["segment.bytes"].value == "8192"
        produce(broker.bootstrap, "by-request", 100)  # rolls 8 KB segments from here on
        resource = ConfigResource(ConfigResource.Type.TOPIC, "by-request", incremental_configs=[
            ConfigEntry("retention.bytes", "20000", incremental_operation=AlterConfigOpType.SET),
        ])
        [f] = admin.incremental_alter_configs([resource]).values()
        f.result(30)
        wait_for(lambda: low_watermark(broker.bootstrap, "by-request")[0] >= 50)

        # DeleteRecords, then a restart: the start stays where it was moved.
        low = settled_low_watermark(broker.bootstrap, "by-request", 0.2)[0]
        [f] = admin.delete_records([TopicPartition("by-request", 0, low + 20)]).values()
        assert f.result(30).low_watermark == low + 20
        assert low_watermark(broker.bootstrap, "by-request") == (low + 20, 150)
        broker.restart()
        assert low_watermark(broker.bootstrap, "by-request") == (low + 20, 150)
        assert first_offset_from_earliest(broker.bootstrap, "by-request") == low + 20
        [f] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "by-request")]).values()
        assert f.result(30)["retention.bytes"].value == "20000", "config changes survive the restart"
        assert low_watermark(broker.bootstrap, "by-bytes")[0] > 400
    finally:
        broker.stop()
