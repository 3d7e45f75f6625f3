"""What other services may do with records: always in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, exists, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import topics
from contracts.base import Envelope
from contracts.inbound import PackageDefined
from contracts.outbound import AssignmentOrigin, InvoiceOrigin
from services.catalog import api as catalog
from services.kernel.kernel import hold_locks
from services.kernel.rows import Columns, execute_rows, insert_rows, pack
from services.kernel.unit_of_work import UnitOfWork
from services.records import domain, repository
from services.records.queries import (
    RecordView,
    RecordWithHistory,
    client_records,
    record_with_history,
)
from services.records.sessions import (
    Redeemable,
    SessionKind,
    SessionMove,
    lock_records,
    move_sessions,
)
from services.records.tables import package_record, record_service, usable_change

_RECORD_COLUMNS: Columns = (
    ("record_id", "text"),
    ("invoice_id", "text"),
    ("line_id", "text"),
    ("unit", "int"),
    ("assignment_id", "text"),
    ("business_id", "text"),
    ("client_id", "text"),
    ("package_id", "text"),
    ("origin", "jsonb"),
    ("paid", "boolean"),
    ("status", "text"),
    ("expires_on", "date"),
    ("discount", "jsonb"),
    ("created_on", "date"),
)
_INSERT_RECORDS = insert_rows(
    package_record.fullname, _RECORD_COLUMNS, " ON CONFLICT DO NOTHING RETURNING record_id"
)
_SERVICE_COLUMNS: Columns = (
    ("record_id", "text"),
    ("service_id", "text"),
    ("sessions_total", "int"),
)
_INSERT_SERVICES = insert_rows(record_service.fullname, _SERVICE_COLUMNS)


@dataclass(frozen=True, slots=True)
class Sale:
    """Records to create: `quantity` copies of a package's terms for a client (rule 5)."""

    business_id: str
    client_id: str
    package: PackageDefined
    origin: InvoiceOrigin | AssignmentOrigin
    quantity: int
    paid: bool
    cause: Envelope[Any]


async def create_records(
    uow: UnitOfWork,
    business_id: str,
    client_id: str,
    package: PackageDefined,
    origin: InvoiceOrigin | AssignmentOrigin,
    *,
    quantity: int,
    paid: bool,
    cause: Envelope[Any],
) -> list[str]:
    """Rule 5: `quantity` records copying the package's terms; a repeat creates none."""
    sale = Sale(business_id, client_id, package, origin, quantity, paid, cause)
    return await create_many(uow, [sale])


async def create_many(uow: UnitOfWork, sales: Sequence[Sale]) -> list[str]:
    """Rule 5 for many sales in a few statements; returns the records created, in sale order.

    A record is created on the day its sale or assignment happened, in the business's time
    zone, however late it is handled.
    """
    if not sales:
        return []
    clients = {(sale.business_id, sale.client_id) for sale in sales}
    await lock_clients(uow.conn, clients)
    settings = await catalog.settings_of(uow.conn, (b for b, _ in clients))
    of_record: dict[str, _Terms] = {}
    rows: list[tuple[Any, ...]] = []
    for sale in sales:
        created_on = settings[sale.business_id].today(sale.cause.occurred_at)
        terms = _Terms.of(sale, created_on)
        for key in _record_keys(sale):
            of_record[key[0]] = terms
            rows.append(
                (
                    *key,
                    sale.business_id,
                    sale.client_id,
                    sale.package.package_id,
                    orjson.Fragment(terms.origin),
                    sale.paid,
                    "active",
                    terms.expires_on,
                    orjson.Fragment(terms.discount),
                    created_on,
                )
            )
    if not rows:
        return []
    fresh = set((await uow.conn.execute(_INSERT_RECORDS, {"rows": pack(rows)})).scalars())
    created = [r[0] for r in rows if r[0] in fresh]
    if not created:
        return []
    await uow.conn.execute(
        _INSERT_SERVICES,
        {
            "rows": pack(
                [(rid, b.service_id, b.total) for rid in created for b in of_record[rid].balances]
            )
        },
    )
    history: list[repository.HistoryRow] = []
    for rid in created:
        terms = of_record[rid]
        sale = terms.sale
        detail = {"origin": orjson.Fragment(terms.origin), "paid": sale.paid}
        history.append((rid, "created", repository.actor_json(sale.cause.actor), None, detail))
        # A record just created is what its sale says: its state needs no reading back.
        uow.publish_json(
            topics.RECORD_CREATED,
            sale.client_id,
            repository.state_json(terms.created(rid), "active", terms.balances),
            business_id=sale.business_id,
            cause=sale.cause,
        )
    await repository.note_rows(uow.conn, history)
    await mark_usable(uow.conn, clients)
    return created


