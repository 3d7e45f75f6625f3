"""`packages topics` on a real broker: makes and grows what is declared, reports drift."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.kernel.settings import Settings
from services.ops.topics import apply, declared, drift
from tests.conftest import Infra

pytestmark = pytest.mark.infra


@pytest.fixture
async def admin(real_infra: Infra) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=real_infra.bootstrap)
    await client.start()
    yield client
    await client.close()


def _settings(real_infra: Infra, replication: int = 1) -> Settings:
    return Settings(
        kafka_bootstrap_servers=real_infra.bootstrap, topic_replication_factor=replication
    )


def _names(*shapes: str) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [shape.format(tag) for shape in shapes]


async def _partitions(admin: AIOKafkaAdminClient, name: str) -> int:
    [topic] = await admin.describe_topics([name])
    return len(topic["partitions"])


async def _created(admin: AIOKafkaAdminClient, *topics: NewTopic) -> None:
    """Create topics and wait until the broker's metadata shows their partitions."""
    await admin.create_topics(list(topics))
    async with asyncio.timeout(30):
        for topic in topics:
            while True:  # the broker offers nothing to wait on but its metadata
                if await _partitions(admin, topic.name) >= topic.num_partitions:
                    break
                await asyncio.sleep(0.1)


async def test_missing_topics_are_drift_until_applied(real_infra: Infra) -> None:
    settings = _settings(real_infra)
    specs = declared(settings, names=_names("booking.drill-{}", "invoice.drill-{}.dlq"))

    before = await drift(settings, specs)
    done = await apply(settings, specs)

    assert {(d.topic, d.kind) for d in before} == {(s.name, "missing") for s in specs}
    assert sorted(done.created) == sorted(s.name for s in specs)
    assert await drift(settings, specs) == []


async def test_apply_grows_partitions_and_sets_configs_but_never_shrinks(
    real_infra: Infra, admin: AIOKafkaAdminClient
) -> None:
    settings = _settings(real_infra)
    few, many = _names("booking.few-{}", "booking.many-{}")
    an_hour = {"retention.ms": "3600000"}
    await _created(admin, NewTopic(few, 1, 1), NewTopic(many, 12, 1, topic_configs=an_hour))
    specs = declared(settings, names=[few, many])  # booking topics: 6 partitions each

    found = {(d.topic, d.kind) for d in await drift(settings, specs)}
    done = await apply(settings, specs)

    assert found == {(few, "partitions"), (many, "config")}  # more partitions are no drift
    assert (done.grown, done.reconfigured) == ([few], [many])
    assert (await _partitions(admin, few), await _partitions(admin, many)) == (6, 12)
    assert await drift(settings, specs) == []


async def test_lower_replication_is_reported_and_left_to_a_reassignment(
    real_infra: Infra, admin: AIOKafkaAdminClient
) -> None:
    [name] = _names("booking.thin-{}")
    await apply(_settings(real_infra), declared(_settings(real_infra), names=[name]))
    wanted = _settings(real_infra, replication=2)

    found = await drift(wanted, declared(wanted, names=[name]))
    done = await apply(wanted, declared(wanted, names=[name]))

    assert [(d.kind, d.fixable) for d in found if d.kind != "config"] == [("replication", False)]
    assert [d.kind for d in done.unfixable] == ["replication"]
    assert await _partitions(admin, name) == 6


def test_topics_check_exits_non_zero_on_drift_and_zero_once_applied(real_infra: Infra) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": real_infra.bootstrap}
    single = {**env, "PACKAGES_TOPIC_REPLICATION_FACTOR": "1"}

    def packages(*args: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "topics", *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    applied = packages(environment=single)
    fits = packages("--check", environment=single)
    production = packages("--check", environment=env)  # replication 3 on one broker

    assert applied.returncode == 0, applied.stderr
    assert (fits.returncode, fits.stdout.strip()) == (0, "no drift")
    assert production.returncode == 1
    assert "booking.created: replication 1, declared 3" in production.stdout
    assert "config min.insync.replicas=1, declared 2" in production.stdout
