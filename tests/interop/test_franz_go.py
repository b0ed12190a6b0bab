"""franz-go (github.com/twmb/franz-go, from the Go module proxy): every codec with its idempotent
producer, reads from the start, the middle and a timestamp (ListOffsets), then a restart.

tests/run.sh builds tests/interop/go with `go build`; the binary is run here.
"""
import subprocess
from pathlib import Path

import workload as w

CLIENT = "franz-go"
DRIVER = Path(__file__).parent / "go" / "franz-interop"


def franz(*args, timeout=600) -> str:
    out = subprocess.run([str(DRIVER), *map(str, args)], capture_output=True, timeout=timeout, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def verify(bootstrap, topic):
    specs = []
    for p in range(w.PARTITIONS):
        n = w.count_in_partition(p)
        mid = w.middle_offset(p)
        specs += [f"{p}:0:{n}", f"{p}:{mid}:{n - mid}", f"{p}:t{w.SEEK_TS}:{n}"]
    reads = []
    for line in franz("consume", bootstrap, topic, *specs).splitlines():
        if line.startswith("# "):
            _, partition, start = line.split()
            reads.append((int(partition), int(start), []))
            continue
        offset, key, value, headers, ts = line.split("\t")
        hs = [tuple(h.split("=", 1)) for h in headers.split(",") if h]
        partition = reads[-1][0]
        reads[-1][2].append(w.Consumed(partition, int(offset), key.encode(), value.encode(),
                                       [(k, v.encode()) for k, v in hs], int(ts)))
    assert len(reads) == len(specs)
    for n, (p, start, records) in enumerate(reads):
        if n % 3 == 2:
            assert start == w.offset_for_timestamp(p, w.SEEK_TS)
        w.check_records(records, p, start, CLIENT)


def test_franz_go_round_trip_every_codec_and_restart(broker):
    assert DRIVER.exists(), "tests/interop/go is not built: tests/run.sh builds it"
    topics = [f"franz-{codec}" for codec in w.CODECS]
    for codec, topic in zip(w.CODECS, topics):
        franz("produce", broker.bootstrap, topic, codec, w.RECORDS)
        verify(broker.bootstrap, topic)
    broker.restart()
    for topic in topics:
        verify(broker.bootstrap, topic)
