"""Records' timers: expiring-soon notices once per record and expiry date, at the business's
lead time in its time zone, while sessions remain; freezes that end by their date."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import topics
from contracts.outbound import RecordExpiringSoon
from services.catalog.tables import business_settings
from services.kernel.unit_of_work import UnitOfWork
from services.records import handlers
from services.records import repository as records_repository
from services.records.tables import package_record, record_service, usable_change
from tests.support.redemption import Shop, envelope, package

pytest_plugins = ["tests.integration.redemption_db"]  # a PostgreSQL of its own
NOW = datetime(2026, 11, 20, 9, tzinfo=UTC)
TODAY = NOW.date()


async def _notices(engine: AsyncEngine, shop: Shop, now: datetime = NOW) -> list[dict[str, Any]]:
    """One round of the notice timer: the notices it sent for this shop."""
    async with engine.begin() as conn:
        uow = UnitOfWork(conn, "records", now=now)
        while await handlers.notice_expiring(uow):
            pass
    sent = [orjson.loads(r.payload) for r in uow.outbox if r.topic == topics.RECORD_EXPIRING_SOON]
    return [n["data"] for n in sent if n["business_id"] == shop.business_id]


async def _set(engine: AsyncEngine, record_id: str, **values: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(package_record).where(package_record.c.record_id == record_id).values(**values)
        )


async def test_a_record_is_noticed_once_at_the_lead_time_before_its_expiry(
    redemption_engine: AsyncEngine,
) -> None:
    shop = Shop(redemption_engine)
    soon = await shop.sell("cli-ana", package({"svc-massage": 5}, until=TODAY + timedelta(days=7)))
    later = await shop.sell("cli-ana", package({"svc-massage": 5}, until=TODAY + timedelta(days=8)))

    first = await _notices(redemption_engine, shop)
    again = await _notices(redemption_engine, shop)

    assert [(n["package_record_id"], n["days_left"]) for n in first] == [(soon, 7)]
    RecordExpiringSoon.model_validate(first[0])
    assert again == []
    next_day = await _notices(redemption_engine, shop, NOW + timedelta(days=1))
    assert [(n["package_record_id"], n["days_left"]) for n in next_day] == [(later, 7)]


async def test_a_new_expiry_makes_the_notice_due_again(redemption_engine: AsyncEngine) -> None:
    shop = Shop(redemption_engine)
    record = await shop.sell(
        "cli-ana", package({"svc-massage": 5}, until=TODAY + timedelta(days=3))
    )
    assert len(await _notices(redemption_engine, shop)) == 1

    await _set(redemption_engine, record, expires_on=TODAY + timedelta(days=5))

    assert [n["days_left"] for n in await _notices(redemption_engine, shop)] == [5]


async def test_no_notice_without_sessions_left_or_with_no_lead_time(
    redemption_engine: AsyncEngine,
) -> None:
    shop = Shop(redemption_engine)
    used_up = await shop.sell(
        "cli-ana", package({"svc-massage": 1}, until=TODAY + timedelta(days=2))
    )
    async with redemption_engine.begin() as conn:
        await conn.execute(
            update(record_service)
            .where(record_service.c.record_id == used_up)
            .values(sessions_used=1)
        )
    await _set(redemption_engine, used_up, status="exhausted")
    quiet = Shop(redemption_engine)
    await quiet.sell("cli-ana", package({"svc-massage": 1}, until=TODAY + timedelta(days=2)))
    async with redemption_engine.begin() as conn:
        await conn.execute(
            business_settings.insert().values(
                business_id=quiet.business_id,
                time_zone="UTC",
                no_show="restore",
                expiring_soon_days=0,
                version=1,
            )
        )

    assert await _notices(redemption_engine, shop) == []
    assert await _notices(redemption_engine, quiet) == []


async def test_the_lead_time_counts_in_the_business_s_time_zone(
    redemption_engine: AsyncEngine,
) -> None:
    shop = Shop(redemption_engine)
    await shop.sell("cli-ana", package({"svc-massage": 5}, until=date(2026, 11, 28)))
    async with redemption_engine.begin() as conn:
        await conn.execute(
            business_settings.insert().values(
                business_id=shop.business_id,
                time_zone="Pacific/Kiritimati",  # UTC+14: already the 21st there at 10:00 UTC
                no_show="restore",
                expiring_soon_days=7,
                version=1,
            )
        )

    assert await _notices(redemption_engine, shop, datetime(2026, 11, 20, 9, tzinfo=UTC)) == []
    [notice] = await _notices(redemption_engine, shop, datetime(2026, 11, 20, 10, tzinfo=UTC))
    assert notice["days_left"] == 7


async def test_a_freeze_ends_by_its_date_once_moving_the_expiry_by_its_days(
    redemption_engine: AsyncEngine,
) -> None:
    shop = Shop(redemption_engine)
    record = await shop.sell("cli-ana", package({"svc-massage": 5}, until=date(2026, 12, 31)))
    edit = envelope(
        topics.RECORD_EDIT_REQUESTED,
        shop.business_id,
        {
            "request_id": "req-1",
            "package_record_id": record,
            "client_id": "cli-ana",
            "changes": {"frozen_until": "2026-11-29"},
        },
        occurred_at=NOW,
    )
    async with redemption_engine.begin() as conn:
        uow = UnitOfWork(conn, "records", now=NOW)
        [found] = await records_repository.load(
            conn, shop.business_id, package_record.c.record_id == record
        )
        await handlers.edit_record(uow, edit, found)

    async def thaw(now: datetime) -> int:
        async with redemption_engine.begin() as conn:
            return await handlers.thaw_due(UnitOfWork(conn, "records", now=now))

    assert await thaw(datetime(2026, 11, 29, 23, tzinfo=UTC)) == 0  # its last frozen day
    assert await thaw(datetime(2026, 11, 30, 1, tzinfo=UTC)) >= 1
    assert await thaw(datetime(2026, 11, 30, 2, tzinfo=UTC)) == 0
    async with redemption_engine.connect() as conn:
        row = (
            await conn.execute(select(package_record).where(package_record.c.record_id == record))
        ).one()
        noted = await conn.scalar(
            select(usable_change.c.client_id).where(usable_change.c.business_id == shop.business_id)
        )
    # Frozen from the 20th through the 29th: ten days more.
    assert (row.status, row.expires_on, row.frozen_until) == ("active", date(2027, 1, 10), None)
    assert noted == "cli-ana"  # waiting bookings of the client are matched again
