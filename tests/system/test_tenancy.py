"""One business never sees or changes another's: every inbound topic swept with another's ids."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, text

from contracts.topics import INBOUND
from services.catalog.tables import business_plan, business_settings, package
from services.invoicing.tables import invoice, pending_line
from services.records.tables import package_record, record_event, record_service
from services.redemption.tables import booking, redemption, restoration
from tests.conftest import Infra
from tests.support import events
from tests.support.flow import SERVICE_OF, Platform
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.infra

Event = dict[str, Any]


@dataclass(frozen=True)
class Victim:
    """Business A: a Pro spa with a package, two unpaid records, an invoice and a booking."""

    business: str
    invoiced_record: str  # Ana's, sold on the invoice; the booking holds one of its sessions
    assigned_record: str  # Ben's, given without invoicing
    package_id: str = "pkg-relax10"
    invoice_id: str = "inv-a-0042"
    booking_id: str = "bk-a-0007"


@pytest.fixture(scope="module")
def platform(real_infra: Infra, services: dict[str, ServiceProcess], engine: Any) -> Platform:
    return Platform(real_infra.bootstrap, engine)


@pytest.fixture(scope="module")
async def victim(platform: Platform) -> Victim:
    business = events.new_business()
    await platform.send(events.plan(business), events.package(business))
    await platform.send(
        events.invoice(business, "cli-ana", "inv-a-0042", lines=[events.package_line("l1")]),
        events.envelope(
            "package.assigned",
            business,
            {"assignment_id": "asg-a-1", "package_id": "pkg-relax10", "client_id": "cli-ben"},
        ),
    )
    [ana] = await platform.records(business, "cli-ana")
    [ben] = await platform.records(business, "cli-ben")
    await platform.send(events.booking(business, "bk-a-0007", record_id=ana.record_id))
    a = Victim(business, ana.record_id, ben.record_id)
    used = {r.record_id: r.sessions_used for r in await platform.records(business)}
    assert used == {a.invoiced_record: 1, a.assigned_record: 0}, "A's setup went wrong"
    return a


# -- what A owns, read straight from every service's tables -----------------------------------


async def _state_of(platform: Platform, business: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything every service keeps about one business, in a stable order."""
    records = package_record.c
    held = redemption.c
    queries: dict[str, Any] = {
        "plan": select(business_plan.c.plan).where(business_plan.c.business_id == business),
        "settings": select(business_settings).where(business_settings.c.business_id == business),
        "packages": select(package.c.package_id, package.c.terms, package.c.terms_version)
        .add_columns(package.c.status, package.c.status_version)
        .where(package.c.business_id == business)
        .order_by(package.c.package_id),
        "records": select(records.record_id, records.client_id, records.package_id)
        .add_columns(records.status, records.paid, records.expires_on, records.attached_invoice_id)
        .where(records.business_id == business)
        .order_by(records.record_id),
        "balances": select(record_service)
        .join(package_record, package_record.c.record_id == record_service.c.record_id)
        .where(records.business_id == business)
        .order_by(record_service.c.record_id, record_service.c.service_id),
        "history": select(func.count())
        .select_from(record_event.join(package_record))
        .where(records.business_id == business),
        "invoices": select(invoice.c.invoice_id, invoice.c.client_id, invoice.c.published)
        .add_columns(invoice.c.paid, invoice.c.voided)
        .where(invoice.c.business_id == business)
        .order_by(invoice.c.invoice_id),
        "waiting lines": select(pending_line.c.invoice_id, pending_line.c.state).where(
            pending_line.c.business_id == business
        ),
        "bookings": select(booking.c.booking_id, booking.c.client_id, booking.c.status)
        .add_columns(booking.c.chosen_record_id, booking.c.snapshot_version, booking.c.released)
        .where(booking.c.business_id == business)
        .order_by(booking.c.booking_id),
        "redemptions": select(held.booking_id, held.record_id, held.service_id, held.removed)
        .where(held.business_id == business)
        .order_by(held.id),
        "restorations": select(func.count())
        .select_from(restoration.join(redemption))
        .where(held.business_id == business),
    }
    return {name: [tuple(r) for r in await platform.rows(q)] for name, q in queries.items()}


