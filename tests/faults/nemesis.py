"""The faults of each scenario, as nemesis functions `(run, cluster, until)`: each does its faults
until the time `until`, choosing what to hit with the run's seeded generator and logging every
fault through the cluster's FaultLog. Healing is not theirs: the run heals everything after.

Each keeps one rule: it leaves the cluster able to heal (it never deletes a node's data, and what
it breaks, `FaultCluster.heal_all` undoes), and it waits for the cluster to have seen a fault
(a new leader, a shrunk in-sync set) before the next, so that each round is a real failover.
"""
import os
import time

from harness import wait_until
from scenario import PARTITIONS, TOPIC


def _leader(cluster, partition, timeout_s=30, avoid=()):
    """The live leader of `partition`, once Metadata names one not in `avoid`."""
    def check():
        leader = cluster.leader_of(TOPIC, partition)
        return leader if leader > 0 and leader not in avoid and cluster.node(leader).alive() else None
    return wait_until(f"a leader of {TOPIC}-{partition} not in {list(avoid)}", check, timeout_s, 0.2)


def _in_sync(cluster, timeout_s=60):
    wait_until("every partition fully in sync", lambda: cluster.fully_in_sync(TOPIC, PARTITIONS), timeout_s, 0.3)


def leader_chasing(run, cluster, until, rounds=10):
    """Kills the leader of a random partition with SIGKILL, waits for the next leader, starts the
    killed node again; `rounds` times (more in the long form, until `until`)."""
    done = 0
    while done < rounds or time.time() < until:
        p = run.random.randrange(PARTITIONS)
        victim = _leader(cluster, p)
        cluster.node(victim).kill()
        cluster.log(f"kill node {victim}, leader of {TOPIC}-{p}")
        _leader(cluster, p, avoid=(victim,))
        run.sleep(0.2, 1.0, until + 60)
        cluster.node(victim).start()
        cluster.log(f"start node {victim}")
        _in_sync(cluster)
        done += 1


