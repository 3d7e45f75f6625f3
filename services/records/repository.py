"""Loading and saving records with their balances, and publishing their state."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any, NamedTuple

import orjson
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import Actor, Envelope
from contracts.outbound import RecordState, RecordStatus
from services.kernel.rows import Columns, execute_rows, insert_rows
from services.kernel.unit_of_work import UnitOfWork
from services.records.domain import Balance, Record
from services.records.tables import package_record, record_event, record_service


def _record(row: Any, balances: Iterable[Balance]) -> Record:
    return Record(
        record_id=row.record_id,
        business_id=row.business_id,
        client_id=row.client_id,
        package_id=row.package_id,
        status=row.status,
        paid=row.paid,
        expires_on=row.expires_on,
        created_on=row.created_on,
        balances=tuple(balances),
        expiry_by_hand=row.expiry_by_hand,
        frozen_from=row.frozen_from,
        frozen_until=row.frozen_until,
    )


async def load(
    conn: AsyncConnection, business_id: str, where: Any, *, lock: bool = True
) -> list[Record]:
    """Records of one business matching `where`, with balances, locked for update."""
    stmt = select(package_record).where(package_record.c.business_id == business_id, where)
    if lock:
        stmt = stmt.order_by(package_record.c.record_id).with_for_update()
    rows = (await conn.execute(stmt)).all()
    if not rows:
        return []
    ids = [r.record_id for r in rows]
    svc = (
        await conn.execute(
            select(record_service)
            .where(record_service.c.record_id.in_(ids))
            .order_by(record_service.c.record_id, record_service.c.service_id.collate("C"))
        )
    ).all()
    by_record: dict[str, list[Balance]] = {i: [] for i in ids}
    for s in svc:
        by_record[s.record_id].append(Balance(s.service_id, s.sessions_total, s.sessions_used))
    return [_record(r, by_record[r.record_id]) for r in rows]


async def save(conn: AsyncConnection, before: Record, after: Record, **extra: Any) -> None:
    """Write what changed between two versions of a record."""
    await conn.execute(
        update(package_record)
        .where(package_record.c.record_id == after.record_id)
        .values(
            status=after.status,
            paid=after.paid,
            expires_on=after.expires_on,
            expiry_by_hand=after.expiry_by_hand,
            frozen_from=after.frozen_from,
            frozen_until=after.frozen_until,
            updated_at=func.now(),
            **extra,
        )
    )
    old = {b.service_id: b for b in before.balances}
    new = {b.service_id: b for b in after.balances}
    gone = [sid for sid in old if sid not in new]
    if gone:
        await conn.execute(
            delete(record_service).where(
                record_service.c.record_id == after.record_id, record_service.c.service_id.in_(gone)
            )
        )
    changed = [b for b in after.balances if old.get(b.service_id) != b]
    if changed:
        stmt = insert(record_service).values(
            [
                {
                    "record_id": after.record_id,
                    "service_id": b.service_id,
                    "sessions_total": b.total,
                    "sessions_used": b.used,
                }
                for b in changed
            ]
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[record_service.c.record_id, record_service.c.service_id],
                set_={
                    "sessions_total": stmt.excluded.sessions_total,
                    "sessions_used": stmt.excluded.sessions_used,
                },
            )
        )


_HISTORY_COLUMNS: Columns = (
    ("record_id", "text"),
    ("kind", "text"),
    ("actor", "jsonb"),
    ("booking_id", "text"),
    ("detail", "jsonb"),
)
INSERT_HISTORY = insert_rows(record_event.fullname, _HISTORY_COLUMNS)
HistoryRow = tuple[str, str, dict[str, Any] | None, str | None, dict[str, Any] | None]


async def note(conn: AsyncConnection, entries: Sequence[dict[str, Any]]) -> None:
    """Append to records' histories: dicts of record_id, kind, actor, booking_id, detail."""
    await note_rows(
        conn,
        [
            (e["record_id"], e["kind"], e.get("actor"), e.get("booking_id"), e.get("detail"))
            for e in entries
        ],
    )


