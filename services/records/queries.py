"""Reading records for the platform: a client's records and one record's history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.outbound import RecordState
from services.records import repository
from services.records.tables import package_record, record_event, record_service


class RecordView(RecordState):
    """A record with its balances, as the booking form shows it."""

    created_at: datetime


class HistoryEntry(BaseModel):
    """One thing that happened to a record."""

    kind: str = Field(
        description="created, paid, attached, detached, edited, terms_changed, "
        "redeemed, restored, released, cancelled, expired"
    )
    at: datetime
    actor: dict[str, str] | None = None
    booking_id: str | None = None
    detail: dict[str, Any] | None = None


class RecordWithHistory(RecordView):
    """A record and everything that happened to it, oldest first."""

    history: list[HistoryEntry]


async def client_records(
    conn: AsyncConnection,
    business_id: str,
    client_id: str,
    *,
    service_id: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    before: int | None = None,
) -> tuple[list[RecordView], int | None]:
    """The client's records, newest first, optionally those covering a service or in a status:
    at most `limit` of them, older than the record numbered `before`; and the number to ask the
    next page `before`, if there is one. Records sold meanwhile are newer: they never shift a
    page."""
    stmt = select(
        package_record.c.record_id, package_record.c.created_at, package_record.c.seq
    ).where(package_record.c.business_id == business_id, package_record.c.client_id == client_id)
    if before is not None:
        stmt = stmt.where(package_record.c.seq < before)
    if status:
        stmt = stmt.where(package_record.c.status == status)
    if service_id:
        stmt = stmt.where(
            exists().where(
                record_service.c.record_id == package_record.c.record_id,
                record_service.c.service_id == service_id,
            )
        )
    stmt = stmt.order_by(package_record.c.seq.desc())
    if limit is not None:
        stmt = stmt.limit(limit + 1)
    rows = (await conn.execute(stmt)).all()
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit is not None else rows
    states = await repository.states(conn, [r.record_id for r in rows])
    views = [RecordView(**states[r.record_id].model_dump(), created_at=r.created_at) for r in rows]
    return views, (rows[-1].seq if more else None)


async def record_with_history(
    conn: AsyncConnection, business_id: str, record_id: str
) -> RecordWithHistory | None:
    """One record of the business with its history; None for another business's record."""
    created_at = await conn.scalar(
        select(package_record.c.created_at).where(
            package_record.c.business_id == business_id, package_record.c.record_id == record_id
        )
    )
    if created_at is None:
        return None
    state = (await repository.states(conn, [record_id]))[record_id]
    events = (
        await conn.execute(
            select(record_event)
            .where(record_event.c.record_id == record_id)
            .order_by(record_event.c.id)
        )
    ).all()
    return RecordWithHistory(
        **state.model_dump(),
        created_at=created_at,
        history=[
            HistoryEntry(
                kind=e.kind, at=e.at, actor=e.actor, booking_id=e.booking_id, detail=e.detail
            )
            for e in events
        ],
    )
