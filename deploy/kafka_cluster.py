"""A KRaft Kafka cluster of several brokers on this machine, from the same jars as LocalKafka.

Each node is its own process with its own ports and data directory, a broker and a voter of
the controller quorum at once; internal topics keep a replica on every node (at most three)
and need all but one in sync. For fault tests: kill or stop one node, start it again.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from deploy._process import (
    LOCALHOST,
    InfraError,
    Started,
    free_port,
    read_state,
    write_state,
)
from deploy.kafka_local import LocalKafka, _new_cluster_id, _run_async, default_cache_dir

__all__ = ["LocalKafkaCluster"]


class LocalKafkaCluster(Started):
    """`size` combined broker+controller nodes; ports and cluster id kept across restarts."""

    def __init__(self, data_dir: Path, size: int = 3, cache_dir: Path | None = None) -> None:
        """Describe a cluster keeping each node's data under data_dir/node-<id>."""
        if size < 1:
            raise InfraError("a cluster needs at least one node")
        self.data_dir = data_dir.resolve()
        self.size = size
        self._cache_dir = cache_dir or default_cache_dir()
        self.nodes: list[LocalKafka] = []

    @property
    def bootstrap_servers(self) -> str:
        """Every node's PLAINTEXT listener, comma-separated."""
        if not self.nodes:
            raise InfraError("the cluster has not been started yet")
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        """The node of this id (1-based, as Kafka numbers them)."""
        return next(n for n in self.nodes if n.node_id == node_id)

    def start(self, timeout: float = 180.0) -> None:
        """Launch every node, then wait until each answers (a quorum needs a majority first)."""
        if not self.nodes:
            self.nodes = self._describe_nodes()
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_ready(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node; also the leftovers of a run that was killed (its state names them)."""
        if not self.nodes and (self.data_dir / "state.json").is_file():
            self.nodes = self._describe_nodes()
        for node in reversed(self.nodes):
            with contextlib.suppress(InfraError, OSError):
                node.stop(timeout)

    def leaders(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """The node id leading each partition of the topics, as the cluster reports it now."""
        return {place: int(p["leader"]) for place, p in self._partitions(topics).items()}

    def in_sync(self, topics: list[str]) -> dict[tuple[str, int], set[int]]:
        """The in-sync replicas of each partition of the topics, as reported now."""
        return {place: set(map(int, p["isr"])) for place, p in self._partitions(topics).items()}

    def _partitions(self, topics: list[str]) -> dict[tuple[str, int], dict[str, Any]]:
        """Each partition's metadata (leader, replicas, isr) by (topic, partition)."""

        # Ask the running nodes only: a killed one stays in the metadata for a while.
        live = ",".join(n.bootstrap_servers for n in self.nodes if n.running)

        async def ask() -> list[dict[str, Any]]:
            admin = AIOKafkaAdminClient(bootstrap_servers=live)
            await admin.start()
            try:
                described: list[dict[str, Any]] = await admin.describe_topics(topics)
            finally:
                await admin.close()
            return described

        return {(t["topic"], p["partition"]): p for t in _run_async(ask) for p in t["partitions"]}

    def _describe_nodes(self) -> list[LocalKafka]:
        """Every node with its ports, chosen once and kept in state.json, and the shared id."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state_file = self.data_dir / "state.json"
        state = read_state(state_file)
        cluster_id = state.get("cluster_id")
        ports = state.get("ports")
        if not isinstance(cluster_id, str) or not isinstance(ports, list):
            cluster_id, ports = _new_cluster_id(), self._free_ports(2 * self.size)
            write_state(state_file, {"cluster_id": cluster_id, "ports": ports})
        controller_ports = ports[self.size :]
        voters = ",".join(f"{i + 1}@{LOCALHOST}:{port}" for i, port in enumerate(controller_ports))
        return [
            LocalKafka(
                self.data_dir / f"node-{i + 1}",
                port=ports[i],
                controller_port=controller_ports[i],
                cache_dir=self._cache_dir,
                node_id=i + 1,
                voters=voters,
                replicas=min(self.size, 3),
                cluster_id=cluster_id,
            )
            for i in range(self.size)
        ]

    @staticmethod
    def _free_ports(count: int) -> list[int]:
        """Distinct free ports (a port just released may be handed out again)."""
        ports: list[int] = []
        while len(ports) < count:
            port = free_port()
            if port not in ports:
                ports.append(port)
        return ports
