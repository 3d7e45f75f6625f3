"""Nothing depends on which consumer is faster: each dependent event sent first, then in order,
ends the same; dates are the business's; roles, voids, template edits and repricing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.records import domain as records_domain
from services.records.tables import package_record
from tests.support import events
from tests.support.flow import Platform
from tests.support.kafka import Reader, body, of_business

pytestmark = pytest.mark.infra
DAYS_AGO_10 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)


def _assign(
    business: str, assignment: str = "asg-1", *, role: str = "staff", at: datetime | None = None
) -> dict[str, Any]:
    return events.envelope(
        "package.assigned",
        business,
        {"assignment_id": assignment, "package_id": "pkg-relax10", "client_id": "cli-ana"},
        actor={"user_id": "u-1", "role": role},
        occurred_at=at,
    )


def _assigned_id(business: str, assignment: str = "asg-1") -> str:
    return records_domain.record_id(business, "assignment", assignment)


def _edit(business: str, record_id: str, changes: dict[str, Any], role: str = "staff") -> Any:
    return events.envelope(
        "package_record.edit_requested",
        business,
        {
            "request_id": "req-1",
            "package_record_id": record_id,
            "client_id": "cli-ana",
            "changes": changes,
        },
        actor={"user_id": "u-1", "role": role},
    )


async def _settle(platform: Platform, *sent: dict[str, Any]) -> None:
    """Send events and wait until none of them waits for anything any more."""
    await platform.send(*sent)
    for event in sent:
        await platform.settled(event)


async def _records(platform: Platform, business: str) -> list[tuple[Any, ...]]:
    """What a business's records are, ids aside (they name their business)."""
    rows = await platform.rows(
        select(package_record)
        .where(package_record.c.business_id == business)
        .order_by(package_record.c.seq)
    )
    return [
        (
            r.client_id,
            r.package_id,
            r.origin["type"],
            r.paid,
            r.status,
            r.created_on,
            r.expires_on,
            r.expiry_by_hand,
            r.attached_invoice_id,
        )
        for r in rows
    ]


async def _both_orders(
    platform: Platform,
    scenario: Callable[[str], Awaitable[tuple[list[dict[str, Any]], list[dict[str, Any]]]]],
) -> tuple[list[Any], list[Any]]:
    """Run a scenario's (dependency, dependent) events in order in one business and the
    dependent first in another; both end states (the records' state, ids aside)."""
    ends = []
    for dependent_first in (False, True):
        business = events.new_business()
        await platform.send(events.plan(business))
        needed, needing = await scenario(business)
        first, then = (needing, needed) if dependent_first else (needed, needing)
        await platform.send(*first)
        await platform.send(*then)
        for event in needing:
            await platform.settled(event)
        ends.append(await _records(platform, business))
    return ends[0], ends[1]


async def test_an_assignment_before_its_package_ends_as_in_order(platform: Platform) -> None:
    async def scenario(business: str) -> Any:
        return [events.package(business)], [_assign(business, at=DAYS_AGO_10)]

    in_order, package_late = await _both_orders(platform, scenario)

    assert package_late == in_order
    [(*_, created_on, expires_on, _, _)] = in_order
    assert created_on == DAYS_AGO_10.date()
    assert expires_on == DAYS_AGO_10.date() + timedelta(days=365)


async def test_an_assignment_whose_package_never_comes_is_refused_after_the_wait(
    platform: Platform,
) -> None:
    business = events.new_business()
    orphan = _assign(business)
    await platform.send(events.plan(business), orphan)
    assert await platform.settled(orphan) == ("rejected", "package_not_found")


async def test_an_invoice_line_naming_a_record_not_created_yet_ends_as_in_order(
    platform: Platform,
) -> None:
    async def scenario(business: str) -> Any:
        line = {
            "line_id": "l1",
            "type": "package_record",
            "package_record_id": _assigned_id(business),
        }
        invoice = events.invoice(business, "cli-ana", "inv-7", lines=[line], paid=True)
        return [events.package(business), _assign(business)], [invoice]

    in_order, record_late = await _both_orders(platform, scenario)

    assert record_late == in_order
    [(_, _, _, paid, _, _, _, _, attached)] = in_order
    assert (paid, attached) == (True, "inv-7")


