"""The redemption service's unit of work: a whole batch of booking events, set-based.

Booking traffic is the largest of the system, so a batch costs a fixed handful of
statements whatever its size: load its bookings (which the kernel has locked), lock and load
their clients' records, decide every event in memory in order, then write everything at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, tzinfo
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import topics
from contracts.base import Envelope, Money
from contracts.outbound import (
    PackageApplied,
    PackageForfeited,
    PackageNotApplied,
    PackageRemoved,
    PackageRepriced,
)
from services.catalog import api as catalog
from services.kernel.kernel import BatchLocks, hold_locks
from services.kernel.rows import Columns, insert_rows, pack, unpack
from services.kernel.unit_of_work import UnitOfWork
from services.kernel.writes import Writes
from services.records import api as records
from services.redemption import domain
from services.redemption.tables import booking, redemption, restoration

BookingKey = tuple[str, str]

_TOPIC: dict[type[domain.Outbound], str] = {
    PackageApplied: topics.PACKAGE_APPLIED,
    PackageRemoved: topics.PACKAGE_REMOVED,
    PackageNotApplied: topics.PACKAGE_NOT_APPLIED,
    PackageRepriced: topics.PACKAGE_REPRICED,
    PackageForfeited: topics.PACKAGE_FORFEITED,
}

_KEY_COLUMNS: Columns = (("business_id", "text"), ("booking_id", "text"))
_LOAD_BOOKINGS = text(
    "SELECT b.*, r.id AS held_id, r.record_id AS held_record_id, r.service_id AS held_service_id,"
    " r.price_before AS held_price_before, r.price_after AS held_price_after,"
    " r.currency AS held_currency"
    f" FROM ({unpack(_KEY_COLUMNS, 'keys')}) AS k"
    f" JOIN {booking.fullname} b"
    "  ON b.business_id = k.business_id AND b.booking_id = k.booking_id"
    f" LEFT JOIN {redemption.fullname} r"
    "  ON r.business_id = b.business_id AND r.booking_id = b.booking_id AND NOT r.removed"
)

_NEW_REDEMPTION_IDS = text(
    "SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"
)

_MARK_REMOVED = text(
    f"UPDATE {redemption.fullname} SET removed = true WHERE id = ANY(CAST(:ids AS bigint[]))"
)


def _booking_key(business_id: str, booking_id: str) -> str:
    return f"{business_id}/{booking_id}"


def _batch_keys(events: Sequence[Envelope[Any]]) -> list[str]:
    bookings = [_booking_key(e.business_id, e.data.booking_id) for e in events]
    return bookings + [records.client_lock_key(e.business_id, e.data.client_id) for e in events]


# What a batch holds alone: its bookings, and its clients' sets of records. Two consumers
# handling the same booking at once take turns (the kernel locks these for the batch): the
# booking row may not exist yet, so a row lock cannot do it. A record sold to a client at the
# same moment waits, or is seen (records' `lock_clients`). The space is the one these locks
# have always had, so that a consumer of the release before, still running during a rolling
# deploy, takes turns with this one.
BOOKING_LOCKS = BatchLocks(records.CLIENT_LOCK_SPACE, _batch_keys)


async def handle_batch(uow: UnitOfWork, events: Sequence[Envelope[Any]]) -> None:
    """Rules 9-12 for a batch: load its bookings and records once, decide in order, write once.

    Its kernel must hold `BOOKING_LOCKS` for the batch.
    """
    keys = sorted({(e.business_id, e.data.booking_id) for e in events})
    bookings = await _load_bookings(uow.conn, keys)
    locked = await records.lock_records(
        uow.conn, _clients(events, bookings.values()), _held_records(bookings.values())
    )
    ledger = domain.Ledger(locked)
    days = await _Days.of_businesses(uow, (e.business_id for e in events))
    changes = _Changes()
    for event in events:
        key = (event.business_id, event.data.booking_id)
        business = event.business_id
        outcome = domain.decide(
            bookings.get(key),
            business,
            event.data,
            ledger,
            days.today(business),
            zone=days.zone(business),
            policy=days.policy(business),
            at=event.occurred_at,
        )
        if isinstance(outcome, domain.Stale):
            uow.ignore(event, "stale_version", outcome.detail)
        elif isinstance(outcome, domain.Refused):
            uow.reject(event, outcome.reason, outcome.detail)
        else:
            bookings[key] = outcome.booking
            changes.add(uow, event, outcome)
    await changes.write(uow, bookings, locked)


class _Days:
    """Each business's time zone, today in it and its policy, looked up once a transaction."""

    def __init__(self, uow: UnitOfWork, settings: Mapping[str, catalog.BusinessSettings]) -> None:
        self._now = uow.now
        self._settings = settings

    @classmethod
    async def of_businesses(cls, uow: UnitOfWork, business_ids: Iterable[str]) -> _Days:
        return cls(uow, await catalog.settings_of(uow.conn, business_ids))

    def zone(self, business_id: str) -> tzinfo:
        return self._settings[business_id].time_zone

    def today(self, business_id: str) -> date:
        return self._settings[business_id].today(self._now)

    def policy(self, business_id: str) -> domain.Policy:
        found = self._settings[business_id]
        return domain.Policy(found.no_show, found.late_cancel_hours)