async def _final_outcome(
    platform: Platform, event: Event, patience: float = 45.0
) -> tuple[str, Any]:
    """The event's outcome once it no longer waits for something (a package, a plan)."""
    deadline = time.monotonic() + patience
    while True:
        outcome = await platform.handled(event)
        if outcome[0] != "deferred" or time.monotonic() > deadline:
            return outcome
        await asyncio.sleep(0.5)


async def _published(platform: Platform, event: Event) -> list[tuple[str, str, Any]]:
    """What the event made any service publish: (topic, business, reason) each, in order."""
    found = []
    for schema in sorted(set(SERVICE_OF.values())):
        rows = await platform.rows(
            text(
                f"SELECT topic, payload FROM {schema}.outbox WHERE causation_id = :id ORDER BY id"
            ).bindparams(id=uuid.UUID(event["event_id"]))
        )
        for row in rows:
            body = orjson.loads(row.payload)
            found.append((row.topic, body["business_id"], body["data"].get("reason")))
    return found


# -- the sweep: B sends events naming A's ids, on every inbound topic ------------------------------


@dataclass(frozen=True)
class Trespass:
    """Business B's events naming A's ids, how each must end, and what B may see published."""

    topic: str
    build: Callable[[Victim, str], list[Event]]
    outcomes: list[tuple[str, str | None]]
    published: list[tuple[str, str | None]] = field(default_factory=list)


def _package_event(topic: str, version: int) -> Callable[[Victim, str], Event]:
    def build(a: Victim, b: str) -> Event:
        return events.envelope(
            topic, b, {"package_id": a.package_id, "version": version}, actor=events.OWNER
        )

    return build


def _edit(a: Victim, b: str, record_id: str, client: str, changes: dict[str, Any]) -> Event:
    return events.envelope(
        "package_record.edit_requested",
        b,
        {
            "request_id": "req-b-1",
            "package_record_id": record_id,
            "client_id": client,
            "changes": changes,
        },
    )


def _invoice_change(topic: str) -> Callable[[Victim, str], list[Event]]:
    def build(a: Victim, b: str) -> list[Event]:
        return [events.envelope(topic, b, {"invoice_id": a.invoice_id, "client_id": "cli-ana"})]

    return build


NOT_APPLIED = "booking.package_not_applied"
REJECTED = "message.rejected"