async def test_an_edit_before_its_record_ends_as_in_order(platform: Platform) -> None:
    async def scenario(business: str) -> Any:
        edit = _edit(business, _assigned_id(business), {"expires_on": "2030-01-31"})
        return [events.package(business), _assign(business)], [edit]

    in_order, record_late = await _both_orders(platform, scenario)

    assert record_late == in_order
    [(*_, expires_on, by_hand, _)] = in_order
    assert (expires_on, by_hand) == (date(2030, 1, 31), True)


async def test_a_client_who_buys_online_and_books_at_once_redeems_whichever_comes_first(
    platform: Platform,
) -> None:
    business = events.new_business()
    await platform.send(events.plan(business), events.package(business))
    booked = events.booking(business, "bk-web-1", source="widget")
    bought = events.invoice(business, "cli-ana", "inv-web-1", paid=True)
    async with Reader(platform.bootstrap, ["booking.package_applied"]) as reader:
        await platform.send(booked)  # the booking is handled before the purchase
        await platform.send(bought)
        [applied] = await reader.until(of_business(business), 1)
    assert body(applied)["data"]["booking_id"] == "bk-web-1"
    used = {r.record_id: r.sessions_used for r in await platform.records(business, "cli-ana")}
    assert sorted(used.values()) == [0, 1]


async def test_a_package_event_is_judged_by_the_plan_of_its_time(platform: Platform) -> None:
    business = events.new_business()
    start = datetime.now(UTC) - timedelta(hours=3)
    pro = events.plan(business, "pro", occurred_at=start)
    created = events.package(business)
    created["occurred_at"] = events.stamp(start + timedelta(hours=1))
    free = events.plan(business, "free", occurred_at=start + timedelta(hours=2))
    later = events.package(business, "pkg-late")
    # The downgrade is handled before the package created while the business was pro.
    await platform.send(pro, free, created, later)
    assert await platform.outcome(created) == ("applied", None)
    assert await platform.outcome(later) == ("rejected", "not_entitled")


@pytest.mark.parametrize("topic", ["package.assigned", "package_record.edit_requested"])
async def test_a_client_may_not_assign_or_edit_a_record(platform: Platform, topic: str) -> None:
    business = events.new_business()
    await _settle(platform, events.plan(business), events.package(business), _assign(business))
    by_client = (
        _assign(business, "asg-2", role="client")
        if topic == "package.assigned"
        else _edit(business, _assigned_id(business), {"status": "cancelled"}, role="client")
    )
    await platform.send(by_client)
    assert await platform.outcome(by_client) == ("rejected", "not_permitted")
    assert [r[4] for r in await _records(platform, business)] == ["active"]


async def test_voiding_cancels_what_the_invoice_sold_and_lets_go_what_it_paid(
    platform: Platform,
) -> None:
    business = events.new_business()
    await _settle(platform, events.plan(business), events.package(business), _assign(business))
    lines = [
        events.package_line("l1"),
        {"line_id": "l2", "type": "package_record", "package_record_id": _assigned_id(business)},
    ]
    await platform.send(events.invoice(business, "cli-ana", "inv-3", lines=lines, paid=True))
    voided = events.envelope(
        "invoice.voided", business, {"invoice_id": "inv-3", "client_id": "cli-ana"}
    )
    topics = ["package_record.updated", "package_record.cancelled"]
    async with Reader(platform.bootstrap, topics) as reader:
        await platform.send(voided)
        published = await reader.until(
            lambda r: of_business(business)(r) and body(r)["causation_id"] == voided["event_id"], 2
        )
    assert sorted((r.topic, body(r)["data"]["paid"]) for r in published) == [
        ("package_record.cancelled", True),
        ("package_record.updated", False),
    ]
    assigned, sold = await _records(platform, business)
    assert (assigned[3], assigned[4], assigned[8]) == (False, "active", None)
    assert (sold[3], sold[4]) == (True, "cancelled")


async def test_a_new_validity_reaches_live_records_from_their_own_sale_day(
    platform: Platform,
) -> None:
    business = events.new_business()
    await _settle(
        platform,
        events.plan(business),
        events.package(business),
        _assign(business, "asg-old", at=DAYS_AGO_10),
        _assign(business, "asg-hand"),
        _edit(business, _assigned_id(business, "asg-hand"), {"expires_on": "2031-05-01"}),
    )
    async with Reader(platform.bootstrap, ["package_record.updated"]) as reader:
        updated = events.package(
            business, version=2, topic="package.updated", validity={"type": "days", "days": 30}
        )
        await platform.send(updated)
        await reader.until(
            lambda r: of_business(business)(r) and body(r)["causation_id"] == updated["event_id"], 2
        )
    old, by_hand = await _records(platform, business)
    assert old[6] == DAYS_AGO_10.date() + timedelta(days=30)
    assert by_hand[6] == date(2031, 5, 1)


