"""The fault harness: a Quipu cluster of processes, each in a network namespace of its own, the
faults done to it (logged with their times), and the run that ends with everything healed and
read back for the checker.

This module owns:
- `Node`, one quipu process: combined (broker and controller), broker-only or controller-only,
  with its own data directory (optionally on a small tmpfs, for the full-disk scenario) and log
  file, started inside its namespace; `kill` (SIGKILL), `pause`/`resume` (SIGSTOP/SIGCONT),
  `terminate` (SIGTERM, a controlled shutdown) and `start` again on the same data;
- `FaultCluster`, N nodes on a private `Network` (tests/faults/network.py): clients in the root
  namespace reach every broker at its namespace address; faults are kills, pauses, network
  partitions (blackhole routes), a full disk and clock jumps (libfaketime's timestamp file);
- `FaultLog`, the faults done, with their times, and the seed of the generator that chose them;
- `final_events` and `replica_events`: after healing, every partition read from offset 0 to its
  high watermark by a client, and each replica's segment files decoded below that watermark.

Invariants: every process a cluster starts is stopped when it is closed, whatever state it is
in (a paused process is continued first, so that it can die); every fault is healed by
`heal_all`; nothing leaves the namespaces and the bridge the `Network` made.
"""
import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from log_reader import read_replica
from network import Network

