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
    w.verify_driver_reads(CLIENT, lambda specs: franz("consume", bootstrap, topic, *specs))


def test_franz_go_round_trip_every_codec_and_restart(broker):
    assert DRIVER.exists(), "tests/interop/go is not built: tests/run.sh builds it"
    topics = [f"franz-{codec}" for codec in w.CODECS]
    for codec, topic in zip(w.CODECS, topics):
        franz("produce", broker.bootstrap, topic, codec, w.RECORDS)
        verify(broker.bootstrap, topic)
    broker.restart()
    for topic in topics:
        verify(broker.bootstrap, topic)
