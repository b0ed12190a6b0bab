"""Apache Kafka's Java client (kafka-clients from Maven Central): every codec, then a restart.

tests/run.sh builds tests/interop/java with Maven; the jar and its dependencies are run here.
"""
import subprocess
from pathlib import Path

import workload as w

CLIENT = "java"
JAVA_DIR = Path(__file__).parent / "java" / "target"
CLASSPATH = f"{JAVA_DIR / 'quipu-interop-0.1.0.jar'}:{JAVA_DIR / 'lib'}/*"


def java(*args, timeout=600) -> str:
    out = subprocess.run(["java", "-cp", CLASSPATH, "quipu.Interop", *map(str, args)],
                         capture_output=True, timeout=timeout, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def consume(bootstrap, topic, specs):
    """Runs one JVM for several reads; returns [(partition, start, records)] in spec order."""
    reads = []
    for line in java("consume", bootstrap, topic, *specs).splitlines():
        if line.startswith("# "):
            _, partition, start = line.split()
            reads.append((int(partition), int(start), []))
            continue
        offset, key, value, headers, ts = line.split("\t")
        hs = [tuple(h.split("=", 1)) for h in headers.split(",") if h]
        partition = reads[-1][0]
        reads[-1][2].append(w.Consumed(partition, int(offset), key.encode(), value.encode(),
                                       [(k, v.encode()) for k, v in hs], int(ts)))
    return reads


def verify(bootstrap, topic):
    specs = []
    for p in range(w.PARTITIONS):
        n = w.count_in_partition(p)
        mid = w.middle_offset(p)
        specs += [f"{p}:0:{n}", f"{p}:{mid}:{n - mid}", f"{p}:t{w.SEEK_TS}:{n}"]
    reads = consume(bootstrap, topic, specs)
    assert len(reads) == len(specs)
    for n, (p, start, records) in enumerate(reads):
        if n % 3 == 2:
            assert start == w.offset_for_timestamp(p, w.SEEK_TS)
        w.check_records(records, p, start, CLIENT)


def test_java_client_round_trip_every_codec_and_restart(broker):
    assert (JAVA_DIR / "lib").exists(), "tests/interop/java is not built: tests/run.sh builds it"
    topics = [f"java-{codec}" for codec in w.CODECS]
    for codec, topic in zip(w.CODECS, topics):
        java("produce", broker.bootstrap, topic, codec, w.RECORDS)
        verify(broker.bootstrap, topic)
    broker.restart()
    for topic in topics:
        verify(broker.bootstrap, topic)
