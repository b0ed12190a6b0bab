#!/usr/bin/env python3
"""Apache Kafka as the reference: a single-node KRaft broker from Maven Central's jars, on loopback.

    python3 benches/kafka_reference.py start --port 19092 --dir /tmp/kafka-ref   # prints the pid
    python3 benches/kafka_reference.py stop --dir /tmp/kafka-ref

The jars (kafka_2.13 and kafka-tools 4.3.1 with their dependencies) come from Maven Central through
tests/interop/kafka/pom.xml, built here when missing. The broker gets its own port, a controller
port next to it, its own data directory, and a 1 GiB heap; `start` returns once it answers. The
broker logs (log4j 2, INFO) to server.log in its directory, its stdout and stderr go to kafka.log.
Benchmarks and tests import `KafkaReference` for the same.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POM = ROOT / "tests" / "interop" / "kafka" / "pom.xml"
LIB = POM.parent / "target" / "lib"
# The SLF4J 1.x binding for the broker's log4j-core (same version as the one kafka_2.13 brings),
# kept out of LIB: on the tools' classpath it would make them log, and tests parse their output.
LOG4J_VERSION = "2.25.4"
LOG_BINDING = POM.parent / "target" / "log-binding"


def ensure_jars():
    if not LIB.exists():
        subprocess.run(["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                        f"-DoutputDirectory={LIB}"], check=True)
    return f"{LIB}/*"


def ensure_log_binding():
    """The broker's classpath: LIB plus log4j-slf4j-impl, without which SLF4J has no binding and the
    broker logs nothing at all."""
    jar = LOG_BINDING / f"log4j-slf4j-impl-{LOG4J_VERSION}.jar"
    if not jar.exists():
        subprocess.run(["mvn", "-q", "-B", "-f", str(POM), "dependency:copy",
                        f"-Dartifact=org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
                        f"-DoutputDirectory={LOG_BINDING}"], check=True)
    return f"{ensure_jars()}{os.pathsep}{jar}"


def random_cluster_id() -> str:
    out = subprocess.run(["java", "-cp", ensure_jars(), "kafka.tools.StorageTool", "random-uuid"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


class KafkaReference:
    """One combined KRaft node: alone (the defaults), or node `node_id` of the quorum `voters`
    (`id@host:port,...`, the controller ports) formatted with the shared `cluster_id`."""

    def __init__(self, port: int, directory: Path, heap: str = "1G", node_id: int = 1, voters: str = None,
                 cluster_id: str = None, controller_port: int = None, extra_properties: dict = None):
        self.port, self.dir, self.heap = port, Path(directory), heap
        self.extra_properties = extra_properties or {}
        self.node_id, self.cluster_id = node_id, cluster_id
        self.controller_port = controller_port or port + 1
        self.voters = voters or f"{node_id}@127.0.0.1:{self.controller_port}"
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> Path:
        controller = self.controller_port
        props = self.dir / "server.properties"
        props.write_text(f"""process.roles=broker,controller
node.id={self.node_id}
controller.quorum.voters={self.voters}
listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={self.dir / 'data'}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
""" + "".join(f"{key}={value}\n" for key, value in self.extra_properties.items()))
        return props

    def _log_config(self) -> Path:
        """Log4j 2 configuration: INFO and above to server.log in the node's directory (stdout and
        stderr go to kafka.log)."""
        config = self.dir / "log4j2.properties"
        config.write_text(f"""status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {self.dir / 'server.log'}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
""")
        return config

    def start(self, timeout_s=90, wait=True):
        """Starts the broker; returns once it answers (with `wait`; a node of a quorum answers only
        once a majority of the voters run, so a cluster starts every node first)."""
        cp = ensure_jars()
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        if not (self.dir / "data" / "meta.properties").exists():
            cluster_id = self.cluster_id or random_cluster_id()
            subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
                           capture_output=True, check=True)
        log = open(self.dir / "kafka.log", "ab")
        self.proc = subprocess.Popen(["java", f"-Xmx{self.heap}", f"-Xms{self.heap}",
                                      f"-Dlog4j2.configurationFile={self._log_config()}",
                                      "-cp", ensure_log_binding(), "kafka.Kafka", str(props)],
                                     stdout=log, stderr=log)
        (self.dir / "kafka.pid").write_text(str(self.proc.pid))
        if not wait:
            return self
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            assert self.proc.poll() is None, (self.dir / "kafka.log").read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("Kafka did not start in time")

    def stop(self, timeout_s=60):
        pid = self.proc.pid if self.proc else int((self.dir / "kafka.pid").read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc is not None:
                if self.proc.poll() is not None:
                    return
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--port", type=int, default=19092)
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    k = KafkaReference(args.port, Path(args.dir))
    if args.action == "start":
        k.start()
        print(k.proc.pid)
    else:
        k.stop()


if __name__ == "__main__":
    sys.exit(main())
