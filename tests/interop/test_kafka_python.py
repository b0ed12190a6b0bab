"""kafka-python: produce and read back every codec, then again after a restart."""
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

import workload as w

CLIENT = "kafka-python"


def produce(bootstrap, topic, codec):
    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec,
                      linger_ms=5, acks=1, batch_size=64 * 1024,
                      max_in_flight_requests_per_connection=1)
    futures = [p.send(topic, key=w.key(i), value=w.value(i), headers=w.headers(i, CLIENT),
                      partition=i % w.PARTITIONS, timestamp_ms=w.timestamp(i)) for i in range(w.RECORDS)]
    p.flush(120)
    for f in futures[:: max(1, w.RECORDS // 1000)] + futures[-1:]:
        f.get(timeout=60)
    assert all(f.succeeded() for f in futures)
    p.close()


def consumer(bootstrap):
    return KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                         fetch_max_wait_ms=100, consumer_timeout_ms=20000)


def consume(bootstrap, topic, partition, start_offset, count):
    c = consumer(bootstrap)
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, start_offset)
        out = []
        while len(out) < count:
            batch = c.poll(timeout_ms=2000, max_records=10000)
            if not batch:
                break
            for m in batch.get(tp, []):
                out.append(w.Consumed(m.partition, m.offset, m.key, m.value, list(m.headers), m.timestamp))
        return out
    finally:
        c.close()


def offset_for_time(bootstrap, topic, partition, ts):
    c = consumer(bootstrap)
    try:
        tp = TopicPartition(topic, partition)
        return c.offsets_for_times({tp: ts})[tp].offset
    finally:
        c.close()


def verify(bootstrap, topic):
    w.verify_reads(bootstrap, topic, CLIENT, consume, offset_for_time)


def test_kafka_python_round_trip_every_codec_and_restart(broker):
    # Topics are created automatically on first use, with num.partitions=3.
    topics = [f"kafka-python-{codec}" for codec in w.CODECS]
    for codec, topic in zip(w.CODECS, topics):
        produce(broker.bootstrap, topic, codec)
        verify(broker.bootstrap, topic)
    broker.restart()
    for topic in topics:
        verify(broker.bootstrap, topic)
