"""One fault scenario run from start to verdict: the cluster, the workload of mixed clients that
record a history, the faults (a nemesis function the scenario gives), healing, the read-back and
the checker's verdict, printed with the run's figures and added to the results table.

The run's shape, whatever the scenario:
1. a cluster (tests/faults/harness.py) and a topic of 3 partitions, RF 3, min.insync.replicas=2;
2. the workload (`MIX`: librdkafka, Java and Rust producers, idempotent and not, at acks=all; group
   consumers of all three clients committing; one librdkafka consumer by assign), started before
   the faults and producing throughout;
3. the nemesis for its time (scaled by FAULT_SCALE for the long form), every fault logged;
4. everything healed, every partition back to a full in-sync set, the producers stopped (each
   flushes, then reports what is still in flight as unknown), the consumers drained and stopped;
5. the final read from offset 0, each replica's segments decoded, and the checker over it all.

Invariants: a run is bounded in time (every wait has a limit); its clients and cluster are
stopped whatever happens; its seed is printed first, so that a failure can be rerun with
FAULT_SEED; the verdict's row goes to FAULT_RESULTS (default target/faults/results.md).
"""
import os
import random
import time
from pathlib import Path

import checker
import clients
from harness import (ROOT, FaultCluster, FaultLog, Pending, committed_offsets, end_offsets, final_events,
                     group_state, replica_events, wait_until, write_events)

TOPIC = "queue"
PARTITIONS = 3
SCALE = float(os.environ.get("FAULT_SCALE", "1"))
RESULTS = Path(os.environ.get("FAULT_RESULTS", ROOT / "target" / "faults" / "results.md"))

# (name, language, role, options): 6 producers and 5 consumers. The group's members share one
# assignment strategy (members without one in common are refused: INCONSISTENT_GROUP_PROTOCOL).
GROUP = {"group": "g1", "strategy": "range"}
MIX = [
    ("rdkafka-p1", "rdkafka", "producer", {"idempotent": True}),
    ("rdkafka-p2", "rdkafka", "producer", {"idempotent": False}),
    ("java-p1", "java", "producer", {"idempotent": True}),
    ("rust-p1", "rust", "producer", {"idempotent": True}),
    ("rust-p2", "rust", "producer", {"idempotent": False}),
    ("rdkafka-p3", "rdkafka", "producer", {"idempotent": True}),
    ("rdkafka-c1", "rdkafka", "consumer", GROUP),
    ("rdkafka-c2", "rdkafka", "consumer", GROUP),
    ("java-c1", "java", "consumer", GROUP),
    ("rust-c1", "rust", "consumer", GROUP),
    ("rdkafka-a1", "rdkafka", "consumer", {"assign": list(range(PARTITIONS))}),
]
RATE_PER_PRODUCER = 100  # records a second


def seed_of_run():
    seed = int(os.environ.get("FAULT_SEED", "0")) or random.randrange(1, 2**31)
    print(f"FAULT_SEED={seed}")
    return seed