_CLIENT_COLUMNS: Columns = (("business_id", "text"), ("client_id", "text"))
_AWAITING = text(
    f"SELECT b.business_id, b.booking_id FROM {booking.fullname} b"
    f" JOIN ({unpack(_CLIENT_COLUMNS, 'clients')}) AS c"
    "  ON b.business_id = c.business_id AND b.client_id = c.client_id"
    " WHERE b.awaits_package ORDER BY b.business_id, b.booking_id"
)


async def rematch_waiting(uow: UnitOfWork, limit: int = 500) -> int:
    """Bookings waiting for a package are matched again once a record of their client appeared
    or became usable (created, paid, edited, new terms): the client who buys online and books
    at once is served whichever event is handled first. Returns how many clients were seen."""
    clients = await records.take_usable(uow.conn, limit)
    if not clients:
        return 0
    rows = await uow.conn.execute(_AWAITING, {"clients": pack(clients)})
    keys = [(r.business_id, r.booking_id) for r in rows]
    if not keys:
        return len(clients)
    await hold_locks(uow.conn, BOOKING_LOCKS.space, (_booking_key(*k) for k in keys))
    bookings = await _load_bookings(uow.conn, keys)  # as they are now that they are locked
    locked = await records.lock_records(uow.conn, _clients([], bookings.values()))
    ledger = domain.Ledger(locked)
    days = await _Days.of_businesses(uow, (b for b, _ in keys))
    changes = _Changes()
    for key in keys:
        business = key[0]
        outcome = domain.rematch(
            bookings[key], ledger, days.today(business), zone=days.zone(business)
        )
        if outcome is not None:
            bookings[key] = outcome.booking
            changes.add(uow, None, outcome)
    await changes.write(uow, bookings, locked)
    return len(clients)


def _clients(
    events: Sequence[Envelope[Any]], bookings: Iterable[domain.Booking]
) -> set[tuple[str, str]]:
    """The (business, client) pairs whose records the batch may redeem."""
    pairs = {(e.business_id, e.data.client_id) for e in events}
    return pairs | {(b.business_id, b.client_id) for b in bookings}


def _held_records(bookings: Iterable[domain.Booking]) -> set[tuple[str, str]]:
    """The records the batch's bookings hold, should a booking have changed client."""
    return {(b.business_id, b.held.record_id) for b in bookings if b.held is not None}


async def _load_bookings(
    conn: AsyncConnection, keys: Sequence[BookingKey]
) -> dict[BookingKey, domain.Booking]:
    """The stored state of the batch's bookings, with the redemption each holds."""
    rows = await conn.execute(_LOAD_BOOKINGS, {"keys": pack(keys)})
    return {(r.business_id, r.booking_id): _booking(r) for r in rows}


