"""A small vocabulary to drive the redemption handler on a real database: shops, records, events."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import topics
from contracts.codec import decode
from contracts.inbound import PackageDefined
from contracts.outbound import AssignmentOrigin
from services.kernel.kernel import Kernel, Poison
from services.kernel.unit_of_work import UnitOfWork
from services.records import api as records
from services.records.tables import package_record, record_event, record_service
from services.redemption import handlers
from services.redemption.tables import booking, redemption, restoration
from services.redemption.tables import kernel as redemption_kernel

TODAY = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
APPOINTMENT = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
_counter = itertools.count(1)
_offsets = itertools.count()


def package(
    services: dict[str, int | None],
    discount: dict[str, Any] | None = None,
    until: date | None = None,
    package_id: str = "pkg-massage",
) -> PackageDefined:
    """A package of these services (sessions, None for unlimited)."""
    return PackageDefined.model_validate(
        {
            "package_id": package_id,
            "name": "Ten massages",
            "price": {"amount": "500.00", "currency": "EUR"},
            "services": [{"service_id": s, "sessions": n} for s, n in services.items()],
            "discount": discount or {"type": "percent", "value": "100"},
            "validity": {"type": "until", "date": until.isoformat()}
            if until
            else {"type": "never"},
            "status": "active",
            "version": 1,
        }
    )


def envelope(
    topic: str, business_id: str, data: dict[str, Any], occurred_at: datetime = TODAY
) -> Any:
    """An inbound envelope, through the same decoder the kernel uses."""
    raw = {
        "event_id": str(uuid.uuid4()),
        "event_type": topic,
        "occurred_at": occurred_at.isoformat(),
        "business_id": business_id,
        "actor": {"user_id": "u-desk", "role": "staff"},
        "data": data,
    }
    return decode(topic, orjson.dumps(raw))


@dataclass(frozen=True)
class Published:
    """An outbound event as the outbox holds it."""

    topic: str
    data: dict[str, Any]
    business_id: str


@dataclass
class Shop:
    """One business on the platform, with its clients' records and bookings."""

    engine: AsyncEngine
    business_id: str = field(default_factory=lambda: f"biz-{uuid.uuid4().hex[:8]}")
    published: list[Published] = field(default_factory=list)
    outcomes: dict[uuid.UUID, str] = field(default_factory=dict)

    async def sell(
        self,
        client_id: str,
        pkg: PackageDefined,
        *,
        on: datetime = TODAY,
        business_id: str | None = None,
    ) -> str:
        """A record of the package for the client, created on `on`; returns its id."""
        business = business_id or self.business_id
        cause = envelope(
            topics.PACKAGE_ASSIGNED,
            business,
            {
                "assignment_id": f"as-{next(_counter)}",
                "package_id": pkg.package_id,
                "client_id": client_id,
            },
            occurred_at=on,
        )
        async with self.engine.begin() as conn:
            uow = UnitOfWork(conn, "records", now=on)
            created = await records.create_records(
                uow,
                business,
                client_id,
                pkg,
                AssignmentOrigin(assignment_id=cause.data.assignment_id),
                quantity=1,
                paid=False,
                cause=cause,
            )
        return created[0]

    async def edit_package(
        self, pkg: PackageDefined, *, business_id: str | None = None, now: datetime = TODAY
    ) -> list[str]:
        """The owner edits a package (as the catalog would): new terms reach its live records."""
        business = business_id or self.business_id
        cause = envelope(topics.PACKAGE_UPDATED, business, pkg.model_dump(mode="json"))
        async with self.engine.begin() as conn:
            uow = UnitOfWork(conn, "catalog", now=now)
            return await records.apply_new_terms(uow, business, pkg, cause)

    async def cancel_record(self, record_id: str) -> None:
        """The business cancels a record (as the records service would)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(package_record)
                .where(package_record.c.record_id == record_id)
                .values(status="cancelled")
            )

    async def handle(self, *events: Any, now: datetime = TODAY) -> list[Published]:
        """Run the redemption handler on one batch in one transaction; returns what it publishes."""
        async with self.engine.begin() as conn:
            uow = UnitOfWork(conn, "redemption", now=now)
            await handlers.handle_batch(uow, list(events))
        self.outcomes |= {eid: o.reason for eid, o in uow.outcomes.items()}
        return self._published_by(uow)

    def created(
        self,
        booking_id: str,
        client_id: str,
        service_id: str,
        *,
        version: int = 1,
        status: str = "confirmed",
        record: str | None = None,
        use_package: bool = True,
        price: str = "60.00",
        currency: str = "EUR",
        source: str = "calendar",
        topic: str = topics.BOOKING_CREATED,
        starts_at: datetime = APPOINTMENT,
    ) -> Any:
        """A booking.created (or, with topic, booking.updated) envelope."""
        return envelope(
            topic,
            self.business_id,
            {
                "booking_id": booking_id,
                "client_id": client_id,
                "service_id": service_id,
                "starts_at": starts_at.isoformat(),
                "status": status,
                "price": {"amount": price, "currency": currency},
                "source": source,
                "package_record_id": record,
                "use_package": use_package,
                "version": version,
            },
        )

    def updated(self, booking_id: str, client_id: str, service_id: str, **kw: Any) -> Any:
        """A booking.updated envelope: the whole booking after an edit."""
        return self.created(booking_id, client_id, service_id, topic=topics.BOOKING_UPDATED, **kw)

    def status(self, booking_id: str, client_id: str, status: str, *, version: int) -> Any:
        """A booking.status_changed envelope."""
        return envelope(
            topics.BOOKING_STATUS_CHANGED,
            self.business_id,
            {
                "booking_id": booking_id,
                "client_id": client_id,
                "status": status,
                "previous_status": None,
                "version": version,
            },
        )

    async def used(self, record_id: str, service_id: str) -> int:
        """Sessions used of the service on the record, as committed."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                select(record_service.c.sessions_used).where(
                    record_service.c.record_id == record_id,
                    record_service.c.service_id == service_id,
                )
            )
        assert value is not None
        return int(value)

    async def record_status(self, record_id: str) -> str:
        """The record's status, as committed."""
        async with self.engine.connect() as conn:
            return str(
                await conn.scalar(
                    select(package_record.c.status).where(package_record.c.record_id == record_id)
                )
            )

    async def held(self, booking_id: str) -> str | None:
        """The record the booking holds a redemption on, if any."""
        async with self.engine.connect() as conn:
            return await conn.scalar(
                select(redemption.c.record_id).where(
                    redemption.c.business_id == self.business_id,
                    redemption.c.booking_id == booking_id,
                    ~redemption.c.removed,
                )
            )

    async def rematch(self, now: datetime = TODAY) -> list[Published]:
        """The redemption's timer matching waiting bookings again, until it finds no news;
        what it publishes for this shop (other tests' shops share the database)."""
        async with self.engine.begin() as conn:
            uow = UnitOfWork(conn, "redemption", now=now)
            while await handlers.rematch_waiting(uow):
                pass
        return [p for p in self._published_by(uow) if p.business_id == self.business_id]

    def _published_by(self, uow: UnitOfWork) -> list[Published]:
        """What a committed unit of work publishes, kept with the rest."""
        out = [
            Published(
                r.topic, orjson.loads(r.payload)["data"], orjson.loads(r.payload)["business_id"]
            )
            for r in uow.outbox
        ]
        self.published += out
        return out

    async def prices(self, booking_id: str) -> tuple[Decimal, Decimal] | None:
        """The prices of the redemption the booking holds, if any."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(redemption.c.price_before, redemption.c.price_after).where(
                        redemption.c.business_id == self.business_id,
                        redemption.c.booking_id == booking_id,
                        ~redemption.c.removed,
                    )
                )
            ).first()
        return None if row is None else (row.price_before, row.price_after)

    async def booking_row(self, booking_id: str) -> Any:
        """The stored booking."""
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    select(booking).where(
                        booking.c.business_id == self.business_id,
                        booking.c.booking_id == booking_id,
                    )
                )
            ).one()

    async def restorations(self, booking_id: str) -> list[Any]:
        """The booking's removed redemptions with their restoration rows."""
        async with self.engine.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(restoration)
                        .join(redemption, redemption.c.id == restoration.c.redemption_id)
                        .where(
                            redemption.c.business_id == self.business_id,
                            redemption.c.booking_id == booking_id,
                        )
                        .order_by(restoration.c.redemption_id)
                    )
                ).all()
            )

    async def history(self, record_id: str) -> list[tuple[str, str | None]]:
        """The record's history as (kind, booking_id)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(record_event.c.kind, record_event.c.booking_id)
                    .where(record_event.c.record_id == record_id)
                    .order_by(record_event.c.id)
                )
            ).all()
        return [(r.kind, r.booking_id) for r in rows]

    def of(self, topic: str, booking_id: str | None = None) -> list[dict[str, Any]]:
        """What was published on a topic so far (for one booking)."""
        return [
            p.data
            for p in self.published
            if p.topic == topic and (booking_id is None or p.data.get("booking_id") == booking_id)
        ]


def kinds(published: Sequence[Published]) -> list[str]:
    """The topics of published events, in order."""
    return [p.topic for p in published]


@dataclass
class Raw:
    """A Kafka record as the kernel reads it."""

    topic: str
    value: bytes | None
    partition: int = 0
    offset: int = field(default_factory=lambda: next(_offsets))
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()


class NoDeadLetters:
    """Collects poison, which a correct run never has."""

    def __init__(self) -> None:
        self.parked: list[Poison] = []

    async def park(self, poison: Sequence[Poison]) -> None:
        """Keep it for the test to see."""
        self.parked.extend(poison)


@dataclass
class Clock:
    """The kernel's clock, moved on by the test."""

    now: datetime = TODAY

    def __call__(self) -> datetime:
        """The time the next batch runs at."""
        return self.now


def raw(envelope: Any) -> Raw:
    """The Kafka record carrying an envelope."""
    return Raw(envelope.event_type, orjson.dumps(envelope.model_dump(mode="json")))


def redemption_kernel_on(engine: AsyncEngine, clock: Clock, parked: NoDeadLetters) -> Kernel:
    """The redemption service's kernel (inbox, handler, outbox) without Kafka around it."""
    return Kernel(
        "redemption",
        engine,
        redemption_kernel,
        handlers.handle_batch,
        parked,
        locks=handlers.BOOKING_LOCKS,
        clock=clock,
    )


async def outbox(engine: AsyncEngine, business_id: str) -> list[dict[str, Any]]:
    """What the redemption service's outbox holds for a business, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT payload FROM redemption.outbox"
                " WHERE convert_from(payload, 'UTF8')::jsonb->>'business_id' = :b ORDER BY id"
            ),
            {"b": business_id},
        )
        return [orjson.loads(r.payload) for r in rows]