SWEEP = {
    # Package ids are per business: B's event defines or switches B's own package of that id,
    # an entity that merely shares a name with A's, and never A's package or its records.
    "package.updated redefines only B's own package of that id": Trespass(
        "package.updated",
        lambda a, b: [
            events.package(b, a.package_id, version=2, topic="package.updated", sessions=1),
            events.package(b, a.package_id, version=3, topic="package.updated", sessions=2),
        ],
        [("applied", None), ("applied", None)],
    ),
    "package.disabled switches only B's own package of that id": Trespass(
        "package.disabled",
        lambda a, b: [_package_event("package.disabled", 2)(a, b)],
        [("applied", None)],
    ),
    "package.enabled switches only B's own package of that id": Trespass(
        "package.enabled",
        lambda a, b: [_package_event("package.enabled", 2)(a, b)],
        [("applied", None)],
    ),
    "package.created of the same id is B's own package": Trespass(
        "package.created",
        lambda a, b: [events.package(b, a.package_id, sessions=1)],
        [("applied", None)],
    ),
    "package.assigned of A's package is not found": Trespass(
        "package.assigned",
        lambda a, b: [
            events.envelope(
                "package.assigned",
                b,
                {"assignment_id": "asg-b-1", "package_id": a.package_id, "client_id": "cli-ana"},
            )
        ],
        [("rejected", "package_not_found")],
        [(REJECTED, "package_not_found")],
    ),
    "invoice.published selling A's package waits, then is not found": Trespass(
        "invoice.published",
        lambda a, b: [
            events.invoice(b, "cli-ana", "inv-b-1", lines=[events.package_line("l1")], paid=True)
        ],
        [("rejected", "package_not_found")],
        [(REJECTED, "package_not_found")],
    ),
    "invoice.published paying A's unpaid record does not find it": Trespass(
        "invoice.published",
        lambda a, b: [
            events.invoice(
                b,
                "cli-ben",
                "inv-b-2",
                paid=True,
                lines=[
                    {
                        "line_id": "l1",
                        "type": "package_record",
                        "package_record_id": a.assigned_record,
                    }
                ],
            )
        ],
        [("rejected", "record_not_found")],
        [(REJECTED, "record_not_found")],
    ),
    "invoice.paid of A's invoice id pays nothing of A's": Trespass(
        "invoice.paid", _invoice_change("invoice.paid"), [("applied", None)]
    ),
    "invoice.voided of A's invoice id cancels nothing of A's": Trespass(
        "invoice.voided", _invoice_change("invoice.voided"), [("applied", None)]
    ),
    "edit_requested cancelling A's record does not find it": Trespass(
        "package_record.edit_requested",
        lambda a, b: [_edit(a, b, a.invoiced_record, "cli-ana", {"status": "cancelled"})],
        [("rejected", "record_not_found")],
        [(REJECTED, "record_not_found")],
    ),
    "edit_requested topping up A's record does not find it": Trespass(
        "package_record.edit_requested",
        lambda a, b: [
            _edit(
                a,
                b,
                a.assigned_record,
                "cli-ben",
                {
                    "expires_on": None,
                    "sessions": [{"service_id": "svc-massage-60", "sessions_total": 99}],
                },
            )
        ],
        [("rejected", "record_not_found")],
        [(REJECTED, "record_not_found")],
    ),
    "booking.created choosing A's record does not find it": Trespass(
        "booking.created",
        lambda a, b: [events.booking(b, "bk-b-1", record_id=a.invoiced_record)],
        [("applied", None)],
        [(NOT_APPLIED, "record_not_found")],
    ),
    "booking.created of A's booking id finds no record of B's": Trespass(
        "booking.created",
        lambda a, b: [events.booking(b, a.booking_id)],
        [("applied", None)],
        [(NOT_APPLIED, "no_eligible_record")],
    ),
    "booking.updated of A's booking id choosing A's record does not find it": Trespass(
        "booking.updated",
        lambda a, b: [
            events.booking(
                b, a.booking_id, topic="booking.updated", version=2, record_id=a.invoiced_record
            )
        ],
        [("applied", None)],
        [(NOT_APPLIED, "record_not_found")],
    ),
    "booking.status_changed cancelling A's booking gives no session back": Trespass(
        "booking.status_changed",
        lambda a, b: [events.status_change(b, a.booking_id, "cancelled", 2)],
        [("applied", None)],
    ),
    "booking.status_changed marking A's booking a no-show gives no session back": Trespass(
        "booking.status_changed",
        lambda a, b: [events.status_change(b, a.booking_id, "no_show", 5)],
        [("applied", None)],
    ),
    "business.settings_changed changes B's settings only": Trespass(
        "business.settings_changed",
        lambda a, b: [
            events.envelope(
                "business.settings_changed",
                b,
                {
                    "time_zone": "Pacific/Kiritimati",
                    "no_show": "forfeit",
                    "late_cancel_hours": 720,
                    "expiring_soon_days": 90,
                    "version": 1,
                },
                actor=events.OWNER,
            )
        ],
        [("applied", None)],
    ),
    "business.plan_changed changes B's plan only": Trespass(
        "business.plan_changed",
        lambda a, b: [events.plan(b, "free")],
        [("applied", None)],
    ),
}


