"""The invoicing service's units of work: publish, pay, void, and lines waiting for a package."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert

from contracts import topics
from contracts.base import Envelope
from contracts.inbound import InvoiceChanged, InvoicePublished, PackageLine, RecordLine
from contracts.outbound import InvoiceOrigin
from services.catalog import api as catalog
from services.invoicing import domain
from services.invoicing.tables import invoice, pending_line
from services.kernel.rows import Columns, insert_rows, pack
from services.kernel.unit_of_work import Outcome, UnitOfWork
from services.records import api as records

log = logging.getLogger(__name__)


class Invoicing:
    """Handlers that know how long an invoice line may wait for its package."""

    def __init__(self, pending_wait_s: float) -> None:
        self.pending_wait = timedelta(seconds=pending_wait_s)

    async def handle_batch(self, uow: UnitOfWork, events: Sequence[Envelope[Any]]) -> None:
        """Invoice events in order; runs of new invoices are published together, set-based."""
        run: list[Envelope[InvoicePublished]] = []
        invoices: set[tuple[str, str]] = set()
        for event in events:
            key = (event.business_id, event.data.invoice_id)
            published = event.event_type == topics.INVOICE_PUBLISHED
            if published and run and key not in invoices and not _attaches(event, run[-1]):
                run.append(event)
                invoices.add(key)
                continue
            if run:
                await self.publish_invoices(uow, run)
            run, invoices = [], set()
            if published:
                run, invoices = [event], {key}
            elif event.event_type == topics.INVOICE_PAID:
                await pay_invoice(uow, event)
            else:
                await void_invoice(uow, event)
        if run:
            await self.publish_invoices(uow, run)

    async def publish_invoices(
        self, uow: UnitOfWork, events: Sequence[Envelope[InvoicePublished]]
    ) -> None:
        """Rule 5: package lines create records, record lines attach unpaid records.

        The invoices are distinct, so their records are created together at the end.
        """
        accepted = []
        for event in events:
            sold = [line.quantity for line in event.data.lines if isinstance(line, PackageLine)]
            if (too_many := domain.invoice_refusal(sold)) is not None:
                uow.reject(event, "too_many_records", too_many)
            else:
                accepted.append(event)
        if not accepted:
            return
        # The clients' locks before any of their records' rows, in the order redemption
        # takes them, so that the two cannot wait for each other.
        await records.lock_clients(uow.conn, {(e.business_id, e.data.client_id) for e in accepted})
        states = await _upsert_invoices(uow, accepted, published=True)
        packages = await catalog.find_packages(
            uow.conn,
            (
                (e.business_id, line.package_id)
                for e in accepted
                for line in e.data.lines
                if isinstance(line, PackageLine)
            ),
        )
        sales: list[records.Sale] = []
        refusals = {
            event.event_id: await self._lines(
                uow, event, states[event.business_id, event.data.invoice_id].paid, packages, sales
            )
            for event in accepted
        }
        await records.create_many(uow, sales)
        for event in accepted:
            if states[event.business_id, event.data.invoice_id].voided:
                await records.void_invoice(
                    uow, event.business_id, event.data.invoice_id, cause=event
                )
            if found := refusals[event.event_id]:
                reasons = sorted({r.split(":")[0] for r in found})
                reason = reasons[0] if len(reasons) == 1 else "lines_refused"
                uow.reject(event, reason, "; ".join(found))

    async def _lines(
        self,
        uow: UnitOfWork,
        event: Envelope[InvoicePublished],
        paid: bool,
        packages: Mapping[tuple[str, str], catalog.Package],
        sales: list[records.Sale],
    ) -> list[str]:
        """Each line in order: a sale queued, records attached, or a refusal (returned)."""
        refusals = []
        for line in event.data.lines:
            if isinstance(line, PackageLine):
                refusal = await self._sell(uow, event, line, paid, packages=packages, sales=sales)
            elif isinstance(line, RecordLine):
                refusal = await self._attach(uow, event, line, paid)
            else:
                continue  # services, products and the like are not ours
            if refusal:
                refusals.append(refusal)
        return refusals

    async def _attach(
        self, uow: UnitOfWork, event: Envelope[InvoicePublished], line: RecordLine, paid: bool
    ) -> str | None:
        """Attach the line's record, make the line wait for it, or refuse it."""
        record = await records.find_record(uow.conn, event.business_id, line.package_record_id)
        if record is None:
            await _wait(
                uow, event, line.line_id, self.pending_wait, record_id=line.package_record_id
            )
            uow.defer(
                event,
                "record_not_seen_yet",
                f"line {line.line_id} waits for {line.package_record_id}",
            )
            return None
        reason = await _attach_record(uow, event, record, paid)
        return f"{reason}: line {line.line_id}" if reason else None

    async def _sell(
        self,
        uow: UnitOfWork,
        event: Envelope[InvoicePublished],
        line: PackageLine,
        paid: bool,
        *,
        packages: Mapping[tuple[str, str], catalog.Package],
        sales: list[records.Sale],
    ) -> str | None:
        """Queue the line's records as a sale, make it wait for its package, or refuse it."""
        if (bad := domain.quantity_refusal(line.quantity)) is not None:
            return f"invalid_quantity: line {line.line_id}: {bad}"
        package = packages.get((event.business_id, line.package_id))
        if package is None:
            await _wait(
                uow,
                event,
                line.line_id,
                self.pending_wait,
                package_id=line.package_id,
                quantity=line.quantity,
            )
            uow.defer(
                event, "package_not_seen_yet", f"line {line.line_id} waits for {line.package_id}"
            )
            return None
        if not package.active:
            return f"package_disabled: line {line.line_id}: package {line.package_id} is disabled"
        sales.append(
            records.Sale(
                event.business_id,
                event.data.client_id,
                package.terms,
                InvoiceOrigin(invoice_id=event.data.invoice_id, line_id=line.line_id),
                line.quantity,
                paid,
                event,
            )
        )
        return None


