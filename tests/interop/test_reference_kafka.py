"""The reference harness works, and the same client checks pass against Apache Kafka itself
(benches/kafka_reference.py, jars from Maven Central): the interop suite's expectations are
Kafka's behaviour, not only Quipu's."""
import sys
from pathlib import Path

import test_confluent_kafka as confluent
from conftest import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches"))
from kafka_reference import KafkaReference  # noqa: E402


def test_same_checks_pass_against_apache_kafka(tmp_path):
    kafka = KafkaReference(free_port(), tmp_path / "kafka").start()
    try:
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
        admin.create_topics([NewTopic("reference-lz4", num_partitions=3, replication_factor=1)])["reference-lz4"].result(60)
        confluent.produce(kafka.bootstrap, "reference-lz4", "lz4")
        confluent.verify(kafka.bootstrap, "reference-lz4")
    finally:
        kafka.stop()
