"""Apache Kafka's own DumpLogSegments (kafka-tools 4.3.1 from Maven Central) reads Quipu's segments
and indexes and reports no error: our files are in Kafka's on-disk layout, byte for byte."""
import subprocess
from pathlib import Path

from confluent_kafka import Producer

import workload as w

KAFKA_LIB = Path(__file__).parent / "kafka" / "target" / "lib"
PER_CODEC = 5000


def dump(*args) -> str:
    out = subprocess.run(["java", "-cp", f"{KAFKA_LIB}/*", "org.apache.kafka.tools.DumpLogSegments", *args],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    # DumpLogSegments reports mismatches on stderr.
    return out.stdout + out.stderr


def assert_offsets_consecutive(out: str):
    """DumpLogSegments (4.3) starts its offset check at -1 in every file, so it reports the first
    offset of each segment after the first as "-1 is followed by <base offset>"; any other gap it
    reports is a real one."""
    current = None
    for line in out.splitlines():
        if line.startswith("Non-consecutive offsets in "):
            current = int(Path(line.split(" in ", 1)[1].strip()).name.split(".")[0])
        elif current is not None and "is followed by" in line:
            before, after = (int(x) for x in line.strip().split(" is followed by "))
            assert (before, after) == (-1, current), f"gap in segment {current}: {line.strip()}"
        else:
            current = None


def test_dump_log_segments_verifies_our_segments_and_indexes(tmp_path):
    assert KAFKA_LIB.exists(), "tests/interop/kafka is not built: tests/run.sh builds it"
    from conftest import Broker
    # Small segments and batches: many segments, each with index entries.
    broker = Broker(tmp_path / "data", ["--set", "num.partitions=2", "--set", "log.segment.bytes=65536",
                                        "--set", "log.index.interval.bytes=1024"])
    broker.start()
    try:
        for codec in w.CODECS:
            p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": codec, "linger.ms": 0,
                          "batch.size": 2000})
            for i in range(PER_CODEC):
                p.produce("dump", key=w.key(i), value=w.value(i), headers=w.headers(i, "dump"), partition=i % 2,
                          timestamp=w.timestamp(i))
                p.poll(0)
            assert p.flush(60) == 0
    finally:
        broker.stop()  # clean shutdown: the active segment and indexes are trimmed as Kafka leaves them

    logs = sorted((tmp_path / "data").glob("dump-*/*.log"))
    indexes = sorted((tmp_path / "data").glob("dump-*/*.index")) + sorted((tmp_path / "data").glob("dump-*/*.timeindex"))
    assert len(logs) > 10, f"expected many segments, got {len(logs)}"
    out = dump("--deep-iteration", "--files", ",".join(map(str, logs)))
    assert "isvalid: false" not in out
    assert "isvalid: true" in out
    for bad in ["invalid bytes", "Exception", "error"]:
        assert bad not in out, f"{bad!r} in DumpLogSegments output"
    assert_offsets_consecutive(out)
    records = sum(1 for line in out.splitlines() if line.startswith("| offset:"))
    assert records == PER_CODEC * len(w.CODECS)

    out = dump("--verify-index-only", "--files", ",".join(map(str, indexes)))
    assert out.count("Dumping") == len(indexes)
    for bad in ["Mismatches", "mismatch", "out of order", "not found", "Exception"]:
        assert bad not in out, f"{bad!r} in DumpLogSegments index verification:\n{out[-3000:]}"


def test_dump_log_segments_reads_compacted_segments_and_producer_snapshots(tmp_path):
    """Segments the cleaner rewrote (offsets with gaps, compressed batches rebuilt) and the producer
    snapshots of an idempotent producer are read by Kafka's tool without error."""
    assert KAFKA_LIB.exists(), "tests/interop/kafka is not built: tests/run.sh builds it"
    import time
    from confluent_kafka.admin import AdminClient, NewTopic
    from conftest import Broker
    broker = Broker(tmp_path / "data", ["--set", "log.cleaner.backoff.ms=100", "--set", "log.index.interval.bytes=512"])
    broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("dumpc", 1, 1, config={
            "cleanup.policy": "compact", "segment.bytes": "16384", "min.cleanable.dirty.ratio": "0.01"})])["dumpc"].result(30)
        p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 2,
                      "compression.type": "zstd"})
        for i in range(20_000):
            p.produce("dumpc", key=f"k{i % 100}".encode(), value=None if i % 17 == 0 else f"v{i}".encode())
            if i % 1000 == 0:
                p.poll(0)
        assert p.flush(60) == 0
        deadline = time.time() + 60
        while "cleaned log" not in broker.log_text() and time.time() < deadline:
            time.sleep(0.2)
        assert "cleaned log" in broker.log_text()
    finally:
        broker.stop()

    part = tmp_path / "data" / "dumpc-0"
    logs = sorted(part.glob("*.log"))
    out = dump("--deep-iteration", "--files", ",".join(map(str, logs)))
    assert "isvalid: true" in out and "isvalid: false" not in out
    assert "Exception" not in out and "invalid bytes" not in out
    records = sum(1 for line in out.splitlines() if line.startswith("| offset:"))
    assert 100 <= records < 20_000, records
    indexes = sorted(part.glob("*.index")) + sorted(part.glob("*.timeindex"))
    out = dump("--verify-index-only", "--files", ",".join(map(str, indexes)))
    for bad in ["Mismatches", "mismatch", "out of order", "not found", "Exception"]:
        assert bad not in out, f"{bad!r} in DumpLogSegments index verification:\n{out[-3000:]}"
    snapshots = sorted(part.glob("*.snapshot"))
    assert snapshots, "producer snapshots are written at rolls and shutdown"
    out = dump("--files", ",".join(map(str, snapshots)))
    assert "producerId:" in out and "Exception" not in out, out[-3000:]
