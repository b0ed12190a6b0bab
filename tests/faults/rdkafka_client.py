#!/usr/bin/env python3
"""A workload client on librdkafka (confluent-kafka) for the fault harness, run as its own process.

This module owns one producer or one consumer and the history it records: one JSON event per line
(send, poll, assign, commit, as HISTORY.md beside this file defines them), written line by line so
that a SIGKILLed client leaves every completed event behind (a torn last line at worst).

  produce --bootstrap B --topic T --client NAME --count N [--rate R] [--idempotent|--no-idempotent]
          [--acks all|1] [--keys K] [--flush-s S] --out FILE
      values NAME-0 .. NAME-(N-1), key k-<n % K> with --keys (else none), about R a second (0: as
      fast as it can); one send event per record from its delivery report. On SIGTERM or when done:
      waits up to S s (40) for the reports still due, then writes "unknown" for each record left.
  consume --bootstrap B --topic T --client NAME (--group G [--strategy S] | --assign P,P,...)
          --stop-file F [--commit-every-s 1] [--idle-s 3] --out FILE
      in group G: an assign event on every rebalance callback, a poll event per record and a
      commit event per partition committed (synchronously, every --commit-every-s and on stop);
      with --assign: the partitions from offset 0, one assign event and no commits. Stops when F
      exists and no record came for --idle-s, or on SIGTERM, and then closes the consumer.
"""
import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

STOP = threading.Event()

# The errors after which a record that librdkafka had queued was definitely not written: the broker
# (or librdkafka) rejected the record itself, so no attempt of it can have been appended.
DEFINITELY_NOT_WRITTEN = {
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_REQUIRED_ACKS,
}


def classify(err: KafkaError, queued: bool = True) -> str:
    """The result of a record whose delivery failed with `err`: "fail" only when it was definitely
    not written, else "unknown". A record produce() refused (an unknown topic or partition, too
    large...) was never queued, so that is a "fail" whatever the error. Once queued, a timeout
    (_MSG_TIMED_OUT, _TIMED_OUT), a lost connection (_TRANSPORT) or retries exhausted on a retriable
    error (NOT_ENOUGH_REPLICAS, NOT_LEADER_FOR_PARTITION, UNKNOWN_TOPIC_OR_PART ...) may follow an
    attempt that was written: when in doubt, "unknown"."""
    if not queued:
        return "fail"
    return "fail" if err.code() in DEFINITELY_NOT_WRITTEN else "unknown"


def describe(err: KafkaError) -> str:
    return f"{err.name()}: {err.str()}"


def log(*words):
    print(time.strftime("%H:%M:%S"), *words, file=sys.stderr, flush=True)


class History:
    """The client's history file, one event a line, each line flushed as it is written."""

    def __init__(self, path, client):
        self.file = open(path, "a", buffering=1, encoding="utf-8")
        self.client = client

    def write(self, kind, **fields):
        event = {"type": kind, "client": self.client, "t": time.time(), **fields}
        self.file.write(json.dumps(event) + "\n")

    def close(self):
        self.file.close()


# ---------------------------------------------------------------------------------------------
# produce


def producer_config(args) -> dict:
    return {
        "bootstrap.servers": args.bootstrap,
        "acks": args.acks,
        "enable.idempotence": args.idempotent,
        "message.timeout.ms": 30000,
        "linger.ms": 5,
        "reconnect.backoff.max.ms": 500,
    }


class Sends:
    """The records produced and not yet reported, and the send events that report them."""

    def __init__(self, history, args):
        self.history = history
        self.args = args
        self.pending = {}  # value -> (t0, key)

    def event(self, value, key, t0, result, partition=None, offset=None, error=None):
        self.history.write("send", t0=t0, topic=self.args.topic, key=key, value=value,
                           idempotent=self.args.idempotent, result=result,
                           partition=partition, offset=offset, error=error)

    def delivered(self, err, msg):
        """The delivery report callback."""
        value = msg.value().decode()
        sent = self.pending.pop(value, None)
        if sent is None:  # already reported as "unknown" when the producer stopped
            return
        if err is None:
            self.event(value, sent[1], sent[0], "ok", msg.partition(), msg.offset())
        else:
            self.event(value, sent[1], sent[0], classify(err), error=describe(err))

    def give_up(self):
        """An "unknown" send event for every record still not reported."""
        for value, (t0, key) in list(self.pending.items()):
            self.event(value, key, t0, "unknown", error="still in flight when the producer stopped")
        self.pending.clear()


def enqueue(producer, sends, value, key) -> bool:
    """Produces one record, waiting while librdkafka's queue is full; False if stopped first."""
    t0 = time.time()
    while not STOP.is_set():
        sends.pending[value] = (t0, key)
        try:
            producer.produce(sends.args.topic, value=value, key=key, on_delivery=sends.delivered)
            return True
        except BufferError:
            del sends.pending[value]
            producer.poll(0.1)
        except KafkaException as e:
            del sends.pending[value]
            sends.event(value, key, t0, classify(e.args[0], queued=False), error=describe(e.args[0]))
            return True
    return False