def _booking(row: Any) -> domain.Booking:
    held = None
    if row.held_id is not None:
        held = domain.Held(
            record_id=row.held_record_id,
            service_id=row.held_service_id,
            price_before=Money(amount=row.held_price_before, currency=row.held_currency),
            price_after=Money(amount=row.held_price_after, currency=row.held_currency),
            stored_id=row.held_id,
        )
    price = None
    if row.price_amount is not None:
        price = Money(amount=row.price_amount, currency=row.currency)
    return domain.Booking(
        business_id=row.business_id,
        booking_id=row.booking_id,
        client_id=row.client_id,
        status=row.status,
        snapshot_version=row.snapshot_version,
        status_version=row.status_version,
        service_id=row.service_id,
        price=price,
        use_package=row.use_package,
        chosen_record_id=row.chosen_record_id,
        released=row.released,
        matched_on=_inputs(row.matched_on),
        held=held,
        starts_at=row.starts_at,
    )


def _inputs(stored: str | None) -> domain.Inputs | None:
    if stored is None:
        return None
    client_id, service_id, use_package, chosen, *rest = orjson.loads(stored)
    day = rest[0] if rest else None  # kept since the appointment's day counts
    return (
        str(client_id),
        str(service_id),
        bool(use_package),
        None if chosen is None else str(chosen),
        None if day is None else str(day),
    )


@dataclass
class _Redemption:
    """A redemption made in this batch, with the booking it was made for."""

    held: domain.Held
    booking: domain.Booking


@dataclass
class _Changes:
    """What a batch's decisions add up to, written set-based at the end."""

    touched: set[BookingKey] = field(default_factory=set)
    made: list[_Redemption] = field(default_factory=list)
    removed: list[domain.Removed] = field(default_factory=list)
    moves: list[records.SessionMove] = field(default_factory=list)
    repriced: dict[int, domain.Held] = field(default_factory=dict)

    def add(self, uow: UnitOfWork, event: Envelope[Any] | None, applied: domain.Applied) -> None:
        """Take in one applied event (None: a booking matched again) and queue what it
        publishes."""
        b = applied.booking
        self.touched.add((b.business_id, b.booking_id))
        for action in applied.actions:
            held = action.held
            if isinstance(action, domain.Repriced):
                self._reprice(action)
                continue
            if isinstance(action, domain.Redeemed):
                self.made.append(_Redemption(held, b))
                kind: records.SessionKind = "redeemed"
                reason: str | None = None
            elif isinstance(action, domain.Forfeited):
                kind, reason = "forfeited", action.reason
            else:
                self.removed.append(action)
                kind = "restored" if action.restored else "released"
                reason = action.reason
            self.moves.append(
                records.SessionMove(
                    b.business_id,
                    held.record_id,
                    held.service_id,
                    b.booking_id,
                    kind,
                    event,
                    reason,
                )
            )
        for outbound in applied.events:
            uow.publish(
                _TOPIC[type(outbound)],
                b.client_id,
                outbound,
                business_id=b.business_id,
                cause=event,
            )

    def _reprice(self, action: domain.Repriced) -> None:
        """A stored redemption is priced again in place; one made in this batch is made so."""
        if action.before.stored_id is not None:
            self.repriced[action.before.stored_id] = action.held
            return
        for made in self.made:
            if made.held is action.before:
                made.held = action.held

    async def write(
        self,
        uow: UnitOfWork,
        bookings: Mapping[BookingKey, domain.Booking],
        locked: Sequence[records.Redeemable],
    ) -> None:
        """Bookings, redemptions, restorations, then the sessions of the locked records.

        All but the marking of let-go redemptions go in one statement.
        """
        conn = uow.conn
        writes = Writes()
        touched = [bookings[k] for k in sorted(self.touched)]
        writes.add(_UPSERT_BOOKINGS, [_booking_row(b) for b in touched])
        stored = [r.held.stored_id for r in self.removed if r.held.stored_id is not None]
        if stored:
            # Now, before the inserts: a booking's new hold needs its old one let go of first.
            await conn.execute(_MARK_REMOVED, {"ids": stored})
        ids = await self._insert_redemptions(conn, writes)
        writes.add(
            _INSERT_RESTORATIONS,
            [
                (
                    r.held.stored_id if r.held.stored_id is not None else ids[r.held],
                    r.reason,
                    r.restored,
                )
                for r in self.removed
            ],
        )
        writes.add(
            _REPRICE,
            [
                (stored_id, held.price_before.amount, held.price_after.amount)
                for stored_id, held in sorted(self.repriced.items())
            ],
        )
        records.move_sessions(uow, writes, self.moves, locked)
        await writes.run(conn)

    async def _insert_redemptions(
        self, conn: AsyncConnection, writes: Writes
    ) -> dict[domain.Held, int]:
        """Queue the batch's redemptions, those already let go of marked so.

        Returns the ids of those let go of in this batch, which their restorations name; the
        others take theirs from the sequence as they are inserted, a round trip fewer.
        """
        let_go = {r.held for r in self.removed}
        rows = [
            (
                r.booking.business_id,
                r.booking.booking_id,
                r.booking.client_id,
                r.held.record_id,
                r.held.service_id,
                r.held.price_before.amount,
                r.held.price_after.amount,
                r.held.price_before.currency,
                r.held in let_go,
            )
            for r in self.made
        ]
        if not any(row[-1] for row in rows):
            writes.add(_INSERT_REDEMPTIONS, rows)
            return {}
        result = await conn.execute(
            _NEW_REDEMPTION_IDS, {"table": redemption.fullname, "n": len(self.made)}
        )
        ids = {r.held: new_id for r, new_id in zip(self.made, result.scalars(), strict=True)}
        numbered = [(ids[r.held], *row) for r, row in zip(self.made, rows, strict=True)]
        writes.add(_INSERT_NUMBERED_REDEMPTIONS, numbered)
        return ids


