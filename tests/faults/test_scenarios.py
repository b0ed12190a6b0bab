"""The fault scenarios of issue 15, each a named test in bounded time that prints its figures:
the checker's counts, the faults done, and the seed (FAULT_SEED reruns one; FAULT_SCALE=N makes
each N times longer: the long form). Every scenario must end with nothing acknowledged lost, no
duplicate from an idempotent producer, no two values at one offset, polls monotonic, nothing
skipped or unseen, and committed offsets never going back.

Clusters: 3 combined nodes (brokers and the metadata quorum), or 3 brokers beside 3
controller-only nodes where a scenario takes down more brokers than a quorum can lose.
"""
import os

import pytest

import nemesis
from scenario import Run

TEST_LIMIT_S = 300


def run_scenario(tmp_path, name, fault, duration_s, *, run_options=None, **cluster_options):
    run = Run(name, tmp_path, **(run_options or {}))
    with run.cluster(**cluster_options) as cluster:
        cluster.start()
        return run.go(cluster, fault, duration_s)


def test_leader_chasing(tmp_path, as_root):
    run_scenario(tmp_path, "leader chasing", nemesis.leader_chasing, 20)


def test_random_partitions_with_mixed_clients(tmp_path, as_root):
    run_scenario(tmp_path, "random partitions", nemesis.random_partitions, 40)


def test_isr_shrunk_to_leader_then_leader_cut_off(tmp_path, as_root):
    run_scenario(tmp_path, "2013: ISR shrink, leader cut off", nemesis.isr_shrink_then_cut_leader, 15,
                 controllers=3)


def test_kip101_double_failover(tmp_path, as_root):
    run_scenario(tmp_path, "KIP-101 double failover", nemesis.double_failover, 20)


def test_last_replica_standing(tmp_path, as_root):
    run_scenario(tmp_path, "last replica standing", nemesis.last_replica_standing, 10, controllers=3)


def test_follower_segment_corrupted_while_down(tmp_path, as_root):
    run_scenario(tmp_path, "corrupted follower segment", nemesis.corrupt_follower_segment, 15)


def test_zombie_leader(tmp_path, as_root):
    run_scenario(tmp_path, "zombie leader", nemesis.zombie_leader, 15)


def test_consumer_groups_under_coordinator_restarts(tmp_path, as_root):
    run_scenario(tmp_path, "coordinator restarts", nemesis.coordinator_restarts, 20)


def test_replicated_compacted_topic_under_kills(tmp_path, as_root):
    config = {"cleanup.policy": "compact", "segment.bytes": "65536", "min.cleanable.dirty.ratio": "0.01",
              "segment.ms": "2000"}
    run_scenario(tmp_path, "compacted topic under kills", nemesis.leader_chasing, 20,
                 run_options={"topic_config": config, "compacted": True})


def test_full_disk_on_a_leader(tmp_path, as_root):
    run_scenario(tmp_path, "full disk on a leader", nemesis.full_disk, 10,
                 tmpfs_nodes={1: 96 << 20}, settings=["log.segment.bytes=4194304"])


def test_clock_jumps(tmp_path, as_root):
    run_scenario(tmp_path, "clock jumps", nemesis.clock_jumps, 25, faketime_nodes=(1, 2, 3))


@pytest.mark.skipif(not os.environ.get("FAULT_SOAK_S"), reason="the soak runs on demand: FAULT_SOAK_S=3600")
def test_soak(tmp_path, as_root):
    run_scenario(tmp_path, "soak", nemesis.soak, float(os.environ["FAULT_SOAK_S"]))
