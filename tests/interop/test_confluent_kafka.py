"""librdkafka through confluent-kafka: produce and read back every codec, then again after a restart."""
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import workload as w

CLIENT = "confluent"


def produce(bootstrap, topic, codec):
    # One request in flight: without idempotence, a retried batch (a leader not ready yet right
    # after the topic was created, as on Kafka) could otherwise land after later ones.
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5, "acks": "all",
                  "queue.buffering.max.messages": 200000, "max.in.flight.requests.per.connection": 1})
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)

    for i in range(w.RECORDS):
        while True:
            try:
                p.produce(topic, key=w.key(i), value=w.value(i), headers=w.headers(i, CLIENT),
                          partition=i % w.PARTITIONS, timestamp=w.timestamp(i), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:3]


def consume(bootstrap, topic, partition, start_offset, count):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"interop-{topic}", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(topic, partition, start_offset)])
        out = []
        idle = 0
        while len(out) < count and idle < 100:
            msgs = c.consume(10000, timeout=0.2)
            idle = 0 if msgs else idle + 1
            for m in msgs:
                if m.error():
                    raise KafkaException(m.error())
                out.append(w.Consumed(m.partition(), m.offset(), m.key(), m.value(),
                                      list(m.headers() or []), m.timestamp()[1]))
        return out
    finally:
        c.close()


def offset_for_time(bootstrap, topic, partition, ts):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"interop-{topic}", "enable.auto.commit": False})
    try:
        [tp] = c.offsets_for_times([TopicPartition(topic, partition, ts)], timeout=10)
        return tp.offset
    finally:
        c.close()


def verify(bootstrap, topic):
    w.verify_reads(bootstrap, topic, CLIENT, consume, offset_for_time)


def test_confluent_kafka_round_trip_every_codec_and_restart(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = [f"confluent-{codec}" for codec in w.CODECS]
    for f in admin.create_topics([NewTopic(t, num_partitions=w.PARTITIONS, replication_factor=1) for t in topics]).values():
        f.result(30)
    for codec, topic in zip(w.CODECS, topics):
        produce(broker.bootstrap, topic, codec)
        verify(broker.bootstrap, topic)
    broker.restart()
    for topic in topics:
        verify(broker.bootstrap, topic)
