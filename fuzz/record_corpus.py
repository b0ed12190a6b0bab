#!/usr/bin/env python3
"""Records the fuzz targets' seed corpus from real clients: a proxy between librdkafka
(confluent-kafka), kafka-python, kcat and Kafka's own Java tools and a Quipu broker keeps every
request frame they send, then the broker's files give record batches, metadata-log records and
__consumer_offsets keys and values. Writes fuzz/corpus/<target>/; commit what it writes.

Usage: fuzz/record_corpus.py [quipu binary]   (default: target/debug/quipu)
"""
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
MAX_SEED_BYTES = 32 * 1024
PER_KIND = 6

# The first version of each API whose request header is v2 (flexible), as Kafka's specs say.
FLEXIBLE_FROM = {0: 9, 1: 12, 2: 6, 3: 9, 8: 8, 9: 6, 10: 3, 11: 6, 12: 4, 13: 4, 14: 4, 15: 5,
                 16: 3, 18: 3, 19: 5, 20: 4, 21: 2, 22: 2, 23: 4, 32: 4, 33: 2, 37: 2, 42: 2,
                 44: 1, 47: 99, 60: 0}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uvarint(buf, at):
    value, shift = 0, 0
    while True:
        b = buf[at]
        at += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, at
        shift += 7


def svarint(buf, at):
    v, at = uvarint(buf, at)
    return (v >> 1) ^ -(v & 1), at


class Recorder:
    def __init__(self):
        self.frames = []
        self.lock = threading.Lock()

    def keep(self, frame):
        with self.lock:
            self.frames.append(frame)


def pipe(src, dst, recorder):
    buf = b""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            if recorder is None:
                continue
            buf += data
            while len(buf) >= 4:
                n = struct.unpack(">i", buf[:4])[0]
                if len(buf) < 4 + n:
                    break
                recorder.keep(buf[4:4 + n])
                buf = buf[4 + n:]
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxy(listen_port, broker_port, recorder):
    server = socket.create_server(("127.0.0.1", listen_port))
    def accept():
        while True:
            client, _ = server.accept()
            upstream = socket.create_connection(("127.0.0.1", broker_port))
            threading.Thread(target=pipe, args=(client, upstream, recorder), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client, None), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()


def clients(bootstrap, kafka_lib):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
    from kafka import KafkaConsumer, KafkaProducer
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic("seed", 3, 1), NewTopic("seed-compact", 1, 1, config={"cleanup.policy": "compact"})]).values():
        f.result()
    for f in admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "seed")]).values():
        f.result()
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5})
        for i in range(50):
            p.produce("seed", key=f"k{i}", value=f"value {i} " * (i % 7), headers=[("h", b"x")])
            p.produce("seed-compact", key=f"k{i % 5}", value=f"v{i}")
        p.flush(10)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "seed-group", "auto.offset.reset": "earliest",
                  "group.instance.id": "seed-static"})
    c.subscribe(["seed"])
    got, deadline = 0, time.time() + 20
    while got < 100 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
    c.commit(asynchronous=False)
    c.close()
    kp = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", acks="all")
    for i in range(20):
        kp.send("seed", key=b"kp", value=b"kafka-python %d" % i)
    kp.flush()
    kp.close()
    kc = KafkaConsumer("seed", bootstrap_servers=bootstrap, group_id="seed-kp", auto_offset_reset="earliest",
                       consumer_timeout_ms=5000)
    for _ in kc:
        pass
    kc.commit()
    kc.close()
    for f in admin.delete_topics(["seed-compact"]).values():
        f.result()
    if shutil.which("kcat"):
        subprocess.run(["kcat", "-b", bootstrap, "-L"], capture_output=True, timeout=30)
        subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", "seed", "-e", "-o", "beginning"], capture_output=True, timeout=30)
    if kafka_lib.exists():
        cp = f"{kafka_lib}/*"
        subprocess.run(["java", "-cp", cp, "org.apache.kafka.tools.ProducerPerformance", "--topic", "seed",
                        "--num-records", "2000", "--record-size", "100", "--throughput", "-1",
                        "--producer-props", f"bootstrap.servers={bootstrap}", "batch.size=8192"],
                       capture_output=True, timeout=120)
        subprocess.run(["java", "-cp", cp, "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server",
                        bootstrap, "--topic", "seed", "--from-beginning", "--max-messages", "100",
                        "--group", "seed-console"], capture_output=True, timeout=120)


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def request_seeds(frames):
    kinds = {}
    for f in frames:
        if len(f) < 10 or len(f) > MAX_SEED_BYTES:
            continue
        api, version = struct.unpack(">hh", f[:4])
        at = 8
        (client_id_len,) = struct.unpack(">h", f[at:at + 2])
        at += 2 + max(client_id_len, 0)
        if version >= FLEXIBLE_FROM.get(api, 99):
            _, at = uvarint(f, at)  # no request header carries tagged fields in practice
        kinds.setdefault((api, version), []).append(f[:4] + f[at:])
        write("framing", hashlib.sha1(f).hexdigest()[:16], struct.pack(">B", 255) + struct.pack(">i", len(f)) + f)
    for (api, version), seeds in kinds.items():
        for s in seeds[:PER_KIND]:
            write("request_decode", f"{api}-{version}-{hashlib.sha1(s).hexdigest()[:12]}", s)