async def test_a_held_booking_whose_price_changes_is_repriced(
    platform: Platform, api: httpx.AsyncClient
) -> None:
    business = events.new_business()
    half = {"type": "percent", "value": "50"}
    await platform.send(events.plan(business), events.package(business, discount=half))
    await platform.send(
        events.invoice(business, "cli-ana", "inv-1", lines=[events.package_line("l1")])
    )
    await platform.send(events.booking(business, "bk-1", price="60.00"))
    edited = events.booking(business, "bk-1", price="90.00", version=2, topic="booking.updated")
    async with Reader(platform.bootstrap, ["booking.package_repriced"]) as reader:
        await platform.send(edited)
        [repriced] = await reader.until(of_business(business), 1)
    data = body(repriced)["data"]
    assert (data["price_before"]["amount"], data["price_after"]["amount"]) == ("90.00", "45.00")
    answer = (await api.get(f"/v1/businesses/{business}/bookings/bk-1/package")).json()
    assert (answer["price_before"]["amount"], answer["price_after"]["amount"]) == ("90.00", "45.00")
    [record] = await platform.records(business, "cli-ana")
    assert record.sessions_used == 1


async def test_a_frozen_record_serves_no_booking_until_it_is_unfrozen(platform: Platform) -> None:
    business = events.new_business()
    await _settle(platform, events.plan(business), events.package(business), _assign(business))
    record_id = _assigned_id(business)
    in_ten_days = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
    async with Reader(platform.bootstrap, ["package_record.updated"]) as reader:
        await platform.send(_edit(business, record_id, {"frozen_until": in_ten_days}))
        [frozen] = await reader.until(of_business(business), 1)
    assert (body(frozen)["data"]["status"], body(frozen)["data"]["frozen_until"]) == (
        "frozen",
        in_ten_days,
    )
    outcomes = ["booking.package_applied", "booking.package_not_applied"]
    async with Reader(platform.bootstrap, outcomes) as reader:
        await platform.send(events.booking(business, "bk-1"))  # in three days: frozen then
        [refused] = await reader.until(of_business(business), 1)
        assert body(refused)["data"]["reason"] == "no_eligible_record"
        await platform.send(_edit(business, record_id, {"frozen_until": None}))
        [applied] = await reader.until(of_business(business), 1)
    assert (applied.topic, body(applied)["data"]["booking_id"]) == (
        "booking.package_applied",
        "bk-1",
    )
    [record] = await _records(platform, business)
    assert record[4] == "active"


async def test_the_booking_form_s_first_option_is_the_record_the_booking_then_redeems(
    platform: Platform, api: httpx.AsyncClient
) -> None:
    business = events.new_business()
    twenty_off = {"type": "percent", "value": "20"}
    until = (datetime.now(UTC) + timedelta(days=40)).date().isoformat()
    await platform.send(
        events.plan(business),
        events.package(business, "pkg-long", discount=twenty_off),
        events.package(business, "pkg-short", validity={"type": "until", "date": until}),
    )
    lines = [events.package_line("l1", "pkg-long"), events.package_line("l2", "pkg-short")]
    await platform.send(events.invoice(business, "cli-ana", "inv-1", lines=lines))
    starts_at = datetime.now(UTC) + timedelta(days=3)
    answer = await api.get(
        f"/v1/businesses/{business}/clients/cli-ana/package-options",
        params={
            "service_id": "svc-massage-60",
            "starts_at": starts_at.isoformat(),
            "price": "60.00",
            "currency": "EUR",
        },
    )
    assert answer.status_code == 200
    options = answer.json()
    assert [(o["package_id"], o["price_after"]["amount"]) for o in options] == [
        ("pkg-short", "0.00"),
        ("pkg-long", "48.00"),
    ]
    async with Reader(platform.bootstrap, ["booking.package_applied"]) as reader:
        await platform.send(events.booking(business, "bk-1", starts_at=starts_at))
        [applied] = await reader.until(of_business(business), 1)
    assert body(applied)["data"]["package_record_id"] == options[0]["package_record_id"]
