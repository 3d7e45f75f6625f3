"""What other services and the read API may ask of redemption."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import Money
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
