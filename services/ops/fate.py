"""Where a message ended, by its event_id: each service's inbox and every DLQ topic."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.topics import INBOUND, dlq
from services.kernel.db import make_engine
from services.kernel.settings import Settings
from services.ops import reading
from services.ops.dead_letter import DeadLetter
from services.ops.subscriptions import SERVICES

ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class Sighting:
    """One place that saw the message, and what happened to it there."""

    place: str
    what: str

    def __str__(self) -> str:
        return f"{self.place}: {self.what}"


async def fate(
    settings: Settings, event_id: str, engine: AsyncEngine | None = None
) -> list[Sighting]:
    """Every inbox that recorded `event_id`, then every DLQ letter carrying it (empty: not seen)."""
    own = engine is None
    engine = engine or make_engine(settings, pool_size=1)
    try:
        seen = await in_inboxes(engine, event_id)
    finally:
        if own:
            await engine.dispose()
    return seen + await in_dead_letters(settings, event_id)


async def in_inboxes(engine: AsyncEngine, event_id: str) -> list[Sighting]:
    """What each service's inbox recorded of the event."""
    try:
        wanted = uuid.UUID(event_id)
    except ValueError:
        return []  # not a UUID: no inbox holds it, though a DLQ may
    seen: list[Sighting] = []
    async with engine.connect() as conn:
        for schema in SERVICES:
            rows = await conn.execute(
                text(
                    "SELECT consumer, event_type, kafka_partition, kafka_offset, outcome,"
                    " deliveries, reason, detail, handled_at"
                    f" FROM {schema}.inbox WHERE event_id = :id ORDER BY consumer"
                ),
                {"id": wanted},
            )
            seen += [Sighting(row.consumer, _handled(row)) for row in rows]
    return seen


async def in_dead_letters(settings: Settings, event_id: str) -> list[Sighting]:
    """Every DLQ letter whose JSON event_id is `event_id`, read up to the end offsets of now."""
    wanted = event_id.strip().lower()
    needle = wanted.encode()
    tps = await reading.partitions(settings, [dlq(t) for t in INBOUND])
    seen: list[Sighting] = []
    async with reading.consumer(settings) as kafka:
        covered = await reading.logs(kafka, tps)
        async for batch in reading.read(kafka, covered):
            for record in batch:
                # Parse only the values that hold the id somewhere: DLQs may be large.
                if record.value is None or needle not in record.value.lower():
                    continue
                letter = DeadLetter.of(record)
                if (letter.event_id or "").lower() == wanted:
                    seen.append(Sighting(letter.topic, _dead_lettered(letter)))
    return seen


def _handled(row: Any) -> str:
    what = row.outcome
    if row.reason:
        what += f" {row.reason}"
    if row.detail:
        what += f" — {row.detail}"
    duplicates = row.deliveries - 1
    delivered = (
        "delivered once"
        if duplicates == 0
        else f"delivered {row.deliveries} times: {duplicates} "
        f"duplicate{'s' if duplicates > 1 else ''} skipped"
    )
    at: datetime = row.handled_at
    return (
        f"{what} ({delivered}; {row.event_type}[{row.kafka_partition}]@{row.kafka_offset},"
        f" handled {at.isoformat(timespec='seconds')})"
    )


def _dead_lettered(letter: DeadLetter) -> str:
    error = " ".join(letter.error.split())
    if len(error) > ERROR_CHARS:
        error = error[: ERROR_CHARS - 1] + "…"
    attempts = "?" if letter.attempts is None else letter.attempts
    return (
        f"dead-lettered {letter.error_code} — {error} (attempts {attempts}, from {letter.origin})"
    )
