"""Sessions bookings take from records and give back: many records per statement.

Redemption calls these in its own transaction, so a redemption and the balance check it
depends on commit together; the balances themselves are only ever written here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import topics
from contracts.base import Envelope
from contracts.inbound import Discount
from contracts.outbound import RecordStatus
from services.kernel.rows import Columns, pack, unpack
from services.kernel.unit_of_work import UnitOfWork
from services.kernel.writes import Writes
from services.records import repository
from services.records.domain import Balance, Record, status_for
from services.records.tables import package_record, record_service

SessionKind = Literal["redeemed", "restored", "released", "forfeited"]
_DELTA: dict[SessionKind, int] = {"redeemed": 1, "restored": -1, "released": 0, "forfeited": 0}
_DISCOUNT: TypeAdapter[Discount] = TypeAdapter(Discount)
_RECORDS = package_record.fullname
_SERVICES = record_service.fullname

_CLIENT_COLUMNS: Columns = (("business_id", "text"), ("client_id", "text"))
_RECORD_COLUMNS: Columns = (("business_id", "text"), ("record_id", "text"))
_MOVE_COLUMNS: Columns = (*_RECORD_COLUMNS, ("service_id", "text"), ("delta", "int"))
_STATUS_COLUMNS: Columns = (("record_id", "text"), ("status", "text"))

_SELECT_RECORDS = (
    "SELECT p.record_id, p.business_id, p.client_id, p.package_id, p.status, p.paid,"
    " p.expires_on, p.created_on, p.expiry_by_hand, p.frozen_from, p.frozen_until, p.seq,"
    " CAST(p.discount AS text) AS discount, CAST(p.origin AS text) AS origin"
    f" FROM {_RECORDS} p WHERE p.record_id IN ("
    f" SELECT q.record_id FROM {_RECORDS} q"
    f"  JOIN ({unpack(_CLIENT_COLUMNS, 'clients')}) AS c"
    "   ON q.business_id = c.business_id AND q.client_id = c.client_id"
    " UNION ALL"
    f" SELECT q.record_id FROM {_RECORDS} q"
    f"  JOIN ({unpack(_RECORD_COLUMNS, 'named')}) AS n"
    "   ON q.business_id = n.business_id AND q.record_id = n.record_id)"
    " ORDER BY p.record_id"
)
# Rows are locked in record id order, so two batches over the same records cannot deadlock.
_LOCK_RECORDS = text(_SELECT_RECORDS + " FOR UPDATE OF p")
_READ_RECORDS = text(_SELECT_RECORDS)

_BALANCES = text(
    f"SELECT record_id, service_id, sessions_total, sessions_used FROM {_SERVICES}"
    ' WHERE record_id = ANY(CAST(:ids AS text[])) ORDER BY record_id, service_id COLLATE "C"'
)

# The join on package_record keeps a move from touching another business's record.
_ADD_USED = text(
    f"UPDATE {_SERVICES} s SET sessions_used = s.sessions_used + d.delta"
    f" FROM ({unpack(_MOVE_COLUMNS)}) AS d, {_RECORDS} p"
    " WHERE s.record_id = d.record_id AND s.service_id = d.service_id"
    "  AND p.record_id = d.record_id AND p.business_id = d.business_id"
)

_SET_STATUS = text(
    f"UPDATE {_RECORDS} p SET status = v.status, updated_at = now()"
    f" FROM ({unpack(_STATUS_COLUMNS)}) AS v"
    " WHERE p.record_id = v.record_id"
)


@dataclass(frozen=True, slots=True)
class Redeemable:
    """A record with what redemption needs beside its balances: its discount and its age."""

    record: Record
    discount: Discount
    seq: int
    discount_json: str  # as stored: the contract's JSON
    origin_json: str


@dataclass(frozen=True, slots=True)
class SessionMove:
    """A booking took a session, gave it back, let a dead record keep it (released), or kept it
    by the business's policy (forfeited)."""

    business_id: str
    record_id: str
    service_id: str
    booking_id: str
    kind: SessionKind
    cause: Envelope[Any] | None  # None for a booking matched again when a record appeared
    reason: str | None = None


async def lock_records(
    conn: AsyncConnection,
    clients: Iterable[tuple[str, str]],
    named: Iterable[tuple[str, str]] = (),
    *,
    lock: bool = True,
) -> list[Redeemable]:
    """Lock (unless `lock` is false, for a read) and load, with balances, the records of these
    clients and these named records."""
    client_keys = sorted(set(clients))
    record_keys = sorted(set(named))
    if not client_keys and not record_keys:
        return []
    rows = (
        await conn.execute(
            _LOCK_RECORDS if lock else _READ_RECORDS,
            {"clients": pack(client_keys), "named": pack(record_keys)},
        )
    ).all()
    if not rows:
        return []
    balances: dict[str, list[Balance]] = {r.record_id: [] for r in rows}
    for s in await conn.execute(_BALANCES, {"ids": list(balances)}):
        balances[s.record_id].append(Balance(s.service_id, s.sessions_total, s.sessions_used))
    return [_redeemable(r, balances[r.record_id]) for r in rows]


