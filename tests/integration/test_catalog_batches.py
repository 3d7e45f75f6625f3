"""A catalog batch ends as its events would have in order, whatever it holds together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.codec import decode
from services.catalog.handlers import Catalog
from services.catalog.tables import package
from services.kernel.unit_of_work import UnitOfWork
from tests.support import events

pytest_plugins = ["tests.integration.redemption_db"]  # a PostgreSQL of its own
START = datetime(2026, 11, 2, 9, tzinfo=UTC)


async def _handle(engine: AsyncEngine, *raw: dict[str, Any]) -> UnitOfWork:
    """One batch through the catalog handler, in one transaction."""
    async with engine.begin() as conn:
        uow = UnitOfWork(conn, "catalog")
        envelopes = [decode(e["event_type"], orjson.dumps(e)) for e in raw]
        await Catalog(plan_wait_s=300).handle_batch(uow, envelopes)
    return uow


async def _packages(engine: AsyncEngine, business: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(package.c.package_id).where(package.c.business_id == business)
        )
        return sorted(r.package_id for r in rows)


def _at(hours: int) -> datetime:
    return START + timedelta(hours=hours)


def _created(business: str, package_id: str, hours: int) -> dict[str, Any]:
    event = events.package(business, package_id)
    event["occurred_at"] = events.stamp(_at(hours))
    return event


async def test_a_package_between_an_upgrade_and_a_downgrade_in_one_batch_is_created(
    redemption_engine: AsyncEngine,
) -> None:
    business = events.new_business()
    batch = [
        events.plan(business, "pro", occurred_at=_at(0)),
        _created(business, "pkg-relax10", 1),
        events.plan(business, "free", occurred_at=_at(2)),
    ]

    uow = await _handle(redemption_engine, *batch)

    assert [o.reason for o in uow.outcomes.values()] == []
    assert await _packages(redemption_engine, business) == ["pkg-relax10"]


async def test_a_package_after_the_downgrade_is_refused_in_any_batch(
    redemption_engine: AsyncEngine,
) -> None:
    business = events.new_business()
    late = _created(business, "pkg-late", 3)
    batch = [
        late,
        events.plan(business, "free", occurred_at=_at(2)),
        events.plan(business, "pro", occurred_at=_at(0)),
    ]

    uow = await _handle(redemption_engine, *batch)

    assert [o.reason for o in uow.outcomes.values()] == ["not_entitled"]
    assert await _packages(redemption_engine, business) == []