def random_partitions(run, cluster, until):
    """Network partitions among the brokers, chosen at random: one node isolated, a majority and
    a minority, or a one-way cut; held for 2-5 s, then healed for 2-4 s."""
    ids = [n.id for n in cluster.nodes]
    while time.time() < until:
        kind = run.random.choice(["isolate", "split", "cut"])
        if kind == "isolate":
            victim = run.random.choice(ids)
            cluster.network.isolate(victim)
            cluster.log(f"partition: isolate node {victim}")
        elif kind == "split":
            shuffled = run.random.sample(ids, len(ids))
            minority = shuffled[: (len(ids) - 1) // 2]
            cluster.network.partition([shuffled[len(minority):], minority])
            cluster.log(f"partition: {sorted(shuffled[len(minority):])} | {sorted(minority)}")
        else:
            a, b = run.random.sample(ids, 2)
            cluster.network.cut(a, b)
            cluster.log(f"partition: one-way cut {a} -> {b}")
        run.sleep(2, 5, until)
        cluster.network.heal()
        cluster.log("partition: heal")
        run.sleep(2, 4, until)


def isr_shrink_then_cut_leader(run, cluster, until):
    """Kafka's 2013 loss (Jepsen): the followers of a partition are cut off from its leader until
    the in-sync set has shrunk to the leader alone (acks=all is then refused, with
    min.insync.replicas=2), then the leader is cut off from everything. The controller must not
    elect a replica that was out of the in-sync set; the partition waits for its leader."""
    p = run.random.randrange(PARTITIONS)
    leader = _leader(cluster, p)
    followers = [b.id for b in cluster.brokers if b.id != leader]
    for f in followers:
        cluster.network.cut(leader, f)
        cluster.network.cut(f, leader)
    cluster.log(f"partition: cut {TOPIC}-{p}'s leader {leader} from its followers {followers}")
    wait_until(f"{TOPIC}-{p}'s in-sync set shrunk to its leader {leader}",
               lambda: (cluster.partitions(TOPIC) or {}).get(p, (0, 0, ()))[2] == (leader,), 30, 0.3)
    cluster.log(f"isr of {TOPIC}-{p} is ({leader},)")
    run.sleep(1, 2, until + 5)
    cluster.network.isolate(leader)
    cluster.log(f"partition: isolate the leader {leader}")
    deadline = time.time() + 6
    while time.time() < deadline:
        view = (cluster.partitions(TOPIC) or {}).get(p)
        assert view is None or view[0] in (leader, -1), \
            f"{TOPIC}-{p} got leader {view[0]}, which was out of the in-sync set {(leader,)}"
        time.sleep(0.3)
    cluster.log(f"{TOPIC}-{p} stayed without another leader for 6 s")
    time.sleep(max(0.0, until - time.time()))


def double_failover(run, cluster, until, rounds=3):
    """KIP-101: the leader is killed while a follower holds only part of its log; the new leader
    is killed soon after; the first comes back, then the second. Repeated `rounds` times."""
    done = 0
    while done < rounds or time.time() < until:
        p = run.random.randrange(PARTITIONS)
        first = _leader(cluster, p)
        cluster.node(first).kill()
        cluster.log(f"kill node {first}, leader of {TOPIC}-{p}")
        second = _leader(cluster, p, avoid=(first,))
        run.sleep(0.1, 0.5, until + 60)
        cluster.node(second).kill()
        cluster.log(f"kill node {second}, the next leader of {TOPIC}-{p}")
        run.sleep(0.5, 1.5, until + 60)
        for n in (first, second):
            cluster.node(n).start()
            cluster.log(f"start node {n}")
            run.sleep(0.5, 2, until + 60)
        _in_sync(cluster)
        done += 1


def last_replica_standing(run, cluster, until):
    """KIP-966: a partition's replicas fail one by one, each after the in-sync set has dropped
    the one before; the first to fail comes back first and must not lead (no unclean election);
    then the last to fail comes back and leads with everything that was committed."""
    p = run.random.randrange(PARTITIONS)
    leader = _leader(cluster, p)
    order = [b.id for b in cluster.brokers if b.id != leader] + [leader]
    run.random.shuffle(order[:-1])
    for i, n in enumerate(order):
        cluster.node(n).kill()
        cluster.log(f"kill node {n} ({i + 1} of {len(order)} replicas of {TOPIC}-{p})")
        if i < len(order) - 1:
            wait_until(f"node {n} out of {TOPIC}-{p}'s in-sync set",
                       lambda: n not in (cluster.partitions(TOPIC) or {}).get(p, (0, 0, (n,)))[2], 30, 0.3)
    cluster.node(order[0]).start()
    cluster.log(f"start node {order[0]}, the first to fail")
    deadline = time.time() + 6
    while time.time() < deadline:
        view = (cluster.partitions(TOPIC) or {}).get(p)
        # -1, or the last to fail until the controller has fenced it (the session timeout).
        assert view is None or view[0] in (-1, order[-1]), \
            f"{TOPIC}-{p} led by {view[0]}, which was not in the in-sync set ({order[-1]},)"
        time.sleep(0.3)
    cluster.log(f"{TOPIC}-{p} stayed without a leader for 6 s")
    cluster.node(order[-1]).start()
    cluster.log(f"start node {order[-1]}, the last to fail")
    _leader(cluster, p)


def corrupt_follower_segment(run, cluster, until, rounds=2):
    """A follower is killed, bytes in the middle of its active segment's last batches are flipped
    on disk, and it is started again: its recovery must drop what fails its CRC, and it must
    catch up from the leader without serving or keeping the corrupted records."""
    for _ in range(rounds):
        p = run.random.randrange(PARTITIONS)
        leader = _leader(cluster, p)
        follower = run.random.choice([b.id for b in cluster.brokers if b.id != leader])
        node = cluster.node(follower)
        node.kill()
        segment = max((node.data_dir / f"{TOPIC}-{p}").glob("*.log"), key=lambda s: int(s.stem))
        at = _flip_bytes(segment, run.random)
        cluster.log(f"corrupt node {follower}'s {segment.name} of {TOPIC}-{p} at byte {at}")
        node.start()
        cluster.log(f"start node {follower}")
        _in_sync(cluster)
        run.sleep(1, 3, until)


def _flip_bytes(segment, rng):
    """Flips 16 bytes about three quarters into the segment's data (its zero tail excluded)."""
    data = bytearray(segment.read_bytes())
    end = len(data.rstrip(b"\0"))
    at = max(0, int(end * rng.uniform(0.6, 0.9)))
    for i in range(at, min(at + 16, end)):
        data[i] ^= 0xFF
    with open(segment, "r+b") as f:
        f.seek(at)
        f.write(data[at:at + 16])
        os.fsync(f.fileno())
    return at


def zombie_leader(run, cluster, until, rounds=2):
    """The leader is stopped with SIGSTOP long enough to be fenced and replaced, then continued:
    whatever it still holds in flight must not be acknowledged under its old epoch."""
    for _ in range(rounds):
        p = run.random.randrange(PARTITIONS)
        victim = _leader(cluster, p)
        cluster.node(victim).pause()
        cluster.log(f"pause node {victim}, leader of {TOPIC}-{p}")
        _leader(cluster, p, avoid=(victim,))
        run.sleep(1, 3, until + 30)
        cluster.node(victim).resume()
        cluster.log(f"resume node {victim}")
        _in_sync(cluster)
        run.sleep(1, 2, until)


def coordinator_restarts(run, cluster, until, rounds=4):
    """The group coordinator of the consumers' group is killed (or stopped cleanly) and started
    again, `rounds` times: committed offsets must not go back, no record may be skipped."""
    for i in range(rounds):
        coordinator = _coordinator(cluster, "g1")
        node = cluster.node(coordinator)
        if i % 2 == 0:
            node.kill()
            cluster.log(f"kill node {coordinator}, coordinator of g1")
        else:
            node.terminate()
            cluster.log(f"terminate node {coordinator}, coordinator of g1")
        run.sleep(1, 3, until + 30)
        node.start()
        cluster.log(f"start node {coordinator}")
        _in_sync(cluster)
        run.sleep(2, 4, until)


def _coordinator(cluster, group):
    def check():
        try:
            admin = cluster.admin()  # held while its future is pending
            desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
            return desc.coordinator.id if desc.coordinator and desc.coordinator.id > 0 else None
        except Exception:
            return None
    return wait_until(f"the coordinator of {group}", check, 30, 0.5)


def full_disk(run, cluster, until, node_id=1, filler_bytes=None):
    """The log directory of `node_id` (a small tmpfs) is filled up with a file while it leads:
    it must take the directory offline (a single directory: the broker stops, as Kafka halts),
    leadership moves, nothing acknowledged is lost. Healing removes the file and starts it."""
    node = cluster.node(node_id)
    p = next((q for q in range(PARTITIONS) if cluster.leader_of(TOPIC, q) == node_id), None)
    cluster.log(f"node {node_id} leads {TOPIC}-{p}" if p is not None else f"node {node_id} leads nothing")
    filler = node.data_dir / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    cluster.log(f"full disk on node {node_id}")
    wait_until(f"node {node_id} stopped on its full disk", lambda: not node.alive(), 60, 0.3)
    cluster.log(f"node {node_id} stopped")
    if p is not None:
        _leader(cluster, p, avoid=(node_id,))
    time.sleep(max(0.0, until - time.time()))
    filler.unlink()
    cluster.log(f"free disk on node {node_id}")


def clock_jumps(run, cluster, until):
    """The wall clock of one broker (started under libfaketime) jumps forward and back by up to an
    hour, again and again; timers run on the monotonic clock and must not care."""
    jumpers = [n for n in cluster.nodes if n.faketime]
    # First, that a jump reaches the broker at all: its LogAppendTime moves by the jump.
    topic = _probe_topic(cluster)
    probe = cluster.node(_leader_of(cluster, topic))
    assert probe.faketime, f"node {probe.id} leads the clock probe but was not started under libfaketime"
    probe.jump_clock(3600)
    seen_s = _log_append_time_offset_s(cluster, topic)
    assert 3000 < seen_s < 4200, f"node {probe.id}'s clock moved {seen_s:.0f} s, not about +3600 s"
    cluster.log(f"clock node {probe.id} +3600 s (its LogAppendTime moved {seen_s:.0f} s)")
    while time.time() < until:
        node = run.random.choice(jumpers)
        offset_s = run.random.choice([-3600, -600, -60, 60, 600, 3600])
        node.jump_clock(offset_s)
        cluster.log(f"clock node {node.id} {offset_s:+d} s")
        run.sleep(2, 5, until)
        if run.random.random() < 0.3:
            victim = _leader(cluster, run.random.randrange(PARTITIONS))
            cluster.node(victim).kill()
            cluster.log(f"kill node {victim} (clock jumps)")
            run.sleep(1, 2, until + 30)
            cluster.node(victim).start()
            cluster.log(f"start node {victim}")


def _probe_topic(cluster):
    """A topic of one partition and one replica, whose records get the broker's LogAppendTime."""
    from confluent_kafka.admin import NewTopic
    topic = f"clock-probe-{int(time.time() * 1000)}"
    admin = cluster.admin()  # held while its future is pending
    config = {"message.timestamp.type": "LogAppendTime", "min.insync.replicas": "1"}
    admin.create_topics([NewTopic(topic, 1, replication_factor=1, config=config)],
                        request_timeout=30)[topic].result(40)
    return topic


def _leader_of(cluster, topic):
    return wait_until(f"a leader of {topic}", lambda: max(cluster.leader_of(topic, 0), 0), 30, 0.2)


def _log_append_time_offset_s(cluster, topic):
    """How far from the real clock the leader of `topic` stamps a record's LogAppendTime."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    producer = Producer({"bootstrap.servers": cluster.bootstrap})
    sent_at = time.time()
    producer.produce(topic, value=b"tick", partition=0)
    assert producer.flush(30) == 0, "the clock probe was not acknowledged"
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "clock-probe"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        msg = wait_until("the clock probe read back", lambda: consumer.poll(1), 30, 0)
        return msg.timestamp()[1] / 1000 - sent_at
    finally:
        consumer.close()


SOAK_FAULTS = [leader_chasing, random_partitions, double_failover, zombie_leader, coordinator_restarts]


def soak(run, cluster, until):
    """All of the above at random until `until` (the hour-long soak; on demand)."""
    while time.time() < until:
        fault = run.random.choice(SOAK_FAULTS)
        cluster.log(f"soak: {fault.__name__}")
        step_until = min(until, time.time() + 30)
        if fault in (leader_chasing, double_failover):
            fault(run, cluster, step_until, rounds=1)
        else:
            fault(run, cluster, step_until)
        cluster.heal_all()
        _in_sync(cluster, 120)

