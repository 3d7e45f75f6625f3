"""Vivid, valid inbound events, built as the platform sends them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

OWNER = {"user_id": "u-owner", "role": "owner"}
STAFF = {"user_id": "u-desk", "role": "staff"}


def envelope(
    topic: str,
    business_id: str,
    data: dict[str, Any],
    actor: dict[str, str] | None = STAFF,
    event_id: str | None = None,
) -> dict[str, Any]:
    """An inbound envelope of `topic` for `business_id`."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": topic,
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "business_id": business_id,
        "actor": actor,
        "data": data,
    }


def plan(business_id: str, plan_name: str = "pro") -> dict[str, Any]:
    """The business moves to a plan."""
    return envelope(
        "business.plan_changed",
        business_id,
        {"plan": plan_name},
        actor={"user_id": "system", "role": "system"},
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
