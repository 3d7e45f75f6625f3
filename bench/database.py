"""The benchmark's databases: one seeded template, and a fresh copy of it for every run.

Each run gets its own database on the given server (`CREATE DATABASE ... TEMPLATE`), so a run
starts from the same state in a second and never touches the database the server was given
with: the test session's data stays as it was.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from bench.invoice_checker import StoredRecord
from bench.kafka import Sendable
from bench.naive_tables import SCHEMA as NAIVE
from bench.naive_tables import Base as NaiveBase
from bench.workload import BalanceKey, Business, RecordSpec, Workload
from contracts import topics
from contracts.codec import decode
from contracts.inbound import PackageDefined
from contracts.outbound import AssignmentOrigin
from services.bootstrap import migrate
from services.catalog.handlers import Catalog
from services.kernel.unit_of_work import UnitOfWork
from services.records import api as records
from services.redemption import handlers

log = logging.getLogger(__name__)
_T = TypeVar("_T")
SEED_BATCH = 500

# The naive peer starts from the very records and earlier bookings ours starts from.
_COPY_TO_NAIVE = (
    f"INSERT INTO {NAIVE}.record"
    " (record_id, business_id, client_id, discount_percent, expires_on, seq)"
    " SELECT record_id, business_id, client_id, CAST(discount->>'value' AS numeric),"
    " expires_on, seq FROM records.package_record",
    f"INSERT INTO {NAIVE}.record_service"
    " SELECT record_id, service_id, sessions_total, sessions_used FROM records.record_service",
    f"INSERT INTO {NAIVE}.booking"
    " SELECT business_id, booking_id, client_id, service_id, status, price_amount,"
    " GREATEST(snapshot_version, status_version) FROM redemption.booking",
    f"INSERT INTO {NAIVE}.redemption (business_id, booking_id, record_id, service_id,"
    " price_before, price_after, currency, removed)"
    " SELECT business_id, booking_id, record_id, service_id, price_before, price_after,"
    " currency, removed FROM redemption.redemption",
)


class Databases:
    """The template and run databases of one benchmark, on one server."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url = make_url(url)
        self.template = f"{prefix}_template"
        self.run = f"{prefix}_run"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of a database on this server."""
        return self._url.set(database=database).render_as_string(hide_password=False)

    async def _admin(self, *statements: str) -> None:
        engine = create_async_engine(self._url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                for statement in statements:
                    await conn.execute(text(statement))
        finally:
            await engine.dispose()

    async def prepare(self, seed: Callable[[AsyncEngine], Awaitable[None]]) -> None:
        """Create the template: every schema migrated, then seeded by `seed`."""
        await self.drop()
        await self._admin(f'CREATE DATABASE "{self.template}"')
        await asyncio.to_thread(migrate, self.url(self.template))
        engine = create_async_engine(self.url(self.template), poolclass=NullPool)
        try:
            await seed(engine)
            # Planner statistics, as a database in service has them.
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE"))
        finally:
            await engine.dispose()

    async def fresh(self) -> str:
        """A new run database, a copy of the template; returns its URL."""
        await self._admin(
            f'DROP DATABASE IF EXISTS "{self.run}" WITH (FORCE)',
            f'CREATE DATABASE "{self.run}" TEMPLATE "{self.template}"',
        )
        return self.url(self.run)

    async def drop(self) -> None:
        """Drop both databases."""
        await self._admin(
            f'DROP DATABASE IF EXISTS "{self.run}" WITH (FORCE)',
            f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)',
        )


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def package_of(business: Business) -> PackageDefined:
    """The package every client of the business holds a record of."""
    return PackageDefined.model_validate(
        {
            "package_id": business.package_id,
            "name": "Wellness bundle",
            "price": {"amount": "450.00", "currency": "EUR"},
            "services": [
                {"service_id": s, "sessions": business.sessions} for s in business.services
            ],
            "discount": {"type": "percent", "value": business.discount_percent},
            "validity": {"type": "days", "days": 365},
            "status": "active",
            "version": 1,
        }
    )


def _assignment(record: RecordSpec, package_id: str) -> Any:
    """The `package.assigned` a record comes from, as its history names it."""
    doc = {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{record.assignment_id}")),
        "event_type": topics.PACKAGE_ASSIGNED,
        "occurred_at": datetime.now(UTC).isoformat(),
        "business_id": record.business_id,
        "actor": {"user_id": f"usr-{record.business_id[4:]}-owner", "role": "owner"},
        "data": {
            "assignment_id": record.assignment_id,
            "package_id": package_id,
            "client_id": record.client_id,
        },
    }
    return decode(topics.PACKAGE_ASSIGNED, orjson.dumps(doc))


async def seed_bookings(engine: AsyncEngine, workload: Workload) -> None:
    """Ours's records and earlier bookings, and the naive peer's copy of them."""
    await seed_ours(engine, workload)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{NAIVE}"'))
        await conn.run_sync(NaiveBase.metadata.create_all)
        for statement in _COPY_TO_NAIVE:
            await conn.execute(text(statement))


async def seed_ours(engine: AsyncEngine, workload: Workload) -> None:
    """Records through the records API; earlier bookings through the redemption handler."""
    by_business: dict[str, list[RecordSpec]] = {}
    for r in workload.records:
        by_business.setdefault(r.business_id, []).append(r)
    for business_id, specs in by_business.items():
        business = workload.businesses[business_id]
        package = package_of(business)
        async with engine.begin() as conn:
            uow = UnitOfWork(conn, "records")
            for r in specs:
                await records.create_records(
                    uow,
                    business_id,
                    r.client_id,
                    package,
                    AssignmentOrigin(assignment_id=r.assignment_id),
                    quantity=1,
                    paid=False,
                    cause=_assignment(r, business.package_id),
                )
    # Last week's bookings, handled as the service handled them then; their outbound events
    # were published long ago, so they are dropped.
    for chunk in _chunks(workload.earlier, SEED_BATCH):
        async with engine.begin() as conn:
            uow = UnitOfWork(conn, "redemption")
            await handlers.handle_batch(uow, [decode(e.topic, e.value) for e in chunk])
            applied = sum(1 for o in uow.outbox if o.topic == topics.PACKAGE_APPLIED)
            if applied != len(chunk) or uow.outcomes:
                raise RuntimeError(
                    f"seeding earlier bookings: {applied} of {len(chunk)} applied, {uow.outcomes}"
                )


async def seed_catalog(engine: AsyncEngine, events: Sequence[Sendable]) -> None:
    """Plans and packages through the catalog's own handler, as it handled them when sent."""
    # The catalog offers other services only reads: its handler is how its state is written.
    async with engine.begin() as conn:
        uow = UnitOfWork(conn, "catalog")
        await Catalog(plan_wait_s=0).handle_batch(uow, [decode(e.topic, e.value) for e in events])
        if uow.outcomes or uow.outbox:
            raise RuntimeError(f"seeding the catalog: {uow.outcomes}, {len(uow.outbox)} events")