_BOOKING_COLUMNS: Columns = (
    ("business_id", "text"),
    ("booking_id", "text"),
    ("client_id", "text"),
    ("service_id", "text"),
    ("status", "text"),
    ("price_amount", "numeric"),
    ("currency", "text"),
    ("use_package", "boolean"),
    ("chosen_record_id", "text"),
    ("snapshot_version", "int"),
    ("status_version", "int"),
    ("released", "boolean"),
    ("matched_on", "text"),
    ("starts_at", "timestamptz"),
    ("awaits_package", "boolean"),
)
_REDEMPTION_COLUMNS: Columns = (
    ("id", "bigint"),
    ("business_id", "text"),
    ("booking_id", "text"),
    ("client_id", "text"),
    ("record_id", "text"),
    ("service_id", "text"),
    ("price_before", "numeric"),
    ("price_after", "numeric"),
    ("currency", "text"),
    ("removed", "boolean"),
)
_RESTORATION_COLUMNS: Columns = (
    ("redemption_id", "bigint"),
    ("reason", "text"),
    ("session_restored", "boolean"),
)


_UPSERT_BOOKINGS = insert_rows(
    booking.fullname,
    _BOOKING_COLUMNS,
    " ON CONFLICT (business_id, booking_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c, _ in _BOOKING_COLUMNS[2:])
    + ", updated_at = now()",
)
_INSERT_NUMBERED_REDEMPTIONS = insert_rows(redemption.fullname, _REDEMPTION_COLUMNS)
_INSERT_REDEMPTIONS = insert_rows(redemption.fullname, _REDEMPTION_COLUMNS[1:])
_INSERT_RESTORATIONS = insert_rows(restoration.fullname, _RESTORATION_COLUMNS)
_REPRICE_COLUMNS: Columns = (
    ("id", "bigint"),
    ("price_before", "numeric"),
    ("price_after", "numeric"),
)
_REPRICE = text(
    f"UPDATE {redemption.fullname} r SET price_before = v.price_before,"
    " price_after = v.price_after"
    f" FROM ({unpack(_REPRICE_COLUMNS)}) AS v WHERE r.id = v.id"
)


def _booking_row(b: domain.Booking) -> tuple[Any, ...]:
    return (
        b.business_id,
        b.booking_id,
        b.client_id,
        b.service_id,
        b.status,
        b.price.amount if b.price else None,
        b.price.currency if b.price else None,
        b.use_package,
        b.chosen_record_id,
        b.snapshot_version,
        b.status_version,
        b.released,
        # A list travels inside the rows' JSON, and `->>` hands the column its JSON text.
        None if b.matched_on is None else list(b.matched_on),
        b.starts_at,
        b.awaits_package,
    )
