"""The local three-broker cluster's layout: its own ports, data and node id each, one quorum."""

from __future__ import annotations

from pathlib import Path

from deploy.kafka_cluster import LocalKafkaCluster
from deploy.kafka_local import _server_properties


def test_each_node_has_its_own_ports_data_and_id_in_one_quorum(tmp_path: Path) -> None:
    nodes = LocalKafkaCluster(tmp_path / "cluster", size=3)._describe_nodes()

    ports = [p for n in nodes for p in (n.port, n.controller_port)]
    assert [n.node_id for n in nodes] == [1, 2, 3]
    assert len(set(ports)) == 6
    assert len({n.data_dir for n in nodes}) == 3
    assert len({n._cluster_id for n in nodes}) == 1
    assert {n._voters for n in nodes} == {
        ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    }


def test_a_cluster_started_again_keeps_its_ports_and_id(tmp_path: Path) -> None:
    first = LocalKafkaCluster(tmp_path / "cluster", size=3)._describe_nodes()
    again = LocalKafkaCluster(tmp_path / "cluster", size=3)._describe_nodes()

    assert [(n.port, n.controller_port, n._cluster_id) for n in first] == [
        (n.port, n.controller_port, n._cluster_id) for n in again
    ]


def test_internal_topics_are_replicated_on_a_cluster_and_single_alone(tmp_path: Path) -> None:
    def settings(text: str) -> dict[str, str]:
        return dict(line.split("=", 1) for line in text.splitlines())

    alone = settings(_server_properties(tmp_path, 9092, 9093))
    node = settings(
        _server_properties(tmp_path, 9092, 9093, node_id=2, voters="1@a:1,2@b:2,3@c:3", replicas=3)
    )

    assert (alone["offsets.topic.replication.factor"], alone["min.insync.replicas"]) == ("1", "1")
    assert (node["node.id"], node["controller.quorum.voters"]) == ("2", "1@a:1,2@b:2,3@c:3")
    assert node["offsets.topic.replication.factor"] == node["default.replication.factor"] == "3"
    assert node["transaction.state.log.min.isr"] == node["min.insync.replicas"] == "2"
