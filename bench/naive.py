"""The naive peer: the redemption as FastStream's getting-started guides would have it.

`faststream run bench.naive:app`. One subscriber per topic taking the Pydantic model, an
SQLAlchemy session and transaction per message, `await broker.publish(...)` per outcome and
the default ack policy. Its own tables live in schema `bench_naive`, which the benchmark
creates and seeds with the same records and earlier bookings as ours. It handles what the
benchmark's workload holds (new bookings, cancels and no-shows, edits that keep the service)
the way ours does; it has no inbox, outbox or dead-letter topic, as the guides have none.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bench.naive_tables import Booking, Record, RecordService, Redemption
from contracts import topics
from contracts.base import Envelope, Money
from contracts.inbound import BookingSnapshot, BookingStatusChanged
from contracts.outbound import PackageApplied, PackageNotApplied, PackageRemoved
from services.kernel.settings import Settings

GROUP = "bench-naive"
ENDING = ("cancelled", "no_show")


settings = Settings()
broker = KafkaBroker(settings.kafka_bootstrap_servers.split(","))
app = FastStream(broker)
engine = create_async_engine(settings.database_url.get_secret_value())
Session = async_sessionmaker(engine, expire_on_commit=False)


@app.after_shutdown
async def close_database() -> None:
    """Close the pool."""
    await engine.dispose()


@broker.subscriber(topics.BOOKING_CREATED, group_id=GROUP, auto_offset_reset="earliest")
async def on_booking_created(event: Envelope[BookingSnapshot]) -> None:
    """Redeem a session of the client's record that covers the service, or say why not."""
    b = event.data
    outcome: PackageApplied | PackageNotApplied
    async with Session() as session, session.begin():
        records = await client_records(session, event.business_id, b.client_id)
        if await session.get(Booking, (event.business_id, b.booking_id)) is not None:
            return
        session.add(
            Booking(
                business_id=event.business_id,
                booking_id=b.booking_id,
                client_id=b.client_id,
                service_id=b.service_id,
                status=b.status,
                price=b.price.amount,
                version=b.version,
            )
        )
        line = await first_with_session_left(session, records, b.service_id)
        if line is None:
            outcome = PackageNotApplied(
                booking_id=b.booking_id, client_id=b.client_id, reason="no_eligible_record"
            )
        else:
            record, balance = line
            balance.sessions_used += 1
            after = discounted(b.price, record.discount_percent)
            session.add(
                Redemption(
                    business_id=event.business_id,
                    booking_id=b.booking_id,
                    record_id=record.record_id,
                    service_id=b.service_id,
                    price_before=b.price.amount,
                    price_after=after.amount,
                    currency=b.price.currency,
                )
            )
            outcome = PackageApplied(
                booking_id=b.booking_id,
                client_id=b.client_id,
                package_record_id=record.record_id,
                service_id=b.service_id,
                price_before=b.price,
                price_after=after,
                sessions_remaining=remaining(balance),
            )
    topic = (
        topics.PACKAGE_APPLIED
        if isinstance(outcome, PackageApplied)
        else topics.PACKAGE_NOT_APPLIED
    )
    await broker.publish(outbound(topic, event, outcome), topic, key=b.client_id.encode())


@broker.subscriber(topics.BOOKING_STATUS_CHANGED, group_id=GROUP, auto_offset_reset="earliest")
async def on_booking_status_changed(event: Envelope[BookingStatusChanged]) -> None:
    """A cancelled or missed booking gives its session back."""
    s = event.data
    async with Session() as session, session.begin():
        # The client's records first, as a new booking takes them: the same lock order.
        await client_records(session, event.business_id, s.client_id)
        booking = await session.get(
            Booking, (event.business_id, s.booking_id), with_for_update=True
        )
        if booking is None or s.version <= booking.version:
            return
        booking.status, booking.version = s.status, s.version
        if s.status not in ENDING:
            return
        held = await session.scalar(
            select(Redemption)
            .where(
                Redemption.business_id == event.business_id,
                Redemption.booking_id == s.booking_id,
                ~Redemption.removed,
            )
            .with_for_update()
        )
        if held is None:
            return
        held.removed = True
        balance = await session.get(
            RecordService, (held.record_id, held.service_id), with_for_update=True
        )
        assert balance is not None
        balance.sessions_used -= 1
        outcome = PackageRemoved(
            booking_id=s.booking_id,
            client_id=s.client_id,
            package_record_id=held.record_id,
            reason="booking_no_show" if s.status == "no_show" else "booking_cancelled",
            session_restored=True,
            sessions_remaining=remaining(balance),
        )
    await broker.publish(
        outbound(topics.PACKAGE_REMOVED, event, outcome),
        topics.PACKAGE_REMOVED,
        key=s.client_id.encode(),
    )


@broker.subscriber(topics.BOOKING_UPDATED, group_id=GROUP, auto_offset_reset="earliest")
async def on_booking_updated(event: Envelope[BookingSnapshot]) -> None:
    """An edit that keeps the service updates the booking; its session stays taken."""
    b = event.data
    async with Session() as session, session.begin():
        booking = await session.get(
            Booking, (event.business_id, b.booking_id), with_for_update=True
        )
        if booking is None or b.version <= booking.version:
            return
        booking.price, booking.status, booking.version = b.price.amount, b.status, b.version


async def client_records(session: AsyncSession, business_id: str, client_id: str) -> list[Record]:
    """The client's records, locked, in the order rule 9 picks them."""
    found = await session.scalars(
        select(Record)
        .where(Record.business_id == business_id, Record.client_id == client_id)
        .order_by(Record.expires_on.asc().nulls_last(), Record.seq)
        .with_for_update()
    )
    return list(found)


async def first_with_session_left(
    session: AsyncSession, records: list[Record], service_id: str
) -> tuple[Record, RecordService] | None:
    """The first record with a session of the service left, and that balance."""
    for record in records:
        balance = await session.get(RecordService, (record.record_id, service_id))
        if balance is not None and (
            balance.sessions_total is None or balance.sessions_used < balance.sessions_total
        ):
            return record, balance
    return None


def remaining(balance: RecordService) -> int | None:
    """Sessions left; None for unlimited."""
    if balance.sessions_total is None:
        return None
    return balance.sessions_total - balance.sessions_used


def discounted(price: Money, percent: Decimal) -> Money:
    """Rule 10 for a percentage discount."""
    after = price.amount * (Decimal(100) - percent) / Decimal(100)
    return Money(
        amount=after.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), currency=price.currency
    )


def outbound(topic: str, cause: Envelope[Any], data: BaseModel) -> dict[str, Any]:
    """The envelope of an outcome, caused by `cause`."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": topic,
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "business_id": cause.business_id,
        "actor": None,
        "causation_id": str(cause.event_id),
        "data": data.model_dump(mode="json"),
    }
