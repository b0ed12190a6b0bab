"""kill -9 while librdkafka produces at full speed, 20 times in a row: after every restart, every
record acknowledged with acks=1 is at the offset it was acknowledged at, offsets run without a gap,
and reads that start at any offset (through the offset index) begin at that offset.

Crash story: a produced batch is copied into the mapped active segment before the response is
sent, so it is in the page cache once acknowledged; a killed process loses nothing the kernel
holds. On restart the active segment is re-read batch by batch with CRC checks and cut after the
last valid batch, and its indexes are rebuilt.
"""
import random
import signal
import threading

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import Broker

ROUNDS = 20
PARTITIONS = 3


def read_all(bootstrap, topic):
    """Every record of every partition, from offset 0 to the end, as {partition: [(offset, value)]}."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-check", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    out = {p: [] for p in range(PARTITIONS)}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        at_end = set()
        while len(at_end) < PARTITIONS:
            for m in c.consume(10000, timeout=5):
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        at_end.add(m.partition())
                        continue
                    raise RuntimeError(m.error())
                out[m.partition()].append((m.offset(), m.value()))
        return out
    finally:
        c.close()


def first_offsets_read_from(bootstrap, topic, starts):
    """For each (partition, offset), the offset of the first record a read starting there returns."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-check", "enable.auto.commit": False})
    firsts = []
    try:
        for partition, offset in starts:
            c.assign([TopicPartition(topic, partition, offset)])
            for _ in range(50):
                msgs = c.consume(1, timeout=0.2)
                if msgs:
                    assert not msgs[0].error(), msgs[0].error()
                    firsts.append(msgs[0].offset())
                    break
            else:
                raise AssertionError(f"nothing read from {partition}@{offset}")
            c.unassign()
        return firsts
    finally:
        c.close()


def test_kill_9_while_producing_loses_no_acknowledged_record(tmp_path):
    rng = random.Random(7)
    broker = Broker(tmp_path / "data", ["--set", f"num.partitions={PARTITIONS}",
                                        # small segments, so kills also land around rolls
                                        "--set", "log.segment.bytes=1048576"])
    broker.start()
    topic = "crash"
    acked = {}  # (partition, offset) -> value
    seq = 0
    try:
        for round_no in range(ROUNDS):
            p = Producer({"bootstrap.servers": broker.bootstrap, "acks": 1, "linger.ms": 2,
                          "message.timeout.ms": 1000, "retries": 0, "reconnect.backoff.max.ms": 100})

            def on_delivery(err, msg):
                if err is None:
                    acked[(msg.partition(), msg.offset())] = msg.value()

            killed = threading.Event()

            def kill():
                broker.proc.send_signal(signal.SIGKILL)
                killed.set()

            timer = threading.Timer(rng.uniform(0.1, 0.4), kill)
            timer.start()
            while not killed.is_set():
                try:
                    p.produce(topic, value=f"r{round_no}-{seq}".encode() * 5, partition=seq % PARTITIONS,
                              on_delivery=on_delivery)
                    seq += 1
                except BufferError:
                    pass
                p.poll(0)
            p.flush(10)
            broker.proc.wait()
            broker.proc = None
            broker.start()

            records = read_all(broker.bootstrap, topic)
            for part, rs in records.items():
                offsets = [o for o, _ in rs]
                assert offsets == list(range(len(offsets))), f"round {round_no}: gap or duplicate in p{part}"
            for (part, off), value in acked.items():
                assert off < len(records[part]), f"round {round_no}: acked {part}@{off} lost"
                assert records[part][off][1] == value, f"round {round_no}: {part}@{off} changed"
            starts = [(part, rng.randrange(len(records[part])))
                      for part in (rng.randrange(PARTITIONS) for _ in range(5)) if records[part]]
            assert first_offsets_read_from(broker.bootstrap, topic, starts) == [o for _, o in starts]
        assert len(acked) > 1000, f"only {len(acked)} records were acknowledged: the test did not load the broker"
        print(f"{len(acked)} records acknowledged over {ROUNDS} kills, {seq} sent")
    finally:
        broker.stop()
