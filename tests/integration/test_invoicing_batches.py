"""Invoices published together are handled set-based, and still as if one after another."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import topics
from contracts.codec import decode
from services.catalog.tables import package
from services.invoicing.handlers import Invoicing
from services.kernel.unit_of_work import UnitOfWork
from services.records import repository as records_repository
from services.records.domain import record_id
from services.records.tables import package_record
from tests.support import events

pytest_plugins = ["tests.integration.redemption_db"]  # a PostgreSQL of its own


async def _business(engine: AsyncEngine, **terms_given: Any) -> str:
    """A business with the active package `pkg-relax10` (these terms) in its catalog."""
    business = events.new_business()
    terms = events.package(business, **terms_given)["data"]
    async with engine.begin() as conn:
        await conn.execute(
            package.insert().values(
                business_id=business,
                package_id=terms["package_id"],
                terms=terms,
                terms_version=1,
                status="active",
            )
        )
    return business


async def _handle(engine: AsyncEngine, *raw: dict[str, Any]) -> UnitOfWork:
    """One batch through the invoicing handler, in one transaction."""
    async with engine.begin() as conn:
        uow = UnitOfWork(conn, "invoicing")
        envelopes = [decode(e["event_type"], orjson.dumps(e)) for e in raw]
        await Invoicing(pending_wait_s=300).handle_batch(uow, envelopes)
    return uow


async def _records(engine: AsyncEngine, business: str) -> dict[str, tuple[bool, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                package_record.c.record_id,
                package_record.c.paid,
                package_record.c.attached_invoice_id,
            ).where(package_record.c.business_id == business)
        )
        return {r.record_id: (r.paid, r.attached_invoice_id) for r in rows}


async def test_a_payment_between_two_invoices_pays_the_records_of_the_first(
    redemption_engine: AsyncEngine,
) -> None:
    business = await _business(redemption_engine)
    lines = [events.package_line("l1", quantity=2)]
    first = events.invoice(business, invoice_id="inv-a", lines=lines)
    second = events.invoice(business, invoice_id="inv-b", lines=lines)
    paid = events.envelope(
        "invoice.paid", business, {"invoice_id": "inv-a", "client_id": "cli-ana"}
    )

    uow = await _handle(redemption_engine, first, second, paid)

    found = await _records(redemption_engine, business)
    assert {k: v[0] for k, v in found.items()} == {
        record_id(business, "invoice", "inv-a", "l1", 0): True,
        record_id(business, "invoice", "inv-a", "l1", 1): True,
        record_id(business, "invoice", "inv-b", "l1", 0): False,
        record_id(business, "invoice", "inv-b", "l1", 1): False,
    }
    published = [r.topic for r in uow.outbox]
    assert published.count(topics.RECORD_CREATED) == 4
    assert published.count(topics.RECORD_PAID) == 2


async def test_a_record_sold_earlier_in_the_batch_can_be_added_to_a_later_invoice(
    redemption_engine: AsyncEngine,
) -> None:
    business = await _business(redemption_engine)
    sold = record_id(business, "invoice", "inv-a", "l1", 0)
    first = events.invoice(business, invoice_id="inv-a", lines=[events.package_line("l1")])
    adding = events.invoice(
        business,
        invoice_id="inv-b",
        lines=[{"line_id": "l1", "type": "package_record", "package_record_id": sold}],
        paid=True,
    )

    uow = await _handle(redemption_engine, first, adding)

    assert uow.outcomes == {}  # nothing refused: the record existed when it was added
    assert await _records(redemption_engine, business) == {sold: (True, "inv-b")}


async def test_an_invoice_published_twice_in_a_batch_sells_its_records_once(
    redemption_engine: AsyncEngine,
) -> None:
    business = await _business(redemption_engine)
    again = events.invoice(business, invoice_id="inv-a", lines=[events.package_line("l1")])
    copy = {**again, "event_id": str(uuid.uuid4())}

    uow = await _handle(redemption_engine, again, copy)

    assert len(await _records(redemption_engine, business)) == 1
    assert [r.topic for r in uow.outbox] == [topics.RECORD_CREATED]


async def test_a_created_record_is_published_as_it_reads_back(
    redemption_engine: AsyncEngine,
) -> None:
    services = [
        {"service_id": "svc-sauna", "sessions": None},
        {"service_id": "svc-facial", "sessions": 3},
        {"service_id": "svc-massage-60", "sessions": 10},
    ]
    business = await _business(
        redemption_engine,
        services=services,
        discount={"type": "amount", "value": {"amount": "12.50", "currency": "EUR"}},
        validity={"type": "until", "date": "2027-06-30"},
    )
    sold = events.invoice(business, lines=[events.package_line("l1", quantity=2)], paid=True)

    uow = await _handle(redemption_engine, sold)

    created = [orjson.loads(r.payload)["data"] for r in uow.outbox]
    async with redemption_engine.connect() as conn:
        stored = await records_repository.states(conn, [c["package_record_id"] for c in created])
    assert len(created) == 2
    for published in created:
        assert published == stored[published["package_record_id"]].model_dump(mode="json")
    assert [s["service_id"] for s in created[0]["services"]] == [
        "svc-facial",
        "svc-massage-60",
        "svc-sauna",
    ]
    assert created[0]["origin"] == {"type": "invoice", "invoice_id": "inv-1", "line_id": "l1"}
    assert created[0]["expires_on"] == "2027-06-30"