def test_the_sweep_covers_every_inbound_topic() -> None:
    assert {case.topic for case in SWEEP.values()} == set(INBOUND)


async def _pro_attacker(platform: Platform) -> str:
    """Business B: entitled to packages, so that only tenancy can stop it."""
    b = events.new_business()
    await platform.send(events.plan(b))
    return b


def _stale_echo(a: Victim, topic: str) -> Event:
    """A's own event already applied, on B's topic and key: B's batch then holds A's records."""
    if topic == "booking.status_changed":
        return events.status_change(a.business, a.booking_id, "confirmed", 1)
    return events.booking(a.business, a.booking_id, topic=topic, record_id=a.invoiced_record)


@pytest.mark.parametrize("case", SWEEP.values(), ids=SWEEP.keys())
async def test_another_business_s_event_naming_a_s_ids_changes_nothing_of_a_s(
    platform: Platform, victim: Victim, case: Trespass
) -> None:
    a = victim
    b = await _pro_attacker(platform)
    before = await _state_of(platform, a.business)
    trespasses = case.build(a, b)
    assert {e["event_type"] for e in trespasses} == {case.topic}
    echo = [_stale_echo(a, case.topic)] if case.topic.startswith("booking.") else []
    await platform.send(*echo, *trespasses)
    assert [await _final_outcome(platform, e) for e in trespasses] == case.outcomes
    if echo:
        assert await platform.outcome(echo[0]) == ("ignored", "stale_version")
    published = [p for e in trespasses for p in await _published(platform, e)]
    assert published == [(topic, b, reason) for topic, reason in case.published]
    assert await _state_of(platform, a.business) == before


# -- the read API ---------------------------------------------------------------------------------


async def test_the_read_api_answers_404_for_a_s_ids_under_another_business(
    api: httpx.AsyncClient, victim: Victim
) -> None:
    a, b = victim, events.new_business()
    never = f"/v1/businesses/{b}/package-records/{uuid.uuid4()}"
    for path in (
        f"/v1/businesses/{b}/package-records/{a.invoiced_record}",
        f"/v1/businesses/{b}/package-records/{a.assigned_record}",
        f"/v1/businesses/{b}/bookings/{a.booking_id}/package",
    ):
        answer = await api.get(path)
        # The same answer as for an id that never existed: nothing tells that A's exists.
        assert (answer.status_code, answer.json()) == (404, (await api.get(never)).json()), path
    own = await api.get(f"/v1/businesses/{a.business}/package-records/{a.invoiced_record}")
    assert own.status_code == 200, "A itself does see it"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?status=active",
        "?service_id=svc-massage-60",
        "?status=active&service_id=svc-massage-60",
    ],
)
async def test_the_read_api_never_lists_a_s_records_under_another_business(
    api: httpx.AsyncClient, victim: Victim, query: str
) -> None:
    a, b = victim, events.new_business()
    for client in ("cli-ana", "cli-ben"):
        listed = await api.get(f"/v1/businesses/{b}/clients/{client}/package-records{query}")
        assert (listed.status_code, listed.json()) == (200, [])
        own = await api.get(f"/v1/businesses/{a.business}/clients/{client}/package-records{query}")
        assert len(own.json()) == 1, "A itself does list it"


async def test_a_booking_sharing_a_s_booking_id_shows_only_its_own_business_s_package(
    platform: Platform, api: httpx.AsyncClient, victim: Victim
) -> None:
    a, b = victim, await _pro_attacker(platform)
    await platform.send(events.booking(b, a.booking_id, record_id=a.invoiced_record))
    theirs = (await api.get(f"/v1/businesses/{b}/bookings/{a.booking_id}/package")).json()
    assert (theirs["package_record_id"], theirs["price_after"]) == (None, None)
    ours = (await api.get(f"/v1/businesses/{a.business}/bookings/{a.booking_id}/package")).json()
    assert ours["package_record_id"] == a.invoiced_record
