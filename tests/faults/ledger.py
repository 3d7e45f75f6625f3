"""End-state checks against what was produced: every event id accounted for, and the rules."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.faults.bookings import Workload

BOOKING_TOPICS = ("booking.created", "booking.updated", "booking.status_changed")


async def wait_handled(
    engine: AsyncEngine,
    event_ids: list[str],
    timeout: float = 180.0,  # noqa: ASYNC109
) -> int:
    """Wait until the redemption inbox holds every event id; how many it holds at the end."""
    ids = [uuid.UUID(e) for e in event_ids]
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        async with engine.connect() as conn:
            seen = int(
                await conn.scalar(
                    text("SELECT count(*) FROM redemption.inbox WHERE event_id = ANY(:ids)"),
                    {"ids": ids},
                )
                or 0
            )
        if seen == len(ids) or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(0.3)


async def problems(engine: AsyncEngine, w: Workload) -> list[str]:
    """What in the database disagrees with the ledger and the rules (empty: all is well)."""
    found: list[str] = []
    produced = [e["event_id"] for b in w.bookings for e in b.events]
    async with engine.connect() as conn:
        handled = set(
            map(
                str,
                (
                    await conn.execute(
                        text("SELECT event_id FROM redemption.inbox WHERE event_id = ANY(:ids)"),
                        {"ids": [uuid.UUID(e) for e in produced]},
                    )
                ).scalars(),
            )
        )
        missing = set(produced) - handled
        if missing:
            found.append(f"{len(missing)} events never handled")
        rows = (
            await conn.execute(
                text(
                    "SELECT booking_id, count(*) FILTER (WHERE NOT removed) AS held,"
                    " count(*) AS made"
                    " FROM redemption.redemption WHERE business_id = :b GROUP BY booking_id"
                ),
                {"b": w.business_id},
            )
        ).all()
        per_booking = {r.booking_id: r for r in rows}
        for b in w.bookings:
            r = per_booking.get(b.booking_id)
            held, made = (r.held, r.made) if r else (0, 0)
            if made > 1:
                found.append(f"{b.booking_id} redeemed {made} times")
            if held != (0 if b.ends_released else 1):
                found.append(f"{b.booking_id} holds {held} redemptions")
        used = {
            r.client_id: r.used
            for r in (
                await conn.execute(
                    text(
                        "SELECT p.client_id, s.sessions_used AS used FROM records.package_record p"
                        " JOIN records.record_service s USING (record_id) WHERE p.business_id = :b"
                    ),
                    {"b": w.business_id},
                )
            ).all()
        }
        if used != w.expected_used():
            diff = {c: (used.get(c), n) for c, n in w.expected_used().items() if used.get(c) != n}
            found.append(f"sessions used differ (got, wanted): {diff}")
        causes = {e["event_id"]: b.booking_id for b in w.bookings for e in b.events}
        outcomes = Counter(
            causes[str(c)]
            for c in (
                await conn.execute(
                    text(
                        "SELECT causation_id FROM redemption.outbox WHERE topic IN"
                        " ('booking.package_applied', 'booking.package_not_applied')"
                        " AND causation_id = ANY(:ids)"
                    ),
                    {"ids": [uuid.UUID(e) for e in causes]},
                )
            ).scalars()
        )
        # Whichever of a booking's events matched it (an edit may arrive before its creation)
        # caused its one outcome; a booking cancelled before it was ever seen has none.
        doubled = [b for b, n in outcomes.items() if n > 1]
        absent = [
            b.booking_id for b in w.bookings if not b.ends_released and not outcomes[b.booking_id]
        ]
        if doubled or absent:
            found.append(f"outbox outcomes: {len(absent)} missing, {len(doubled)} doubled")
        orphans = await conn.scalar(
            text(
                "SELECT count(*) FROM redemption.restoration t JOIN redemption.redemption r"
                " ON r.id = t.redemption_id WHERE r.business_id = :b AND NOT r.removed"
            ),
            {"b": w.business_id},
        )
        if orphans:
            found.append(f"{orphans} restorations of redemptions still held")
    return found


async def lag(bootstrap: str, group: str, topics: tuple[str, ...] = BOOKING_TOPICS) -> int:
    """How many messages of `topics` the consumer group has not committed yet."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()  # loads the partitions of every topic
        parts = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        ends = await consumer.end_offsets(parts)
        behind = 0
        for tp in parts:
            committed = await consumer.committed(tp)
            behind += ends[tp] - (committed or 0)
        return behind
    finally:
        await consumer.stop()


async def wait_no_lag(bootstrap: str, group: str, timeout: float = 60.0) -> int:  # noqa: ASYNC109
    """Wait until the group has committed everything; the lag left at the end."""
    deadline = time.monotonic() + timeout
    behind = await lag(bootstrap, group)
    while behind and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        behind = await lag(bootstrap, group)
    return behind


def produced_ids(w: Workload) -> list[str]:
    """Every event id of the workload."""
    return [e["event_id"] for b in w.bookings for e in b.events]


def summary(w: Workload, extra: dict[str, Any] | None = None) -> str:
    """A line for the results table."""
    ended = sum(b.ends_released for b in w.bookings)
    parts = [
        f"{len(produced_ids(w))} events, {len(w.bookings)} bookings ({ended} cancelled/no-show)"
    ]
    parts += [f"{k} {v}" for k, v in (extra or {}).items()]
    return "; ".join(parts)
