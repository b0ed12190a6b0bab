"""Apache Kafka's own tools (kafka-tools 4.3.1 from Maven Central) and confluent-kafka's AdminClient
against a 3-node Quipu cluster (combined nodes, a Raft metadata quorum) on loopback: topics created
with replication factor 3 through any node, the quorum described, the cluster id read back."""
import re

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from cluster import NODES, TOPIC_COMMAND, describe_partitions, run_tool, running_cluster
from cluster import tool as _tool

# Kafka's tools get two minutes each here.
TOOL_TIMEOUT_S = 120


def tool(main_class: str, *args) -> str:
    return _tool(main_class, *args, timeout=TOOL_TIMEOUT_S)


@pytest.fixture
def cluster(tmp_path):
    with running_cluster(tmp_path, ["num.partitions=3"]) as nodes:
        yield nodes


def test_kafka_topics_creates_and_describes_replicated_topics_through_any_node(cluster):
    for i, node in enumerate(cluster):
        tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", node.bootstrap, "--create",
             "--topic", f"replicated-{i}", "--partitions", "6", "--replication-factor", "3")
    out = tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", cluster[2].bootstrap,
               "--describe", "--topic", "replicated-0")
    assert "ReplicationFactor: 3" in out, out
    rows = [l for l in out.splitlines() if "Partition:" in l and "Leader:" in l]
    assert len(rows) == 6, out
    leaders = set()
    for row in rows:
        replicas = re.search(r"Replicas: ([\d,]+)", row).group(1).split(",")
        assert sorted(replicas) == ["1", "2", "3"], row
        leaders.add(re.search(r"Leader: (\d+)", row).group(1))
    assert leaders == {"1", "2", "3"}, f"leaders are spread over the brokers: {out}"
    # A factor above the brokers is refused, as Kafka refuses it.
    bad = run_tool(TOPIC_COMMAND, "--bootstrap-server", cluster[1].bootstrap, "--create", "--topic", "too-many",
                   "--partitions", "1", "--replication-factor", "4", timeout=TOOL_TIMEOUT_S)
    assert bad.returncode != 0 and "only 3 broker(s) are registered" in bad.stdout + bad.stderr, bad.stdout + bad.stderr
    listed = tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", cluster[1].bootstrap, "--list")
    assert {f"replicated-{i}" for i in range(NODES)} <= set(listed.split()), listed


def test_kafka_metadata_quorum_describes_the_leader_and_every_voter(cluster):
    status = tool("org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server", cluster[1].bootstrap,
                  "describe", "--status")
    leader = int(re.search(r"LeaderId:\s+(\d+)", status).group(1))
    assert leader in (1, 2, 3), status
    assert int(re.search(r"LeaderEpoch:\s+(\d+)", status).group(1)) >= 1, status
    assert int(re.search(r"HighWatermark:\s+(\d+)", status).group(1)) > 0, status
    voters = re.search(r"CurrentVoters:\s+(.*)", status).group(1)
    assert all(f'"id": {i}' in voters or f"{i}" in voters for i in (1, 2, 3)), status
    replication = tool("org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server",
                       cluster[0].bootstrap, "describe", "--replication")
    rows = [l.split() for l in replication.splitlines()[1:] if l.strip()]
    assert sorted(int(r[0]) for r in rows) == [1, 2, 3], replication
    assert any(r[-1] == "Leader" for r in rows) and sum(r[-1] == "Follower" for r in rows) == 2, replication
    ends = [int(r[2]) for r in rows]
    assert min(ends) > 0, f"every voter has the log: {replication}"


def test_kafka_cluster_id_and_confluent_admin_see_one_cluster(cluster):
    text = (cluster[0].data_dir / "meta.properties").read_text()
    cluster_id = re.search(r"cluster.id=(\S+)", text).group(1)
    for node in cluster:
        out = tool("org.apache.kafka.tools.ClusterTool", "cluster-id", "--bootstrap-server", node.bootstrap)
        assert f"Cluster ID: {cluster_id}" in out, out
        assert cluster_id in (node.data_dir / "meta.properties").read_text()
    admin = AdminClient({"bootstrap.servers": cluster[2].bootstrap})
    described = admin.describe_cluster().result(timeout=30)
    assert described.cluster_id == cluster_id
    assert sorted(n.id for n in described.nodes) == [1, 2, 3]
    assert described.controller is not None and described.controller.id in (1, 2, 3)
    meta = admin.list_topics(timeout=10)
    assert sorted(meta.brokers) == [1, 2, 3]
    assert meta.controller_id == described.controller.id


def describe_rows(bootstrap, topic):
    """kafka-topics --describe: {partition: (leader, replicas)}."""
    rows, _ = describe_partitions(bootstrap, topic, timeout=TOOL_TIMEOUT_S)
    return {p: (leader, replicas) for p, (leader, replicas, _) in rows.items()}


def topic_command_fails(bootstrap, *args) -> str:
    bad = run_tool(TOPIC_COMMAND, "--bootstrap-server", bootstrap, *args, timeout=TOOL_TIMEOUT_S)
    assert bad.returncode != 0, bad.stdout
    return bad.stdout + bad.stderr


def test_kafka_topics_manual_replica_assignments_are_kept_and_checked(cluster):
    tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", cluster[1].bootstrap, "--create",
         "--topic", "manual", "--replica-assignment", "2:3,3:1,1:2")
    assert describe_rows(cluster[0].bootstrap, "manual") == {
        0: ("2", "2,3"), 1: ("3", "3,1"), 2: ("1", "1,2")}
    # New partitions as assigned, with as many replicas as the topic's others.
    tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", cluster[2].bootstrap, "--alter",
         "--topic", "manual", "--partitions", "4", "--replica-assignment", "2:3,3:1,1:2,3:2")
    assert describe_rows(cluster[2].bootstrap, "manual")[3] == ("3", "3,2")
    # The broker checks what kafka-topics checks too, for clients that do not.
    admin = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    with pytest.raises(KafkaException) as refused:
        admin.create_partitions([NewPartitions("manual", 5, replica_assignment=[[1]])])["manual"].result(30)
    assert refused.value.args[0].code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, refused.value
    with pytest.raises(KafkaException) as refused:
        admin.create_topics([NewTopic("twice", 1, replica_assignment=[[1, 1]])])["twice"].result(30)
    assert refused.value.args[0].code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, refused.value
    # A broker that is not registered, as Kafka's controller refuses it.
    out = topic_command_fails(cluster[0].bootstrap, "--create", "--topic", "nowhere",
                              "--replica-assignment", "1:7")
    assert "no such broker is registered" in out, out
    listed = tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", cluster[1].bootstrap, "--list")
    assert "nowhere" not in listed.split()
