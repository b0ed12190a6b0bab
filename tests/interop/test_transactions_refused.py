"""Until Quipu has transactions, a transactional producer fails at once with a clear error
(issue 11, item 27): FindCoordinator for a transactional id answers CLUSTER_AUTHORIZATION_FAILED,
which librdkafka and the Java client treat as fatal, instead of COORDINATOR_NOT_AVAILABLE, which
they retry until their timeout."""
import time

import pytest
from confluent_kafka import KafkaException, Producer


def test_librdkafka_transactional_producer_fails_at_once(broker):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "txn-1"})
    started = time.monotonic()
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(30)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"init_transactions took {elapsed:.1f} s: the client retried"
    assert "not supported" in str(raised.value), raised.value