# A client's records are only ever added under this lock, which redemption holds for a batch's
# clients as well: a booking handled while the client's record is being sold either sees the
# record, or is waiting for a package before the sale commits and so is matched again after.
CLIENT_LOCK_SPACE = 7304  # the redemption's batch lock space: keys never collide with bookings'


def client_lock_key(business_id: str, client_id: str) -> str:
    """The lock key of a client's set of records."""
    return f"client:{business_id}/{client_id}"


async def lock_clients(conn: AsyncConnection, clients: Iterable[tuple[str, str]]) -> None:
    """Hold these clients' record-set locks until the transaction ends."""
    await hold_locks(conn, CLIENT_LOCK_SPACE, (client_lock_key(b, c) for b, c in clients))


_MARK_USABLE = insert_rows(
    usable_change.fullname,
    (("business_id", "text"), ("client_id", "text")),
    " ON CONFLICT (business_id, client_id) DO NOTHING",
)


async def mark_usable(conn: AsyncConnection, clients: Iterable[tuple[str, str]]) -> None:
    """Note that these clients have a record that appeared or became more usable, so that
    bookings waiting for a package are matched again (`take_usable`)."""
    await execute_rows(conn, _MARK_USABLE, sorted(set(clients)))


_TAKE_USABLE = text(
    f"DELETE FROM {usable_change.fullname} u WHERE (u.business_id, u.client_id) IN ("
    f" SELECT business_id, client_id FROM {usable_change.fullname}"
    " ORDER BY changed_at LIMIT :limit FOR UPDATE SKIP LOCKED)"
    " RETURNING u.business_id, u.client_id"
)


async def take_usable(conn: AsyncConnection, limit: int) -> list[tuple[str, str]]:
    """Clients whose records appeared or became usable since the last look, oldest first; they
    are forgotten when the caller's transaction commits."""
    rows = await conn.execute(_TAKE_USABLE, {"limit": limit})
    return sorted((r.business_id, r.client_id) for r in rows)


@dataclass(frozen=True, slots=True)
class _Terms:
    """What every record of one sale starts with; the JSON fields as their contract JSON."""

    sale: Sale
    expires_on: date | None
    origin: bytes
    discount: bytes
    balances: list[domain.Balance]

    @classmethod
    def of(cls, sale: Sale, created_on: date) -> _Terms:
        discount = sale.package.discount
        return cls(
            sale,
            domain.expires_on(sale.package, created_on),
            sale.origin.__pydantic_serializer__.to_json(sale.origin),
            discount.__pydantic_serializer__.to_json(discount),
            sorted(
                (domain.Balance(s.service_id, s.sessions) for s in sale.package.services),
                key=lambda b: b.service_id,
            ),
        )

    def created(self, record_id: str) -> repository.StateRow:
        """The record `record_id` of this sale as `repository.state_json` reads it."""
        sale = self.sale
        return repository.StateRow(
            record_id,
            sale.client_id,
            sale.package.package_id,
            sale.paid,
            self.expires_on,
            self.origin,
            self.discount,
        )


def _record_keys(sale: Sale) -> list[tuple[str, str | None, str | None, int | None, str | None]]:
    """The identity of each record a sale makes: a repeat of the sale makes the same ids.

    Each is (record_id, invoice_id, line_id, unit, assignment_id), as `_RECORD_COLUMNS` begin.
    """
    origin = sale.origin
    if isinstance(origin, InvoiceOrigin):
        return [
            (
                domain.record_id(sale.business_id, "invoice", origin.invoice_id, origin.line_id, n),
                origin.invoice_id,
                origin.line_id,
                n,
                None,
            )
            for n in range(sale.quantity)
        ]
    record_id = domain.record_id(sale.business_id, "assignment", origin.assignment_id)
    return [(record_id, None, None, None, origin.assignment_id)]


def _of_invoice(invoice_id: str) -> Any:
    return or_(
        package_record.c.invoice_id == invoice_id,
        package_record.c.attached_invoice_id == invoice_id,
    )


async def pay_invoice(
    uow: UnitOfWork, business_id: str, invoice_id: str, cause: Envelope[Any]
) -> None:
    """Rule 6: every record the invoice created or was added to becomes paid."""
    records = await repository.load(uow.conn, business_id, _of_invoice(invoice_id))
    paid = [r for r in records if not r.paid and r.status != "cancelled"]
    for r in paid:
        await repository.save(uow.conn, r, replace(r, paid=True))
    await _noted(uow, paid, "paid", cause, {"invoice_id": invoice_id})
    await mark_usable(uow.conn, [(r.business_id, r.client_id) for r in paid])
    await repository.publish_states(
        uow, topics.RECORD_PAID, business_id, [r.record_id for r in paid], cause
    )