def pace(producer, start, n, rate):
    """Serves delivery reports until record `n` is due at `rate` records a second (0: now)."""
    while rate > 0 and not STOP.is_set():
        ahead = start + n / rate - time.time()
        if ahead <= 0:
            break
        producer.poll(min(ahead, 0.1))
    producer.poll(0)


def produce(args) -> int:
    if args.idempotent and args.acks != "all":
        sys.exit("an idempotent producer needs --acks all")
    history = History(args.out, args.client)
    sends = Sends(history, args)
    producer = Producer(producer_config(args))
    start, made = time.time(), 0
    for n in range(args.count):
        pace(producer, start, n, args.rate)
        key = f"k-{n % args.keys}" if args.keys else None
        if not enqueue(producer, sends, f"{args.client}-{n}", key):
            break
        made += 1
    deadline = time.time() + args.flush_s
    while sends.pending and time.time() < deadline:
        producer.poll(0.1)
    sends.give_up()
    producer.purge()
    producer.poll(0)
    history.close()
    log(f"produced {made} of {args.count} records, stopped={STOP.is_set()}")
    return 0


# ---------------------------------------------------------------------------------------------
# consume


def consumer_config(args) -> dict:
    return {
        "bootstrap.servers": args.bootstrap,
        # assign() needs no group, but librdkafka wants a group.id: one nothing commits to.
        "group.id": args.group or f"{args.client}-unused",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": args.strategy,
        "reconnect.backoff.max.ms": 500,
    }


class Assignment:
    """The consumer's current assignment, recorded in full after each rebalance callback."""

    def __init__(self, history, group):
        self.history = history
        self.group = group
        self.partitions = set()

    def record(self):
        self.history.write("assign", group=self.group, partitions=[list(p) for p in sorted(self.partitions)])

    def assigned(self, consumer, partitions):
        self.partitions |= {(p.topic, p.partition) for p in partitions}
        self.record()

    def revoked(self, consumer, partitions):
        self.partitions -= {(p.topic, p.partition) for p in partitions}
        self.record()


def commit(consumer, history, group):
    """A synchronous commit of the positions read; a commit event per partition committed."""
    t0 = time.time()
    try:
        committed = consumer.commit(asynchronous=False)
    except KafkaException as e:
        if e.args[0].code() != KafkaError._NO_OFFSET:
            log("commit failed:", describe(e.args[0]))
        return
    for tp in committed or []:
        if tp.error is None and tp.offset >= 0:
            history.write("commit", t0=t0, group=group, topic=tp.topic, partition=tp.partition, offset=tp.offset)
        elif tp.error is not None:
            log(f"commit of {tp.topic}-{tp.partition} failed:", describe(tp.error))


def text(data):
    return None if data is None else data.decode()


def read_until_stopped(consumer, history, args):
    """Polls (and commits, in a group) until the stop file exists and no record came for
    --idle-s, or until SIGTERM."""
    last_record = last_commit = time.time()
    stop_file = Path(args.stop_file)
    while not STOP.is_set():
        for msg in consumer.consume(num_messages=500, timeout=0.2):
            if msg.error():
                log("consume:", describe(msg.error()))
                continue
            history.write("poll", group=args.group, topic=msg.topic(), partition=msg.partition(),
                          offset=msg.offset(), key=text(msg.key()), value=text(msg.value()))
            last_record = time.time()
        if args.group and time.time() - last_commit >= args.commit_every_s:
            commit(consumer, history, args.group)
            last_commit = time.time()
        if stop_file.exists() and time.time() - last_record >= args.idle_s:
            break


def consume(args) -> int:
    history = History(args.out, args.client)
    consumer = Consumer(consumer_config(args))
    if args.group:
        assignment = Assignment(history, args.group)
        consumer.subscribe([args.topic], on_assign=assignment.assigned,
                           on_revoke=assignment.revoked, on_lost=assignment.revoked)
    else:
        partitions = [int(p) for p in args.assign.split(",")]
        consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
        history.write("assign", group=None, partitions=[[args.topic, p] for p in sorted(partitions)])
    read_until_stopped(consumer, history, args)
    if args.group:
        commit(consumer, history, args.group)
    consumer.close()
    history.close()
    log(f"consumer closed, stopped={STOP.is_set()}")
    return 0


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    for mode in ("produce", "consume"):
        sub = modes.add_parser(mode)
        sub.add_argument("--bootstrap", required=True)
        sub.add_argument("--topic", required=True)
        sub.add_argument("--client", required=True)
        sub.add_argument("--out", required=True)
    p = modes.choices["produce"]
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--idempotent", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--acks", choices=["all", "1"], default="all")
    p.add_argument("--keys", type=int)
    p.add_argument("--flush-s", type=float, default=40)
    c = modes.choices["consume"]
    how = c.add_mutually_exclusive_group(required=True)
    how.add_argument("--group")
    how.add_argument("--assign", help="partitions, comma-separated")
    c.add_argument("--strategy", choices=["cooperative-sticky", "range"], default="cooperative-sticky")
    c.add_argument("--stop-file", required=True)
    c.add_argument("--commit-every-s", type=float, default=1)
    c.add_argument("--idle-s", type=float, default=3)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: STOP.set())
    return produce(args) if args.mode == "produce" else consume(args)


if __name__ == "__main__":
    sys.exit(main())
