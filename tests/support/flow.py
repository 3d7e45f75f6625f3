"""Sending the platform's events and waiting until a service has handled them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.topics import INBOUND
from tests.support.kafka import produce

SERVICE_OF = {
    "business.plan_changed": "catalog",
    "package.created": "catalog",
    "package.updated": "catalog",
    "package.disabled": "catalog",
    "package.enabled": "catalog",
    "invoice.published": "invoicing",
    "invoice.paid": "invoicing",
    "invoice.voided": "invoicing",
    "package.assigned": "records",
    "package_record.edit_requested": "records",
    "booking.created": "redemption",
    "booking.updated": "redemption",
    "booking.status_changed": "redemption",
    "business.settings_changed": "catalog",
}


class Platform:
    """Plays the scheduling platform: publishes events keyed as it does, waits for their fate."""

    def __init__(
        self, bootstrap: str, engine: AsyncEngine, options: Mapping[str, object] | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.engine = engine
        self.options = options  # how to reach Kafka securely: Settings.kafka_options()

    async def send(
        self, *events: dict[str, Any], wait: bool = True, keys: list[bytes] | None = None
    ) -> None:
        """Publish events in order, keyed as the platform keys them unless `keys` say otherwise;
        by default wait until each has been handled."""
        messages: list[tuple[str, bytes | dict[str, Any], bytes | None]] = []
        for n, e in enumerate(events):
            key_field = INBOUND[e["event_type"]].key
            key = e["data"].get(key_field) if key_field != "business_id" else e["business_id"]
            messages.append((e["event_type"], e, keys[n] if keys else str(key).encode()))
        await produce(self.bootstrap, messages, self.options)
        if wait:
            for e in events:
                await self.handled(e)

    async def handled(
        self,
        event: dict[str, Any],
        timeout: float = 60.0,  # noqa: ASYNC109 - a polling deadline
    ) -> tuple[str, str | None]:
        """Wait until the event's service has recorded it; its outcome and reason."""
        schema = SERVICE_OF[event["event_type"]]
        query = text(f"SELECT outcome, reason FROM {schema}.inbox WHERE event_id = :id")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.engine.connect() as conn:
                row = (await conn.execute(query, {"id": uuid.UUID(event["event_id"])})).first()
            if row is not None:
                return row.outcome, row.reason
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"{event['event_type']} {event['event_id']} was not handled in {timeout}s"
        )

    async def settled(
        self,
        event: dict[str, Any],
        timeout: float = 60.0,  # noqa: ASYNC109 - a polling deadline
    ) -> tuple[str, str | None]:
        """Wait until the event is handled and no longer waits for what it needs; its outcome."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcome = await self.handled(event, timeout)
            if outcome[0] != "deferred":
                return outcome
            await asyncio.sleep(0.1)
        raise AssertionError(f"{event['event_type']} {event['event_id']} still waits")

    async def outcome(self, event: dict[str, Any]) -> tuple[str, str | None]:
        """The event's recorded outcome (waits for it)."""
        return await self.handled(event)

    async def rows(self, query: Any) -> list[Any]:
        """Rows of a query on the shared database."""
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def records(self, business_id: str, client_id: str | None = None) -> list[Any]:
        """A business's records with their balances, oldest first."""
        from services.records.tables import package_record, record_service

        query = (
            select(
                package_record,
                record_service.c.service_id,
                record_service.c.sessions_total,
                record_service.c.sessions_used,
            )
            .join(record_service, record_service.c.record_id == package_record.c.record_id)
            .where(package_record.c.business_id == business_id)
            .order_by(package_record.c.seq, record_service.c.service_id)
        )
        if client_id:
            query = query.where(package_record.c.client_id == client_id)
        return await self.rows(query)