async def note_rows(conn: AsyncConnection, rows: Sequence[HistoryRow]) -> None:
    """Append to records' histories: (record_id, kind, actor, booking_id, detail) each."""
    await execute_rows(conn, INSERT_HISTORY, rows)


def actor_json(actor: Actor | None) -> dict[str, str] | None:
    """The actor as the history keeps it."""
    return actor.model_dump() if actor else None


# A record's published state in one statement; origin and discount are stored as their
# contract JSON and go out as they are.
_STATES = text(
    "SELECT p.record_id, p.client_id, p.package_id, p.paid, p.status, p.expires_on,"
    " p.frozen_until,"
    " CAST(p.origin AS text) AS origin, CAST(p.discount AS text) AS discount,"
    ' array_agg(s.service_id ORDER BY s.service_id COLLATE "C") AS service_ids,'
    ' array_agg(s.sessions_total ORDER BY s.service_id COLLATE "C") AS totals,'
    ' array_agg(s.sessions_used ORDER BY s.service_id COLLATE "C") AS used'
    f" FROM {package_record.fullname} p"
    f" LEFT JOIN {record_service.fullname} s ON s.record_id = p.record_id"
    " WHERE p.record_id = ANY(CAST(:ids AS text[])) GROUP BY p.record_id ORDER BY p.record_id"
)


async def state_rows(conn: AsyncConnection, record_ids: Sequence[str]) -> Sequence[Any]:
    """The rows `state_json` serialises: each record with its balances as arrays."""
    return (await conn.execute(_STATES, {"ids": list(record_ids)})).all() if record_ids else []


class StateRow(NamedTuple):
    """The fields of a record `state_json` reads besides its status and balances."""

    record_id: str
    client_id: str
    package_id: str
    paid: bool
    expires_on: date | None
    origin: str | bytes  # contract JSON
    discount: str | bytes  # contract JSON
    frozen_until: date | None = None


def balances_of(row: Any) -> list[Balance]:
    """The balances of a `state_rows` row (a record without services has one row of nulls)."""
    balances = zip(row.service_ids, row.totals, row.used, strict=True)
    return [Balance(*b) for b in balances if b[0] is not None]


def state_json(
    row: StateRow | Any,
    status: RecordStatus,
    balances: Sequence[Balance],
    notice: dict[str, Any] | None = None,
) -> bytes:
    """`RecordState`'s JSON from a `state_rows` row or a `StateRow`, fields in contract order,
    then a notice's own fields, if any.

    Every part of it was validated when it was written, and it is published for nearly every
    booking: building and validating the model again would double the cost of a redemption.
    """
    return orjson.dumps(
        {
            "package_record_id": row.record_id,
            "client_id": row.client_id,
            "package_id": row.package_id,
            "origin": orjson.Fragment(row.origin),
            "paid": row.paid,
            "status": status,
            "expires_on": row.expires_on,
            "discount": orjson.Fragment(row.discount),
            "services": [
                {
                    "service_id": b.service_id,
                    "sessions_total": b.total,
                    "sessions_used": b.used,
                    "sessions_remaining": b.remaining,
                }
                for b in balances
            ],
            "frozen_until": row.frozen_until,
        }
        | (notice or {})
    )


async def states(conn: AsyncConnection, record_ids: Sequence[str]) -> dict[str, RecordState]:
    """The published form of records, as committed in this transaction, as models."""
    return {
        row.record_id: RecordState.model_validate_json(
            state_json(row, row.status, balances_of(row))
        )
        for row in await state_rows(conn, record_ids)
    }


async def publish_states(
    uow: UnitOfWork,
    topic: str,
    business_id: str,
    record_ids: Sequence[str],
    cause: Envelope[Any] | None,
) -> None:
    """Publish `topic` with each record's state after this transaction's change."""
    for row in await state_rows(uow.conn, record_ids):
        state = state_json(row, row.status, balances_of(row))
        uow.publish_json(topic, row.client_id, state, business_id=business_id, cause=cause)
