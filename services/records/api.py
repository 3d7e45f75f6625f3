"""What other services may do with records: always in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import orjson
from sqlalchemy import and_, or_, select

from contracts import topics
from contracts.base import Envelope
from contracts.inbound import PackageDefined
from contracts.outbound import AssignmentOrigin, InvoiceOrigin
from services.kernel.rows import Columns, insert_rows, pack
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
from services.records.tables import package_record, record_service

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
    """Rule 5 for many sales in a few statements; returns the records created, in sale order."""
    today = uow.now.date()
    of_record: dict[str, _Terms] = {}
    rows: list[tuple[Any, ...]] = []
    for sale in sales:
        terms = _Terms.of(sale, today)
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
                    today,
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
    return created


@dataclass(frozen=True, slots=True)
class _Terms:
    """What every record of one sale starts with; the JSON fields as their contract JSON."""

    sale: Sale
    expires_on: date | None
    origin: bytes
    discount: bytes
    balances: list[domain.Balance]

    @classmethod
    def of(cls, sale: Sale, today: date) -> _Terms:
        discount = sale.package.discount
        return cls(
            sale,
            domain.expires_on(sale.package, today),
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
    await repository.note(
        uow.conn,
        [
            {
                "record_id": r.record_id,
                "kind": "paid",
                "actor": repository.actor_json(cause.actor),
                "detail": {"invoice_id": invoice_id},
            }
            for r in paid
        ],
    )
    await repository.publish_states(
        uow, topics.RECORD_PAID, business_id, [r.record_id for r in paid], cause
    )


async def void_invoice(
    uow: UnitOfWork, business_id: str, invoice_id: str, cause: Envelope[Any]
) -> None:
    """Rule 6: voiding cancels the records it created and lets go of those added to it."""
    records = await repository.load(uow.conn, business_id, _of_invoice(invoice_id))
    cancelled = []
    for r in records:
        if r.status == "cancelled":
            continue
        created_here = await _created_by(uow, r.record_id, invoice_id)
        if created_here:
            await repository.save(uow.conn, r, replace(r, status="cancelled"))
            cancelled.append(r.record_id)
        else:
            await repository.save(uow.conn, r, r, attached_invoice_id=None)
            await repository.note(
                uow.conn,
                [
                    {
                        "record_id": r.record_id,
                        "kind": "detached",
                        "actor": repository.actor_json(cause.actor),
                        "detail": {"invoice_id": invoice_id},
                    }
                ],
            )
    await repository.note(
        uow.conn,
        [
            {
                "record_id": rid,
                "kind": "cancelled",
                "actor": repository.actor_json(cause.actor),
                "detail": {"invoice_id": invoice_id, "why": "invoice_voided"},
            }
            for rid in cancelled
        ],
    )
    await repository.publish_states(uow, topics.RECORD_CANCELLED, business_id, cancelled, cause)


async def _created_by(uow: UnitOfWork, record_id: str, invoice_id: str) -> bool:
    found = await uow.conn.scalar(
        select(package_record.c.record_id).where(
            package_record.c.record_id == record_id, package_record.c.invoice_id == invoice_id
        )
    )
    return found is not None


async def attach_to_invoice(
    uow: UnitOfWork,
    business_id: str,
    client_id: str,
    record_id: str,
    invoice_id: str,
    *,
    paid: bool,
    cause: Envelope[Any],
) -> str | None:
    """Rule 6: an unpaid record of the client added to an invoice; returns a refusal reason."""
    found = await repository.load(
        uow.conn,
        business_id,
        and_(package_record.c.record_id == record_id, package_record.c.client_id == client_id),
    )
    if not found:
        return "record_not_found"
    record = found[0]
    if record.status == "cancelled":
        return "record_cancelled"
    if record.paid:
        return "record_already_paid"
    await repository.save(
        uow.conn, record, replace(record, paid=paid), attached_invoice_id=invoice_id
    )
    await repository.note(
        uow.conn,
        [
            {
                "record_id": record_id,
                "kind": "attached",
                "actor": repository.actor_json(cause.actor),
                "detail": {"invoice_id": invoice_id},
            }
        ],
    )
    if paid:
        await repository.note(
            uow.conn,
            [
                {
                    "record_id": record_id,
                    "kind": "paid",
                    "actor": repository.actor_json(cause.actor),
                    "detail": {"invoice_id": invoice_id},
                }
            ],
        )
        await repository.publish_states(uow, topics.RECORD_PAID, business_id, [record_id], cause)
    return None


async def apply_new_terms(
    uow: UnitOfWork, business_id: str, package: PackageDefined, cause: Envelope[Any]
) -> list[str]:
    """Rule 3: a package edit reaches every record of it that is not cancelled or expired."""
    today = uow.now.date()
    records = await repository.load(
        uow.conn,
        business_id,
        and_(
            package_record.c.package_id == package.package_id,
            package_record.c.status.in_(domain.LIVE),
        ),
    )
    changed: list[str] = []
    discount = package.discount.model_dump(mode="json")
    for r in records:
        if r.expired_on(today):
            continue  # expired in fact, whether or not the expiry sweep has run yet
        after = domain.with_terms(r, package)
        await repository.save(uow.conn, r, after, discount=discount)
        changed.append(r.record_id)
    await repository.note(
        uow.conn,
        [
            {
                "record_id": rid,
                "kind": "terms_changed",
                "actor": repository.actor_json(cause.actor),
                "detail": {"package_version": package.version},
            }
            for rid in changed
        ],
    )
    await repository.publish_states(uow, topics.RECORD_UPDATED, business_id, changed, cause)
    return changed


__all__ = [
    "RecordView",
    "RecordWithHistory",
    "Redeemable",
    "Sale",
    "SessionKind",
    "SessionMove",
    "apply_new_terms",
    "attach_to_invoice",
    "client_records",
    "create_many",
    "create_records",
    "lock_records",
    "move_sessions",
    "pay_invoice",
    "record_with_history",
    "void_invoice",
]
