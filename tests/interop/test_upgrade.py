"""A data directory written by a single node from before the metadata quorum (its metadata in
`__cluster_metadata/metadata.log`, made by fixtures/make_single_node_v1.py with the binary of
4493c2f) is upgraded on first start to a one-voter quorum: every topic, config, record and
committed offset is served as before, the old file is set aside, and later starts use the quorum.
"""
import json
import shutil
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import Broker

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "single_node_v1.json").read_text())


def check_served(bootstrap, extra_topics=()):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_topics(timeout=10).topics
    topics = {n: len(t.partitions) for n, t in listed.items() if not n.startswith("__")}
    assert topics == {**EXPECTED["topics"], **dict(extra_topics)}
    for name, configs in EXPECTED["configs"].items():
        described = admin.describe_configs([ConfigResource("topic", name)])
        entries = next(iter(described.values())).result(timeout=10)
        for key, value in configs.items():
            assert entries[key].value == value, (name, key)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        for p, offset in EXPECTED["committed"]["g"]["kept"].items():
            [tp] = consumer.committed([TopicPartition("kept", int(p))], timeout=10)
            assert tp.offset == offset, p
        for p, values in EXPECTED["records"]["kept"].items():
            consumer.assign([TopicPartition("kept", int(p), 0)])
            seen = []
            while len(seen) < len(values):
                m = consumer.poll(10)
                assert m is not None, f"kept-{p}: only {seen}"
                assert m.error() is None, m.error()
                seen.append(m.value().decode())
            assert seen == values
    finally:
        consumer.close()


def test_a_single_node_directory_is_upgraded_and_keeps_everything(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "single_node_v1", data)
    meta = data / "__cluster_metadata"
    assert (meta / "metadata.log").exists()
    b = Broker(data)
    b.start()
    try:
        check_served(b.bootstrap)
        assert not (meta / "metadata.log").exists()
        assert (meta / "metadata.log.upgraded").exists()
        assert (meta / "quorum" / "snapshot").exists()
        assert "upgraded the single node's metadata log" in b.log_text()
        # Writable as before: a new topic, and an idempotent producer after the upgrade.
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("after", 2, 1)])["after"].result(timeout=30)
        producer = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True})
        producer.produce("after", value="x", partition=1)
        assert producer.flush(30) == 0
        b.restart()
        check_served(b.bootstrap, {"after": 2})
        assert b.log_text().count("upgraded the single node's metadata log") == 1
        b.stop(sig=9)
        b.start()
        check_served(b.bootstrap, {"after": 2})
    finally:
        b.stop()
