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


def verify(bootstrap, topic):
    w.verify_driver_reads(CLIENT, lambda specs: java("consume", bootstrap, topic, *specs))


def test_java_client_round_trip_every_codec_and_restart(broker):
    assert (JAVA_DIR / "lib").exists(), "tests/interop/java is not built: tests/run.sh builds it"
    topics = [f"java-{codec}" for codec in w.CODECS]
    for codec, topic in zip(w.CODECS, topics):
        java("produce", broker.bootstrap, topic, codec, w.RECORDS)
        verify(broker.bootstrap, topic)
    broker.restart()
    for topic in topics:
        verify(broker.bootstrap, topic)