class Run:
    """A scenario's run in `workdir`; `cluster(...)` makes its cluster, `go(...)` does the rest."""

    def __init__(self, name, workdir: Path, *, mix=MIX, topic_config=None, compacted=False):
        self.name, self.workdir, self.mix = name, workdir, mix
        self.topic_config = topic_config or {}
        self.compacted = compacted
        self.seed = seed_of_run()
        self.log = FaultLog(self.seed, workdir / "faults.log")
        self.random = self.log.random
        self.clients = []
        self.history_dir = workdir / "history"
        self.history_dir.mkdir(parents=True, exist_ok=True)
        self.stop_file = workdir / "consumers.stop"

    def cluster(self, **options):
        return FaultCluster(self.workdir, self.log, **options)

    def start_workload(self, cluster):
        for name, language, role, options in self.mix:
            out = self.history_dir / f"{name}.jsonl"
            start = getattr(clients, f"start_{language}_{role}")
            common = dict(bootstrap=cluster.bootstrap, topic=TOPIC, client=name, out=out)
            if role == "producer":
                keys = 50 if self.compacted else None
                self.clients.append(start(**common, count=10**7, rate=RATE_PER_PRODUCER,
                                          idempotent=options["idempotent"], keys=keys))
            else:
                self.clients.append(start(**common, stop_file=self.stop_file, **options))
        self.log(f"workload {len(self.clients)} clients")

    def go(self, cluster, nemesis, duration_s):
        """The whole run on a started cluster: topic, workload, `nemesis(self, cluster, until)`,
        healing, read-back and verdict; returns the checker's result (asserted valid)."""
        cluster.create_topic(TOPIC, PARTITIONS, 3, self.topic_config)
        try:
            self.start_workload(cluster)
            self.wait_group_stable(cluster)
            time.sleep(1)  # the producers get going
            until = time.time() + duration_s * SCALE
            nemesis(self, cluster, until)
            self.heal(cluster)
            result = self.verdict(cluster)
        finally:
            for c in self.clients:
                c.kill()
        assert result.valid, f"{self.name} (FAULT_SEED={self.seed}): {result.summary()}\n" \
            f"faults: {self.log.entries}"
        return result

    def heal(self, cluster):
        cluster.heal_all()
        wait_until("every partition led with a full in-sync set after healing",
                   lambda: cluster.fully_in_sync(TOPIC, PARTITIONS), 90, 0.5)
        time.sleep(2)  # the producers' retries reach the healed cluster
        for c in self.clients:
            if c.role == "producer":
                c.stop(timeout_s=60)
        self.wait_group_drained(cluster)
        self.stop_file.touch()
        for c in self.clients:
            if c.role == "consumer":
                c.stop(timeout_s=60, signal_first=False)

    def wait_group_stable(self, cluster, timeout_s=60):
        """Until every member of the group has joined and the group is stable, so that the
        faults hit a group that consumes."""
        members = sum(1 for _, _, role, opts in self.mix if role == "consumer" and opts.get("group"))
        if members:
            wait_until(f"group {GROUP['group']} stable with {members} members",
                       lambda: group_state(cluster, GROUP["group"]) == ("STABLE", members) or
                       Pending(group_state(cluster, GROUP["group"])), timeout_s, 0.5)
        self.log(f"group {GROUP['group']} stable")

    def wait_group_drained(self, cluster, timeout_s=90):
        """Until the group's committed offsets reach every partition's end: its members have
        read everything (a member that died or never joined fails the run here)."""
        if not any(opts.get("group") for _, _, role, opts in self.mix if role == "consumer"):
            return
        ends = {p: hw for p, hw in end_offsets(cluster.bootstrap, TOPIC, PARTITIONS).items()}
        wait_until(f"group {GROUP['group']} committed up to the ends {ends}",
                   lambda: committed_offsets(cluster, GROUP["group"], TOPIC, PARTITIONS) == ends or
                   Pending(committed_offsets(cluster, GROUP["group"], TOPIC, PARTITIONS)), timeout_s, 1)

    def verdict(self, cluster):
        events = checker.load(sorted(self.history_dir.glob("*.jsonl")))
        final, hws = final_events(cluster.bootstrap, TOPIC, PARTITIONS)
        replicas = replica_events(cluster, TOPIC, hws)
        write_events(self.workdir / "final.jsonl", final + replicas)
        result = checker.check(events + final + replicas,
                               compacted_topics=(TOPIC,) if self.compacted else (),
                               expect_all_consumed=True)
        faults = ", ".join(self.log.kinds())
        print(f"{self.name}: {result.summary()}\nfaults ({len(self.log.entries)}): {faults}; "
              f"high watermarks {hws}")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(result.table_row(self.name, faults, self.seed) + "\n")
        return result

    def sleep(self, low_s, high_s, until):
        """A random pause in [low_s, high_s], cut short at `until`."""
        time.sleep(max(0.0, min(self.random.uniform(low_s, high_s), until - time.time())))