def _attaches(*events: Envelope[InvoicePublished]) -> bool:
    """Record lines attach records that may have been sold earlier in the same run, and a
    run's records are written only at its end: such an invoice is a run of its own."""
    return any(isinstance(line, RecordLine) for e in events for line in e.data.lines)


@dataclass(frozen=True, slots=True)
class _InvoiceState:
    paid: bool
    voided: bool


_INVOICE_COLUMNS: Columns = (
    ("business_id", "text"),
    ("invoice_id", "text"),
    ("client_id", "text"),
    ("published", "boolean"),
    ("paid", "boolean"),
    ("voided", "boolean"),
)
_UPSERT_INVOICES = insert_rows(
    f"{invoice.fullname} AS i",
    _INVOICE_COLUMNS,
    " ON CONFLICT (business_id, invoice_id) DO UPDATE SET"
    " published = i.published OR excluded.published, paid = i.paid OR excluded.paid,"
    " voided = i.voided OR excluded.voided"
    " RETURNING business_id, invoice_id, paid, voided",
)


async def _upsert_invoices(
    uow: UnitOfWork,
    events: Sequence[Envelope[Any]],
    *,
    published: bool = False,
    paid: bool = False,
    voided: bool = False,
) -> dict[tuple[str, str], _InvoiceState]:
    """Keep what is known of invoices; a payment or void may arrive before the invoice.

    A published invoice may say it is paid already (`data.paid`).
    """
    rows = [
        (
            e.business_id,
            e.data.invoice_id,
            e.data.client_id,
            published,
            paid or (published and e.data.paid),
            voided,
        )
        for e in events
    ]
    result = await uow.conn.execute(_UPSERT_INVOICES, {"rows": pack(rows)})
    return {(r.business_id, r.invoice_id): _InvoiceState(r.paid, r.voided) for r in result}


async def pay_invoice(uow: UnitOfWork, event: Envelope[InvoiceChanged]) -> None:
    """Rule 6: the invoice's records become paid."""
    await _upsert_invoices(uow, [event], paid=True)
    await records.pay_invoice(uow, event.business_id, event.data.invoice_id, cause=event)


async def void_invoice(uow: UnitOfWork, event: Envelope[InvoiceChanged]) -> None:
    """Rule 6: the invoice's records are cancelled; its waiting lines are dropped."""
    await _upsert_invoices(uow, [event], voided=True)
    await uow.conn.execute(
        update(pending_line)
        .where(
            pending_line.c.business_id == event.business_id,
            pending_line.c.invoice_id == event.data.invoice_id,
            pending_line.c.state == "waiting",
        )
        .values(state="voided")
    )
    await records.void_invoice(uow, event.business_id, event.data.invoice_id, cause=event)


async def _attach_record(
    uow: UnitOfWork, event: Envelope[Any], record: Any, paid: bool
) -> str | None:
    """Rule 6: the client's unpaid record added to the invoice; a refusal reason otherwise."""
    if record.client_id != event.data.client_id:
        return "record_not_found"
    return await records.attach_to_invoice(
        uow, record, event.data.invoice_id, paid=paid, cause=event
    )


