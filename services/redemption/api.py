"""What other services and the read API may ask of redemption."""

from __future__ import annotations

from datetime import UTC, date, datetime

from pydantic import BaseModel
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import Money
from services.catalog import api as catalog
from services.records import api as records
from services.redemption import domain
from services.redemption.tables import booking, redemption


class BookingPackage(BaseModel):
    """Which record a booking holds, if any, and the prices."""

    booking_id: str
    client_id: str
    package_record_id: str | None
    service_id: str | None
    price_before: Money | None
    price_after: Money | None


async def booking_package(
    conn: AsyncConnection, business_id: str, booking_id: str
) -> BookingPackage | None:
    """The booking's package; None where this business has no such booking."""
    held = redemption.alias("held")
    row = (
        await conn.execute(
            select(
                booking.c.booking_id,
                booking.c.client_id,
                booking.c.service_id,
                held.c.record_id,
                held.c.service_id.label("held_service_id"),
                held.c.price_before,
                held.c.price_after,
                held.c.currency,
            )
            .select_from(
                booking.outerjoin(
                    held,
                    and_(
                        held.c.business_id == booking.c.business_id,
                        held.c.booking_id == booking.c.booking_id,
                        ~held.c.removed,
                    ),
                )
            )
            .where(booking.c.business_id == business_id, booking.c.booking_id == booking_id)
        )
    ).first()
    if row is None:
        return None
    if row.record_id is None:
        return BookingPackage(
            booking_id=row.booking_id,
            client_id=row.client_id,
            package_record_id=None,
            service_id=row.service_id,
            price_before=None,
            price_after=None,
        )
    return BookingPackage(
        booking_id=row.booking_id,
        client_id=row.client_id,
        package_record_id=row.record_id,
        service_id=row.held_service_id,
        price_before=Money(amount=row.price_before, currency=row.currency),
        price_after=Money(amount=row.price_after, currency=row.currency),
    )


class PackageOption(BaseModel):
    """A record that would serve a booking, in the order it would be picked."""

    package_record_id: str
    package_id: str
    expires_on: date | None
    sessions_remaining: int | None
    price_after: Money


async def package_options(
    conn: AsyncConnection,
    business_id: str,
    client_id: str,
    *,
    service_id: str,
    starts_at: datetime,
    price: Money,
) -> list[PackageOption]:
    """The client's records that would serve a booking of the service at that time and price,
    in the order a redemption picks them: the booking form's Packages field."""
    settings = (await catalog.settings_of(conn, [business_id]))[business_id]
    ledger = domain.Ledger(await records.lock_records(conn, [(business_id, client_id)], lock=False))
    asked = domain.Booking(
        business_id,
        "",
        client_id,
        "pending",
        service_id=service_id,
        price=price,
        starts_at=starts_at,
    )
    found = domain.options(
        asked, ledger, settings.today(datetime.now(UTC)), zone=settings.time_zone
    )
    return [
        PackageOption(
            package_record_id=o.record.record.record_id,
            package_id=o.record.record.package_id,
            expires_on=o.record.record.expires_on,
            sessions_remaining=o.sessions_remaining,
            price_after=o.price_after,
        )
        for o in found
    ]
