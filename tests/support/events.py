"""Vivid, valid inbound events, built as the platform sends them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

OWNER = {"user_id": "u-owner", "role": "owner"}
STAFF = {"user_id": "u-desk", "role": "staff"}


def envelope(
    topic: str,
    business_id: str,
    data: dict[str, Any],
    actor: dict[str, str] | None = STAFF,
    *,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """An inbound envelope of `topic` for `business_id` (that happened now, by default)."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": topic,
        "occurred_at": stamp(occurred_at or datetime.now(UTC)),
        "business_id": business_id,
        "actor": actor,
        "data": data,
    }


def stamp(moment: datetime) -> str:
    """An RFC 3339 UTC timestamp, as the platform writes them."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def plan(
    business_id: str, plan_name: str = "pro", occurred_at: datetime | None = None
) -> dict[str, Any]:
    """The business moves to a plan."""
    return envelope(
        "business.plan_changed",
        business_id,
        {"plan": plan_name},
        actor={"user_id": "system", "role": "system"},
        occurred_at=occurred_at,
    )


def package(
    business_id: str,
    package_id: str = "pkg-relax10",
    *,
    version: int = 1,
    topic: str = "package.created",
    sessions: int | None = 10,
    services: list[dict[str, Any]] | None = None,
    status: str = "active",
    discount: dict[str, Any] | None = None,
    validity: dict[str, Any] | None = None,
    actor: dict[str, str] | None = OWNER,
) -> dict[str, Any]:
    """`Relax 10`: ten 60-minute massages, free with the package, valid a year."""
    return envelope(
        topic,
        business_id,
        {
            "package_id": package_id,
            "name": "Relax 10",
            "price": {"amount": "450.00", "currency": "EUR"},
            "services": services or [{"service_id": "svc-massage-60", "sessions": sessions}],
            "discount": discount or {"type": "percent", "value": "100"},
            "validity": validity or {"type": "days", "days": 365},
            "status": status,
            "version": version,
        },
        actor=actor,
    )


def invoice(
    business_id: str,
    client_id: str = "cli-ana",
    invoice_id: str = "inv-1",
    *,
    lines: list[dict[str, Any]] | None = None,
    paid: bool = False,
    event_id: str | None = None,
) -> dict[str, Any]:
    """An invoice selling packages (by default two Relax 10)."""
    return envelope(
        "invoice.published",
        business_id,
        {
            "invoice_id": invoice_id,
            "client_id": client_id,
            "paid": paid,
            "lines": lines if lines is not None else [package_line("l1", quantity=2)],
        },
        event_id=event_id,
    )


def package_line(
    line_id: str, package_id: str = "pkg-relax10", quantity: int = 1
) -> dict[str, Any]:
    """An invoice line selling `quantity` records of a package."""
    return {
        "line_id": line_id,
        "type": "package",
        "package_id": package_id,
        "quantity": quantity,
        "unit_price": {"amount": "450.00", "currency": "EUR"},
    }


def new_business() -> str:
    """A business of its own for one test: tests share the database and topics, never tenants."""
    return f"b-{uuid.uuid4().hex[:12]}"


def booking(
    business_id: str,
    booking_id: str,
    *,
    client_id: str = "cli-ana",
    service_id: str = "svc-massage-60",
    status: str = "confirmed",
    version: int = 1,
    record_id: str | None = None,
    use_package: bool = True,
    price: str = "60.00",
    currency: str = "EUR",
    source: str = "calendar",
    topic: str = "booking.created",
    event_id: str | None = None,
    starts_at: datetime | None = None,
) -> dict[str, Any]:
    """A booking of a 60-minute massage, as the calendar or the widget sends it (by default
    three days ahead)."""
    return envelope(
        topic,
        business_id,
        {
            "booking_id": booking_id,
            "client_id": client_id,
            "service_id": service_id,
            "starts_at": stamp(starts_at or _in_three_days()),
            "status": status,
            "price": {"amount": price, "currency": currency},
            "source": source,
            "package_record_id": record_id,
            "use_package": use_package,
            "version": version,
        },
        actor={"user_id": client_id, "role": "client"} if source == "widget" else STAFF,
        event_id=event_id,
    )


def _in_three_days() -> datetime:
    soon = datetime.now(UTC) + timedelta(days=3)
    return soon.replace(hour=10, minute=0, second=0, microsecond=0)


def status_change(
    business_id: str,
    booking_id: str,
    status: str,
    version: int,
    *,
    client_id: str = "cli-ana",
    previous: str = "confirmed",
) -> dict[str, Any]:
    """A booking moves to another status."""
    return envelope(
        "booking.status_changed",
        business_id,
        {
            "booking_id": booking_id,
            "client_id": client_id,
            "status": status,
            "previous_status": previous,
            "version": version,
        },
    )