async def _wait(
    uow: UnitOfWork,
    event: Envelope[InvoicePublished],
    line_id: str,
    wait: timedelta,
    *,
    package_id: str | None = None,
    quantity: int | None = None,
    record_id: str | None = None,
) -> None:
    """Keep a line that names a package or a record not seen yet."""
    cause = event.model_dump(mode="json", exclude={"data"})
    await uow.conn.execute(
        insert(pending_line)
        .values(
            business_id=event.business_id,
            invoice_id=event.data.invoice_id,
            line_id=line_id,
            client_id=event.data.client_id,
            package_id=package_id,
            quantity=quantity,
            record_id=record_id,
            cause=cause,
            wait_until=uow.now + wait,
        )
        .on_conflict_do_nothing()
    )


async def settle_waiting_lines(uow: UnitOfWork, limit: int = 200) -> int:
    """Apply the lines whose package or record has arrived; refuse those that waited too long.

    Only lines that can be settled are read, oldest first, so none waits behind the others.
    """
    due = or_(
        pending_line.c.wait_until <= uow.now,
        catalog.package_known(pending_line.c.business_id, pending_line.c.package_id),
        records.record_known(pending_line.c.business_id, pending_line.c.record_id),
    )
    rows = (
        await uow.conn.execute(
            select(pending_line, invoice.c.paid, invoice.c.voided)
            .join(
                invoice,
                (invoice.c.business_id == pending_line.c.business_id)
                & (invoice.c.invoice_id == pending_line.c.invoice_id),
            )
            .where(pending_line.c.state == "waiting", due)
            .order_by(pending_line.c.wait_until)
            .limit(limit)
            .with_for_update(of=pending_line, skip_locked=True)
        )
    ).all()
    await records.lock_clients(uow.conn, {(r.business_id, r.client_id) for r in rows})
    for row in rows:
        if row.record_id is not None:
            state = await _settle_record_line(uow, row)
        else:
            state = await _settle_package_line(uow, row)
        await uow.conn.execute(
            update(pending_line)
            .where(
                pending_line.c.business_id == row.business_id,
                pending_line.c.invoice_id == row.invoice_id,
                pending_line.c.line_id == row.line_id,
            )
            .values(state=state)
        )
    await _note_invoices_done(uow, rows)
    return len(rows)


async def _note_invoices_done(uow: UnitOfWork, rows: Sequence[Any]) -> None:
    """An invoice none of whose lines waits any more has applied (unless a line was refused)."""
    invoices = {(r.business_id, r.invoice_id): r for r in rows}
    if not invoices:
        return
    still = set(
        (
            await uow.conn.execute(
                select(pending_line.c.business_id, pending_line.c.invoice_id).where(
                    tuple_(pending_line.c.business_id, pending_line.c.invoice_id).in_(invoices),
                    pending_line.c.state == "waiting",
                )
            )
        ).tuples()
    )
    for key, row in invoices.items():
        event_id = uuid.UUID(row.cause["event_id"])
        if key not in still and event_id not in uow.outcomes:
            uow.outcomes[event_id] = Outcome("applied", "after_waiting", "")


def _cause(row: Any, line: PackageLine | RecordLine) -> Envelope[Any]:
    """The invoice event a waiting line came in, with the line as its data."""
    cause: Envelope[Any] = Envelope[type(line)].model_validate(  # type: ignore[misc]
        {**row.cause, "data": line}
    )
    return cause


async def _settle_record_line(uow: UnitOfWork, row: Any) -> str:
    line = RecordLine(line_id=row.line_id, type="package_record", package_record_id=row.record_id)
    cause = _cause(row, line)
    record = await records.find_record(uow.conn, row.business_id, row.record_id)
    reason: str | None = "record_not_found"
    if record is not None and record.client_id == row.client_id:
        reason = await records.attach_to_invoice(
            uow, record, row.invoice_id, paid=row.paid, cause=cause
        )
    if reason:
        uow.reject(cause, reason, f"line {row.line_id}: record {row.record_id}")
        return "refused"
    return "applied"


async def _settle_package_line(uow: UnitOfWork, row: Any) -> str:
    package = await catalog.find_package(uow.conn, row.business_id, row.package_id)
    line = PackageLine(
        line_id=row.line_id,
        type="package",
        package_id=row.package_id,
        quantity=row.quantity,
        unit_price={"amount": "0", "currency": "EUR"},
    )
    cause = _cause(row, line)
    reason = domain.line_refusal(package is not None, package is not None and package.active)
    if reason or package is None:
        uow.reject(
            cause,
            reason or "package_not_found",
            f"line {row.line_id}: package {row.package_id} "
            + ("is disabled" if reason == "package_disabled" else "never arrived"),
        )
        return "refused"
    await records.create_records(
        uow,
        row.business_id,
        row.client_id,
        package.terms,
        InvoiceOrigin(invoice_id=row.invoice_id, line_id=row.line_id),
        quantity=row.quantity,
        paid=row.paid,
        cause=cause,
    )
    return "applied"
