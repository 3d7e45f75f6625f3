"""Every topic as a declared resource: what `packages topics` applies and `--check` compares.

The declaration is the one place that says a topic's partitions, replication, minimum in-sync
replicas, retention and, for dead-letter topics, message size. Applying it creates what is
missing, raises partitions and sets the declared configs; it never lowers a partition count,
never deletes a topic and cannot raise replication (that is a reassignment an operator runs).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka.admin import NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaTimeoutError, TopicAlreadyExistsError, for_code

from contracts.codec import MAX_MESSAGE_BYTES
from contracts.topics import ALL_TOPICS, DLQ_SUFFIX, partitions
from services.kernel.settings import Settings
from services.ops.reading import admin

# A letter is its message plus the error headers: a DLQ must take more than its topic does, or
# a message at the broker's limit could not be parked. Services produce up to 2 MiB requests.
DLQ_MAX_MESSAGE_BYTES = 2 * MAX_MESSAGE_BYTES
HOUR_MS = 3_600_000
# Events are kept a week: long enough to replay a consumer group after a bad deploy.
RETENTION_MS = 7 * 24 * HOUR_MS
# Dead letters wait four weeks for an operator's fix and replay.
DLQ_RETENTION_MS = 28 * 24 * HOUR_MS
SETTLE_S = 30.0


@dataclass(frozen=True)
class TopicSpec:
    """One topic as it should be on the cluster."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drift:
    """One way a topic on the cluster differs from its declaration."""

    topic: str
    kind: Literal["missing", "partitions", "replication", "config"]
    detail: str = ""

    @property
    def fixable(self) -> bool:
        """Tell whether `apply` can mend it (a replication factor needs a reassignment)."""
        return self.kind != "replication"

    def __str__(self) -> str:
        return f"{self.topic}: {self.detail or self.kind}"


@dataclass
class Applied:
    """What applying the declaration changed, and the drift it cannot fix."""

    created: list[str] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)
    reconfigured: list[str] = field(default_factory=list)
    unfixable: list[Drift] = field(default_factory=list)


def topic_configs(topic: str, min_insync_replicas: int) -> dict[str, str]:
    """The configs a topic is declared with, beside the broker's defaults."""
    configs = {"min.insync.replicas": str(min_insync_replicas)}
    if topic.endswith(DLQ_SUFFIX):
        configs |= {
            "retention.ms": str(DLQ_RETENTION_MS),
            "max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES),
        }
    else:
        configs["retention.ms"] = str(RETENTION_MS)
    return configs


def declared(
    settings: Settings, default_partitions: int = 6, names: Iterable[str] = ALL_TOPICS
) -> list[TopicSpec]:
    """Every topic of the system as declared, with this deployment's replication."""
    return [
        TopicSpec(
            name,
            partitions(name, default_partitions),
            settings.topic_replication_factor,
            topic_configs(name, settings.min_insync_replicas),
        )
        for name in names
    ]


async def drift(settings: Settings, specs: Sequence[TopicSpec]) -> list[Drift]:
    """How the cluster differs from the declaration: missing, too few, too little, other."""
    async with admin(settings) as client:
        return await _drift(client, specs)


async def apply(settings: Settings, specs: Sequence[TopicSpec]) -> Applied:
    """Make the cluster hold the declaration as far as growing can; never shrink or delete."""
    done = Applied()
    async with admin(settings) as client:
        found = await _drift(client, specs)
        by_name = {s.name: s for s in specs}
        missing = [by_name[d.topic] for d in found if d.kind == "missing"]
        if missing:
            response = await client.create_topics(
                timeout_ms=int(SETTLE_S * 1000),
                new_topics=[
                    NewTopic(
                        s.name,
                        num_partitions=s.partitions,
                        replication_factor=s.replication_factor,
                        topic_configs=dict(s.configs),
                    )
                    for s in missing
                ],
            )
            # Another process may have been first: that topic exists, as wanted.
            _raise_for(
                ((e[0], e[1], e[2] if len(e) > 2 else None) for e in response.topic_errors),
                tolerated=TopicAlreadyExistsError.errno,
            )
            done.created = [s.name for s in missing]
        stale = [d for d in found if d.kind != "missing"]
        grow = sorted({d.topic for d in stale if d.kind == "partitions"})
        if grow:
            response = await client.create_partitions(
                {name: NewPartitions(total_count=by_name[name].partitions) for name in grow},
                timeout_ms=int(SETTLE_S * 1000),
            )
            _raise_for(response.topic_errors)
            done.grown = grow
        reconfigure = sorted({d.topic for d in stale if d.kind == "config"})
        if reconfigure:
            # AlterConfigs sets a topic's whole set of overrides: the declaration owns them.
            for response in await client.alter_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, name, dict(by_name[name].configs))
                    for name in reconfigure
                ]
            ):
                _raise_for((r[3], r[0], r[1]) for r in response.resources)
            done.reconfigured = reconfigure
        done.unfixable = [d for d in stale if not d.fixable]
        if missing or grow:
            await _settled(client, [by_name[n] for n in [*done.created, *grow]])
    return done


async def _settled(client: Any, specs: Sequence[TopicSpec]) -> None:
    """Wait until the broker's metadata shows the topics and partitions made.

    The controller answers before every broker knows; what starts next (the workers) must
    find them.
    """
    try:
        async with asyncio.timeout(SETTLE_S):
            for _ in itertools.count():  # the broker offers nothing to wait on but a poll
                found = await _drift(client, specs)
                if not any(d.kind in ("missing", "partitions") for d in found):
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise KafkaTimeoutError(f"topics not visible after {SETTLE_S:.0f} s") from None


def _raise_for(errors: Iterable[tuple[str, int, str | None]], tolerated: int | None = None) -> None:
    """Raise the first per-topic error of an admin response (the call itself succeeded)."""
    for name, code, message in errors:
        if code and code != tolerated:
            raise for_code(code)(f"{name}: {message or 'refused'}")


async def _drift(client: Any, specs: Sequence[TopicSpec]) -> list[Drift]:
    existing = set(await client.list_topics())
    present = [s for s in specs if s.name in existing]
    found = [Drift(s.name, "missing", "missing") for s in specs if s.name not in existing]
    if not present:
        return found
    described = {
        t["topic"]: t["partitions"] for t in await client.describe_topics([s.name for s in present])
    }
    configs = await _configs(client, [s.name for s in present])
    for spec in present:
        parts = described[spec.name]
        if not parts:  # listed, but this broker's metadata has no partition of it yet
            found.append(Drift(spec.name, "missing", "missing (being created)"))
            continue
        if len(parts) < spec.partitions:
            found.append(
                Drift(
                    spec.name, "partitions", f"partitions {len(parts)}, declared {spec.partitions}"
                )
            )
        replication = min(len(p["replicas"]) for p in parts)
        if replication < spec.replication_factor:
            found.append(
                Drift(
                    spec.name,
                    "replication",
                    f"replication {replication}, declared {spec.replication_factor}"
                    " (reassign its partitions: this tool does not)",
                )
            )
        for key, want in sorted(spec.configs.items()):
            have = configs[spec.name].get(key)
            if have != want:
                found.append(Drift(spec.name, "config", f"config {key}={have}, declared {want}"))
    return found


async def _configs(client: Any, names: Sequence[str]) -> dict[str, dict[str, str | None]]:
    """Each topic's effective configs (overrides and the broker's defaults alike)."""
    responses = await client.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    )
    result: dict[str, dict[str, str | None]] = {}
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            result[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
    return result
