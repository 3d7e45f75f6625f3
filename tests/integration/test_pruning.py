"""Bounded storage on a real PostgreSQL: what is past its retention goes, a batch at a time."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import MetaData, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.db import NAMING_CONVENTION
from services.kernel.pruning import Pruner
from services.kernel.settings import DAY_S, Settings
from services.kernel.tables import kernel_tables
from tests.support import schemas

SCHEMA = "prune_test"
metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)
tables = kernel_tables(metadata)


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncEngine:
    return await schemas.recreate(engine, metadata)


async def _outbox(db: AsyncEngine, rows: int, *, age_days: float, sent: bool) -> None:
    """`rows` outbox rows made `age_days` ago, sent a second later or never."""
    async with db.begin() as conn:
        await conn.execute(
            text(
                f"INSERT INTO {SCHEMA}.outbox (event_id, topic, payload, created_at, sent_at)"
                " SELECT gen_random_uuid(), 'record.updated', '\\x7b7d',"
                " now() - make_interval(secs => :age), CASE WHEN :sent"
                " THEN now() - make_interval(secs => :age) + interval '1 second' END"
                " FROM generate_series(1, :n)"
            ),
            {"n": rows, "age": age_days * DAY_S, "sent": sent},
        )


async def _inbox(db: AsyncEngine, rows: int, *, age_days: float) -> None:
    async with db.begin() as conn:
        await conn.execute(
            text(
                f"INSERT INTO {SCHEMA}.inbox"
                " (consumer, event_id, event_type, kafka_partition, kafka_offset, handled_at)"
                " SELECT 'prune-test', gen_random_uuid(), 'booking.created', 0, n,"
                " now() - make_interval(secs => :age) FROM generate_series(1, :n) AS n"
            ),
            {"n": rows, "age": age_days * DAY_S},
        )


async def _count(db: AsyncEngine, table: str, where: str = "true") -> int:
    async with db.connect() as conn:
        found = await conn.scalar(
            select(func.count()).select_from(text(f"{SCHEMA}.{table}")).where(text(where))
        )
        return int(found or 0)


async def test_sent_outbox_rows_and_inbox_rows_past_their_retention_are_pruned_in_batches(
    db: AsyncEngine,
) -> None:
    # In time order, as a service writes them; one row older than all stays unsent.
    await _outbox(db, 1, age_days=10, sent=False)
    await _outbox(db, 25, age_days=8, sent=True)
    await _outbox(db, 5, age_days=6, sent=True)
    await _outbox(db, 3, age_days=0, sent=False)
    await _inbox(db, 23, age_days=9)
    await _inbox(db, 4, age_days=7.5)
    settings = Settings(prune_batch=4)  # outbox 7 days, inbox 8 days
    labels = {"service": "prune-test", "table": "outbox"}
    before = REGISTRY.get_sample_value("packages_pruned_rows_total", labels) or 0

    done = await Pruner("prune-test", db, tables, settings).prune()

    assert done == {"outbox": 25, "inbox": 23}
    assert REGISTRY.get_sample_value("packages_pruned_rows_total", labels) == before + 25
    assert await _count(db, "outbox", "sent_at IS NULL") == 4, "unsent rows are never pruned"
    assert await _count(db, "outbox", "sent_at IS NOT NULL") == 5
    assert await _count(db, "inbox") == 4
    assert await Pruner("prune-test", db, tables, settings).prune() == {"outbox": 0, "inbox": 0}


async def test_one_process_prunes_at_a_time(db: AsyncEngine) -> None:
    await _outbox(db, 3, age_days=8, sent=True)
    pruner = Pruner("prune-test", db, tables, Settings())
    async with db.begin() as conn:
        # Another process of the service holds the pruning lock for its round.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": pruner._lock_key})
        assert await pruner.prune() == {"outbox": 0, "inbox": 0}
    assert (await pruner.prune())["outbox"] == 3