async def _rows(url: str, query: str) -> list[Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(query))).all())
    finally:
        await engine.dispose()


async def ours_balances(url: str) -> dict[BalanceKey, int]:
    """Sessions used per (business, client, service) in the records service's tables."""
    rows = await _rows(
        url,
        "SELECT p.business_id, p.client_id, s.service_id, s.sessions_used"
        " FROM records.package_record p JOIN records.record_service s USING (record_id)",
    )
    return {(r[0], r[1], r[2]): int(r[3]) for r in rows}


async def naive_balances(url: str) -> dict[BalanceKey, int]:
    """Sessions used per (business, client, service) in the naive peer's tables."""
    rows = await _rows(
        url,
        f"SELECT r.business_id, r.client_id, s.service_id, s.sessions_used"
        f" FROM {NAIVE}.record r JOIN {NAIVE}.record_service s USING (record_id)",
    )
    return {(r[0], r[1], r[2]): int(r[3]) for r in rows}


async def inbox(url: str, service: str = "redemption") -> list[str]:
    """The event ids in a service's inbox."""
    rows = await _rows(
        url, f"SELECT CAST(event_id AS text) FROM {service}.inbox WHERE consumer = '{service}'"
    )
    return [r[0] for r in rows]


async def inbox_count(url: str) -> int:
    """How many events the redemption service has recorded."""
    rows = await _rows(url, "SELECT count(*) FROM redemption.inbox")
    return int(rows[0][0])


async def invoice_records(url: str) -> list[StoredRecord]:
    """Every package record and the origin it names."""
    rows = await _rows(
        url,
        "SELECT record_id, business_id, origin->>'type', origin->>'invoice_id',"
        " origin->>'line_id' FROM records.package_record",
    )
    return [StoredRecord(*r) for r in rows]