def batches(segment):
    data = segment.read_bytes()
    at = 0
    while at + 61 <= len(data):
        length = struct.unpack(">i", data[at + 8:at + 12])[0]
        if length <= 0:
            break
        yield data[at:at + 12 + length]
        at += 12 + length


def records(batch):
    """(key, value) of an uncompressed batch."""
    if struct.unpack(">h", batch[21:23])[0] & 7:
        return
    at = 61
    for _ in range(struct.unpack(">i", batch[57:61])[0]):
        _, at = svarint(batch, at)
        at += 1
        _, at = svarint(batch, at)
        _, at = svarint(batch, at)
        kl, at = svarint(batch, at)
        key = batch[at:at + kl] if kl >= 0 else None
        at += max(kl, 0)
        vl, at = svarint(batch, at)
        value = batch[at:at + vl] if vl >= 0 else None
        at += max(vl, 0)
        hc, at = svarint(batch, at)
        for _ in range(hc):
            hl, at = svarint(batch, at)
            at += hl
            hv, at = svarint(batch, at)
            at += max(hv, 0)
        yield key, value


def file_seeds(data):
    n = 0
    for seg in sorted(data.glob("seed-*/*.log")):
        for b in batches(seg):
            if n < 40 and len(b) <= MAX_SEED_BYTES:
                write("record_batch", f"batch-{n}", bytes([n % 16]) + b)
                n += 1
    log = data / "__cluster_metadata" / "metadata.log"
    raw = log.read_bytes()
    write("metadata_records", "whole-log", b"\x00" + raw)
    at, i = 0, 0
    while at + 8 <= len(raw):
        length = struct.unpack(">I", raw[at:at + 4])[0]
        write("metadata_records", f"record-{i}", b"\x01" + raw[at + 8:at + 8 + length])
        at += 8 + length
        i += 1
    i = 0
    for seg in sorted(data.glob("__consumer_offsets-*/*.log")):
        for b in batches(seg):
            for key, value in records(b):
                for part in (key, value):
                    if part and i < 60:
                        write("offsets_records", f"part-{i}", part)
                        i += 1


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "debug" / "quipu")
    work = Path(tempfile.mkdtemp())
    broker_port, proxy_port = free_port(), free_port()
    log = open(work / "quipu.log", "w")
    broker = subprocess.Popen([binary, "--data-dir", str(work / "data"), "--listen", f"127.0.0.1:{broker_port}",
                               "--set", f"advertised.listeners=127.0.0.1:{proxy_port}",
                               "--set", "group.initial.rebalance.delay.ms=0"], stdout=log, stderr=log)
    try:
        time.sleep(1)
        recorder = Recorder()
        proxy(proxy_port, broker_port, recorder)
        clients(f"127.0.0.1:{proxy_port}", ROOT / "tests" / "interop" / "kafka" / "target" / "lib")
        time.sleep(1)
    finally:
        broker.terminate()
        broker.wait(30)
    shutil.rmtree(CORPUS, ignore_errors=True)
    request_seeds(recorder.frames)
    file_seeds(work / "data")
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