def _redeemable(row: Any, balances: list[Balance]) -> Redeemable:
    record = Record(
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
    return Redeemable(record, _discount(row.discount), row.seq, row.discount, row.origin)


@functools.lru_cache(maxsize=4096)
def _discount(document: str) -> Discount:
    """Discounts repeat across a business's records: each distinct one is validated once."""
    return _DISCOUNT.validate_json(document)


def move_sessions(
    uow: UnitOfWork,
    writes: Writes,
    moves: Sequence[SessionMove],
    locked: Iterable[Redeemable],
) -> list[str]:
    """Queue session moves set-based with their history in `writes`, and publish each changed
    record once; returns them.

    `locked` are the records `lock_records` locked in this transaction, the moved ones among
    them: their state after the moves follows from them without reading them again.
    """
    if not moves:
        return []
    deltas: dict[tuple[str, str, str], int] = {}
    for m in moves:
        key = (m.business_id, m.record_id, m.service_id)
        deltas[key] = deltas.get(key, 0) + _DELTA[m.kind]
    changed = {k: d for k, d in deltas.items() if d}
    writes.add(
        _ADD_USED,
        [(*key, delta) for key, delta in changed.items()],
        unmatched="a session move names a record or service its business does not have",
    )
    writes.add(repository.INSERT_HISTORY, [_history(m) for m in moves])
    by_id = {r.record.record_id: r for r in locked}
    moved: dict[str, dict[str, int]] = {}
    for (_, record_id, service_id), delta in changed.items():
        moved.setdefault(record_id, {})[service_id] = delta
    last = {m.record_id: m for m in moves}
    statuses: dict[str, RecordStatus] = {}
    for rid in sorted(moved):
        if rid not in by_id:
            raise LookupError(f"record {rid} moved without being locked first")
        settled = _Settled.of(by_id[rid], moved[rid])
        if settled.status != by_id[rid].record.status:
            statuses[rid] = settled.status
        move = last[rid]
        publish = functools.partial(
            uow.publish_json, business_id=move.business_id, cause=move.cause
        )
        publish(topics.RECORD_UPDATED, settled.client_id, settled.state())
        for service_id in settled.last_one_left(moved[rid]):
            notice = settled.state({"service_id": service_id})
            publish(topics.RECORD_LOW_BALANCE, settled.client_id, notice)
    writes.add(_SET_STATUS, list(statuses.items()))
    return sorted(moved)


@dataclass(frozen=True, slots=True)
class _Settled:
    """A locked record after its moves: its status (active or exhausted from the new
    balances) and what its published state is made of."""

    row: repository.StateRow
    status: RecordStatus
    balances: list[Balance]

    @property
    def client_id(self) -> str:
        return self.row.client_id

    @classmethod
    def of(cls, locked: Redeemable, deltas: dict[str, int]) -> _Settled:
        record = locked.record
        # `lock_records` loaded the balances in the order a published state lists them.
        balances = [
            Balance(b.service_id, b.total, b.used + deltas.get(b.service_id, 0))
            for b in record.balances
        ]
        row = repository.StateRow(
            record.record_id,
            record.client_id,
            record.package_id,
            record.paid,
            record.expires_on,
            locked.origin_json,
            locked.discount_json,
            record.frozen_until,
        )
        return cls(row, status_for(record.status, balances), balances)

    def state(self, notice: dict[str, Any] | None = None) -> bytes:
        """The record's state's JSON, with a notice's fields if any."""
        return repository.state_json(self.row, self.status, self.balances, notice)

    def last_one_left(self, deltas: dict[str, int]) -> list[str]:
        """The services a redemption left with exactly one session."""
        return [
            b.service_id
            for b in self.balances
            if deltas.get(b.service_id, 0) > 0 and b.remaining == 1
        ]


def _history(m: SessionMove) -> repository.HistoryRow:
    """The history row of a redemption, restoration or release, with its booking."""
    actor = repository.actor_json(m.cause.actor) if m.cause else None
    return (m.record_id, m.kind, actor, m.booking_id, _detail(m))


def _detail(m: SessionMove) -> dict[str, str]:
    detail = {"service_id": m.service_id}
    if m.cause:
        detail["event_id"] = str(m.cause.event_id)
    return detail | ({"reason": m.reason} if m.reason else {})