ROOT = Path(__file__).resolve().parents[2]
QUIPU_BIN = Path(os.environ.get("TEST_QUIPU_BIN", ROOT / "target" / "debug" / "quipu"))
BROKER_PORT = 9092
CONTROLLER_PORT = 9093
FAKETIME_LIB = next(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"),
                    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"))

# Short session and lag times, so that failures are seen within seconds.
FAULT_SETTINGS = [
    "num.partitions=3",
    "default.replication.factor=3",
    "min.insync.replicas=2",
    "offsets.topic.replication.factor=3",
    "broker.session.timeout.ms=2000",
    "broker.heartbeat.interval.ms=300",
    "replica.lag.time.max.ms=3000",
    "controller.quorum.election.timeout.ms=500",
    "auto.create.topics.enable=false",
]


class Pending:
    """A falsy answer to `wait_until` that says what was seen."""

    def __init__(self, seen):
        self.seen = seen

    def __bool__(self):
        return False

    def __repr__(self):
        return repr(self.seen)


def wait_until(what, check, timeout_s=30, interval_s=0.2):
    """Calls `check` until it returns something truthy (returned); fails after `timeout_s`."""
    deadline = time.time() + timeout_s
    while True:
        last = check()
        if last:
            return last
        assert time.time() < deadline, f"never {what} within {timeout_s} s: last seen {last!r}"
        time.sleep(interval_s)


class FaultLog:
    """The faults of a run, in order: (seconds since the start, what); and the seed."""

    def __init__(self, seed: int, path: Path):
        self.seed = seed
        self.random = random.Random(seed)
        self.started = time.time()
        self.entries = []
        self.path = path

    def __call__(self, what: str):
        at = round(time.time() - self.started, 2)
        self.entries.append((at, what))
        with open(self.path, "a") as f:
            f.write(f"{at:8.2f} {what}\n")

    FAULT_KINDS = {"kill": "kill -9", "terminate": "SIGTERM", "pause": "SIGSTOP", "partition:": "partition",
                   "corrupt": "corrupt segment", "full": "full disk", "clock": "clock jump"}

    def kinds(self):
        """The faults done, as "kind ×count", for the table (entries that are not faults, such as
        starts and healing, are left out)."""
        counts = {}
        for _, what in self.entries:
            kind = self.FAULT_KINDS.get(what.split()[0])
            if kind and what != "partition: heal":
                counts[kind] = counts.get(kind, 0) + 1
        return [f"{kind} ×{n}" for kind, n in sorted(counts.items())]


class Node:
    """One quipu process in namespace `ns` at address `ip`."""

    def __init__(self, node_id, roles, ip, exec_prefix, data_dir: Path, settings):
        self.id, self.roles, self.ip = node_id, roles, ip
        self.exec_prefix = exec_prefix
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"node{node_id}.log"
        self.settings = settings
        self.proc = None
        self.paused = False
        self.clock_file = data_dir.parent / f"node{node_id}.faketime"
        self.faketime = False

    @property
    def is_broker(self):
        return "broker" in self.roles

    @property
    def bootstrap(self):
        return f"{self.ip}:{BROKER_PORT}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _env(self):
        env = dict(os.environ, RUST_LOG=os.environ.get("FAULT_RUST_LOG", "info"))
        if self.faketime:
            if not self.clock_file.exists():
                self.clock_file.write_text("+0s\n")
            # Only the wall clock jumps: monotonic timers keep running as they did.
            env.update(LD_PRELOAD=str(FAKETIME_LIB), FAKETIME_TIMESTAMP_FILE=str(self.clock_file),
                       FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
        return env

    def start(self):
        assert QUIPU_BIN.exists(), f"{QUIPU_BIN} missing: cargo build -p quipu-broker"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [a for s in self.settings for a in ("--set", s)]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.exec_prefix, str(QUIPU_BIN), "--data-dir", str(self.data_dir),
             "--listen", self.bootstrap, *args],
            stdout=log, stderr=log, env=self._env())
        self.paused = False
        port = BROKER_PORT if self.is_broker else CONTROLLER_PORT
        wait_until(f"node {self.id} listening", lambda: self._listening(port), 30, 0.05)

    def _listening(self, port):
        if self.proc.poll() is not None:
            raise RuntimeError(f"node {self.id} exited with {self.proc.returncode}: "
                               f"{self.log_text()[-3000:]}")
        try:
            socket.create_connection((self.ip, port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self):
        self.resume()
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()
        self.proc = None

    def pause(self):
        self.signal(signal.SIGSTOP)
        self.paused = self.alive()

    def resume(self):
        if self.paused:
            self.signal(signal.SIGCONT)
        self.paused = False

    def terminate(self, timeout_s=30):
        """SIGTERM (a controlled shutdown); SIGKILL if it has not stopped after `timeout_s`."""
        self.resume()
        self.signal(signal.SIGTERM)
        if self.proc:
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def jump_clock(self, offset_s: float):
        """The wall clock this node reads is `offset_s` from the real one (libfaketime reads the
        file on every call); the node must have been started with `faketime` set."""
        assert self.faketime, f"node {self.id} was not started under libfaketime"
        self.clock_file.write_text(f"{offset_s:+.0f}s\n")

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class FaultCluster:
    """`brokers` broker nodes and the metadata quorum: combined nodes (`controllers=0`: every
    broker is a voter) or `controllers` separate controller-only voters; each in its namespace."""

    def __init__(self, workdir: Path, log: FaultLog, *, brokers=3, controllers=0, settings=(),
                 faketime_nodes=(), tmpfs_nodes=None):
        self.workdir, self.log = workdir, log
        total = brokers + controllers
        self.network = Network(nodes=total, log=log)
        self.tmpfs = []
        voters = list(range(1, total + 1)) if controllers == 0 else list(range(brokers + 1, total + 1))
        voter_list = ",".join(f"{v}@{self.network.node_ip(v)}:{CONTROLLER_PORT}" for v in voters)
        self.nodes = []
        for i in range(1, total + 1):
            roles = ("broker,controller" if i in voters else "broker") if i <= brokers else "controller"
            data_dir = workdir / f"node{i}" / "data"
            if tmpfs_nodes and i in tmpfs_nodes:
                self._mount_tmpfs(data_dir, tmpfs_nodes[i])
            ip = self.network.node_ip(i)
            node_settings = [f"node.id={i}", f"process.roles={roles}",
                             f"controller.quorum.voters={voter_list}",
                             f"controller.listener={ip}:{CONTROLLER_PORT}", *FAULT_SETTINGS, *settings]
            node = Node(i, roles, ip, self.network.exec_prefix(i), data_dir, node_settings)
            node.faketime = i in faketime_nodes
            self.nodes.append(node)

    def _mount_tmpfs(self, data_dir: Path, size_bytes: int):
        data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(data_dir)], check=True)
        self.tmpfs.append(data_dir)

    @property
    def brokers(self):
        return [n for n in self.nodes if n.is_broker]

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.brokers)

    def node(self, node_id) -> Node:
        return self.nodes[node_id - 1]

    def start(self):
        for n in self.nodes:
            n.start()
        wanted = sorted(n.id for n in self.brokers)
        wait_until(f"every broker registered {wanted}", lambda: self.registered() == wanted, 60, 0.3)
        self.log(f"start {len(self.nodes)} nodes, brokers {wanted}")

    def registered(self):
        """The broker ids the cluster's Metadata lists (the unfenced brokers), or None."""
        try:
            return sorted(self.admin().list_topics(timeout=5).brokers)
        except Exception:
            return None

    def admin(self):
        return AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 5000})

    def create_topic(self, topic, partitions=3, replication=3, config=None):
        nt = NewTopic(topic, partitions, replication_factor=replication, config=config or {})
        admin = self.admin()  # held while its future is pending: a dropped client cancels it
        # The quorum may still be electing its first leader: wait for a controller up to 30 s.
        admin.create_topics([nt], request_timeout=30)[topic].result(40)
        wait_until(f"{topic} fully in sync", lambda: self.fully_in_sync(topic, partitions), 30)

    def partitions(self, topic):
        """{partition: (leader, replicas, isr)} as the cluster's Metadata states it, or None."""
        try:
            md = self.admin().list_topics(topic, timeout=5).topics[topic]
            if md.error:
                return None
            return {p: (m.leader, tuple(m.replicas), tuple(sorted(m.isrs))) for p, m in md.partitions.items()}
        except Exception:
            return None

    def fully_in_sync(self, topic, partitions):
        view = self.partitions(topic)
        return bool(view) and len(view) == partitions and all(
            v[0] > 0 and len(v[2]) == len(v[1]) for v in view.values())

    def leader_of(self, topic, partition):
        view = self.partitions(topic)
        return view[partition][0] if view and partition in view else -1

    def heal_all(self):
        """Every fault undone: the network healed, clocks back, paused nodes continued, stopped
        nodes started again."""
        self.network.heal()
        for n in self.nodes:
            if n.faketime:
                n.clock_file.write_text("+0s\n")
            if n.paused:
                n.resume()
            if not n.alive():
                n.start()
        self.log("heal all")

    def close(self):
        for n in self.nodes:
            n.resume()
            n.signal(signal.SIGTERM)
        for n in self.nodes:
            if n.proc is not None:
                try:
                    n.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()
                n.proc = None
        for d in self.tmpfs:
            subprocess.run(["umount", "-l", str(d)], check=False)
        self.network.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def final_events(bootstrap, topic, partitions, timeout_s=90):
    """Every record of `topic` from offset 0 to the high watermark, as `final` events, and the
    high watermark of each partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fault-final-reader",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": "read_uncommitted"})
    events, at_end = [], set()
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.time() + timeout_s
        while len(at_end) < partitions:
            assert time.time() < deadline, f"reading {topic} never reached the end of " \
                f"{set(range(partitions)) - at_end}"
            for m in c.consume(5000, timeout=1):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    raise AssertionError(f"final read: {m.error()}")
                at_end.discard(m.partition())
                events.append(_event("final", "final-reader", topic, m.partition(), m.offset(),
                                     m.key(), m.value()))
        hws = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        return events, hws
    finally:
        c.close()


def end_offsets(bootstrap, topic, partitions):
    """{partition: high watermark}."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fault-end-offsets"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def group_state(cluster, group):
    """(state name, member count) of a consumer group as DescribeGroups answers, or None."""
    try:
        admin = cluster.admin()  # held while its future is pending: a dropped client cancels it
        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
        return desc.state.name, len(desc.members)
    except Exception:
        return None


def committed_offsets(cluster, group, topic, partitions):
    """{partition: the group's committed offset} (-1001 where none), or None if not answered."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    try:
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
        admin = cluster.admin()
        answer = admin.list_consumer_group_offsets([request])[group].result(10)
        return {tp.partition: tp.offset for tp in answer.topic_partitions}
    except Exception:
        return None


def _event(kind, client, topic, partition, offset, key, value):
    text = (lambda b: None if b is None else (b.decode(errors="replace") if isinstance(b, bytes) else b))
    return {"type": kind, "client": client, "t": time.time(), "topic": topic, "partition": partition,
            "offset": offset, "key": text(key), "value": text(value)}


def replica_events(cluster: FaultCluster, topic, hws):
    """Each broker's replica of each partition, decoded from its segment files below the high
    watermark, as `replica` events (client = the node's name)."""
    events = []
    for n in cluster.brokers:
        for p, hw in hws.items():
            if not (n.data_dir / f"{topic}-{p}").exists():
                continue
            for offset, key, value in read_replica(n.data_dir, topic, p, hw):
                events.append(_event("replica", f"node{n.id}", topic, p, offset, key, value))
    return events


def write_events(path: Path, events):
    with open(path, "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