async def void_invoice(
    uow: UnitOfWork, business_id: str, invoice_id: str, cause: Envelope[Any]
) -> None:
    """Rule 6: voiding cancels the records the invoice created, and the records it was only
    added to are unpaid again and no longer on it; each change is published."""
    records = await repository.load(uow.conn, business_id, _of_invoice(invoice_id))
    sold_here = set(
        await uow.conn.scalars(
            select(package_record.c.record_id).where(
                package_record.c.business_id == business_id,
                package_record.c.invoice_id == invoice_id,
            )
        )
    )
    live = [r for r in records if r.status != "cancelled"]
    created = [r for r in live if r.record_id in sold_here]
    attached = [r for r in live if r.record_id not in sold_here]
    for r in created:
        await repository.save(uow.conn, r, replace(r, status="cancelled"))
    for r in attached:
        await repository.save(uow.conn, r, replace(r, paid=False), attached_invoice_id=None)
    detail = {"invoice_id": invoice_id}
    await _noted(uow, attached, "detached", cause, detail)
    await _noted(uow, created, "cancelled", cause, detail | {"why": "invoice_voided"})
    await repository.publish_states(
        uow, topics.RECORD_UPDATED, business_id, [r.record_id for r in attached], cause
    )
    await repository.publish_states(
        uow, topics.RECORD_CANCELLED, business_id, [r.record_id for r in created], cause
    )


async def _noted(
    uow: UnitOfWork,
    records: Sequence[domain.Record],
    kind: str,
    cause: Envelope[Any],
    detail: dict[str, Any],
) -> None:
    """One history entry of `kind` for each of these records."""
    await repository.note(
        uow.conn,
        [
            {
                "record_id": r.record_id,
                "kind": kind,
                "actor": repository.actor_json(cause.actor),
                "detail": detail,
            }
            for r in records
        ],
    )


def record_known(business_id: Any, record_id: Any) -> ColumnElement[bool]:
    """A condition, for another service's query, that the record these columns name exists."""
    return (
        exists()
        .where(package_record.c.business_id == business_id, package_record.c.record_id == record_id)
        .correlate_except(package_record)
    )


async def find_record(
    conn: AsyncConnection, business_id: str, record_id: str
) -> domain.Record | None:
    """The business's record, locked for this transaction; None where it is not (yet) there."""
    found = await repository.load(conn, business_id, package_record.c.record_id == record_id)
    return found[0] if found else None


async def attach_to_invoice(
    uow: UnitOfWork,
    record: domain.Record,
    invoice_id: str,
    *,
    paid: bool,
    cause: Envelope[Any],
) -> str | None:
    """Rule 6: an unpaid record (from `find_record`) added to an invoice; a refusal reason."""
    if record.status == "cancelled":
        return "record_cancelled"
    if record.paid:
        return "record_already_paid"
    await repository.save(
        uow.conn, record, replace(record, paid=paid), attached_invoice_id=invoice_id
    )
    detail = {"invoice_id": invoice_id}
    await _noted(uow, [record], "attached", cause, detail)
    if paid:
        await _noted(uow, [record], "paid", cause, detail)
        await mark_usable(uow.conn, [(record.business_id, record.client_id)])
        await repository.publish_states(
            uow, topics.RECORD_PAID, record.business_id, [record.record_id], cause
        )
    return None


async def apply_new_terms(
    uow: UnitOfWork, business_id: str, package: PackageDefined, cause: Envelope[Any]
) -> list[str]:
    """Rule 3: a package edit (services, sessions, discount, validity) reaches every record of
    it that is not cancelled or expired; it never brings one back."""
    today = (await catalog.settings_of(uow.conn, [business_id]))[business_id].today(uow.now)
    records = await repository.load(
        uow.conn,
        business_id,
        and_(
            package_record.c.package_id == package.package_id,
            package_record.c.status.in_(domain.LIVE),
        ),
    )
    changed: list[domain.Record] = []
    discount = package.discount.model_dump(mode="json")
    for r in records:
        if r.expired_on(today):
            continue  # expired in fact, whether or not the expiry sweep has run yet
        after = domain.with_terms(r, package)
        await repository.save(uow.conn, r, after, discount=discount)
        changed.append(r)
    await _noted(uow, changed, "terms_changed", cause, {"package_version": package.version})
    await mark_usable(uow.conn, [(r.business_id, r.client_id) for r in changed])
    ids = [r.record_id for r in changed]
    await repository.publish_states(uow, topics.RECORD_UPDATED, business_id, ids, cause)
    return ids


__all__ = [
    "RecordView",
    "RecordWithHistory",
    "Redeemable",
    "Sale",
    "SessionKind",
    "SessionMove",
    "apply_new_terms",
    "attach_to_invoice",
    "client_lock_key",
    "client_records",
    "create_many",
    "create_records",
    "find_record",
    "lock_clients",
    "lock_records",
    "mark_usable",
    "move_sessions",
    "pay_invoice",
    "record_known",
    "record_with_history",
    "take_usable",
    "void_invoice",
]
