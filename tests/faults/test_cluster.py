"""Scenario 12, on a three-broker KRaft cluster with replication 3 and min.insync.replicas 2.

The four services run against the cluster and a database of their own; the broker leading
most booking partitions is SIGKILLed while events stream in, and started again later.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.kafka_cluster import LocalKafkaCluster
from services.bootstrap import create_topics, migrate
from services.kernel.db import make_engine
from services.kernel.settings import Settings
from tests.conftest import SERVICES, Infra
from tests.faults import ledger
from tests.faults.bookings import bookings, business_with_clients
from tests.faults.scale import Outcome, size
from tests.support.flow import Platform
from tests.support.kafka import Reader, body, of_business, produce
from tests.support.processes import ServiceProcess

pytestmark = [pytest.mark.infra, pytest.mark.timeout(size(900, 3600))]
BOOKINGS = ["booking.created", "booking.updated", "booking.status_changed"]
OUTCOMES = ["booking.package_applied", "booking.package_not_applied"]


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[LocalKafkaCluster]:
    """Three brokers, each a voter of the quorum, each its own process and data."""
    with LocalKafkaCluster(workdir / "cluster", size=3) as running:
        yield running


@pytest.fixture(scope="module")
async def cluster_database(real_infra: Infra) -> AsyncIterator[str]:
    """A database of the cluster's services alone: their relays must not meet the others'."""
    name = f"cluster_{uuid.uuid4().hex[:8]}"
    admin = make_engine(Settings(database_url=real_infra.postgres.url), pool_size=1)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(real_infra.postgres.url).set(database=name)
    fresh = url.render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, fresh)
    yield fresh
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture(scope="module")
async def on_cluster(
    real_infra: Infra, cluster: LocalKafkaCluster, cluster_database: str
) -> AsyncIterator[Platform]:
    """The declared topics (replication 3, 2 in sync) and the four services on the cluster."""
    settings = Settings(kafka_bootstrap_servers=cluster.bootstrap_servers)
    assert (settings.topic_replication_factor, settings.min_insync_replicas) == (3, 2)
    await create_topics(settings)
    env = real_infra.env(
        KAFKA_BOOTSTRAP_SERVERS=cluster.bootstrap_servers, DATABASE_URL=cluster_database
    )
    running = [ServiceProcess(name, env, real_infra.workdir).start() for name in SERVICES]
    engine: AsyncEngine = make_engine(Settings(database_url=cluster_database), pool_size=4)
    yield Platform(cluster.bootstrap_servers, engine)
    for process in running:
        process.stop()
    await engine.dispose()


async def _until(fact: Any, what: str, timeout: float = 120.0) -> None:  # noqa: ASYNC109
    """Wait for a fact about the cluster (a blocking call, run off the loop) to hold.

    A request the cluster cannot answer yet (a dead leader still in its metadata) counts as
    the fact not holding yet.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await asyncio.to_thread(fact):
                return
        except KafkaError:
            pass
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        await asyncio.sleep(0.5)


async def _handled_at_least(platform: Platform, ids: list[str], count: int) -> None:
    """Wait until the redemption inbox holds at least `count` of the ids: mid-stream."""
    wanted = [uuid.UUID(i) for i in ids]
    deadline = time.monotonic() + 120
    while True:
        async with platform.engine.connect() as conn:
            seen = await conn.scalar(
                text("SELECT count(*) FROM redemption.inbox WHERE event_id = ANY(:ids)"),
                {"ids": wanted},
            )
        if (seen or 0) >= count:
            return
        assert time.monotonic() < deadline, f"only {seen} of {count} handled"
        await asyncio.sleep(0.2)


async def test_12_the_leader_broker_killed_mid_stream_loses_and_doubles_nothing(
    cluster: LocalKafkaCluster, on_cluster: Platform
) -> None:
    started = time.monotonic()
    platform = on_cluster
    n = size(400, 5_000)
    business, clients, _setup = await business_with_clients(platform, 30, 100_000)
    w = bookings(business, clients, n, seed=12, end_share=0.1)
    evs = w.all_events()
    ids = ledger.produced_ids(w)
    messages = [(e["event_type"], e, e["data"]["client_id"].encode()) for e in evs]
    leaders = cluster.leaders(BOOKINGS)
    victim, led = Counter(leaders.values()).most_common(1)[0]

    streaming = asyncio.create_task(produce(platform.bootstrap, messages))
    await _handled_at_least(platform, ids, len(evs) // 4)  # mid-stream, by the inbox
    cluster.node(victim).kill()
    await _until(
        lambda: victim not in cluster.leaders(BOOKINGS).values(), "leaders moved off the victim"
    )
    await streaming  # the producer's retries reach the new leaders
    cluster.node(victim).start()
    await _until(
        lambda: all(len(isr) == 3 for isr in cluster.in_sync(BOOKINGS).values()),
        "the restarted broker back in sync",
        timeout=180,
    )

    handled = await ledger.wait_handled(platform.engine, ids, 240)
    assert handled == len(evs)
    await asyncio.sleep(1)  # let the relays publish what the last batches wrote
    assert await ledger.problems(platform.engine, w) == []
    async with platform.engine.connect() as conn:  # the outcomes committed, one per booking
        expected = await conn.scalar(
            text(
                "SELECT count(*) FROM redemption.outbox WHERE topic = ANY(:topics)"
                " AND causation_id = ANY(:ids)"
            ),
            {"topics": OUTCOMES, "ids": [uuid.UUID(i) for i in ids]},
        )
    assert expected >= sum(not b.ends_released for b in w.bookings)
    async with Reader(platform.bootstrap, OUTCOMES) as reader:
        published = await reader.until(
            of_business(business),
            expected,
            timeout=120,
            settle=2,  # a doubled outcome would come after
            distinct=lambda r: body(r)["event_id"],
        )
    # A relay may publish an event twice (same event_id, read once); never two for a booking.
    events_published = {body(r)["event_id"]: body(r)["data"]["booking_id"] for r in published}
    booked = Counter(events_published.values())
    assert len(booked) == expected
    assert max(booked.values()) == 1
    Outcome(
        "12 leader killed",
        f"{len(evs)} events on 3 brokers (replication 3, min ISR 2); SIGKILL of the leader"
        f" of {led} of {len(leaders)} booking partitions, restarted",
        f"every event applied once; {expected} outcomes on the cluster, none doubled;"
        " no manual action",
        started,
    ).record()
