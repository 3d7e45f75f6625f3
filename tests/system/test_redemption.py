"""Rules 9-12 through the topics: bookings redeem sessions and give them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Infra
from tests.support import events
from tests.support.flow import Platform
from tests.support.kafka import Reader, body, of_business
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.infra
OUTCOMES = ["booking.package_applied", "booking.package_not_applied", "booking.package_removed"]


@pytest.fixture
def platform(real_infra: Infra, services: dict[str, ServiceProcess], engine: Any) -> Platform:
    return Platform(real_infra.bootstrap, engine)


async def _business_with_records(
    platform: Platform, *packages: dict[str, Any], client: str = "cli-ana"
) -> tuple[str, list[str]]:
    """A Pro business whose client holds one record of each package, in this order."""
    business = events.new_business()
    defined = [events.package(business, **p) for p in packages] or [events.package(business)]
    await platform.send(events.plan(business), *defined)
    for n, d in enumerate(defined):
        line = events.package_line(f"l{n}", d["data"]["package_id"])
        await platform.send(events.invoice(business, client, f"inv-{n}", lines=[line]))
    return business, [r.record_id for r in await platform.records(business, client)]


async def _outcomes(
    platform: Platform, business: str, *sent: dict[str, Any], count: int, settle: float = 1.0
) -> list[dict[str, Any]]:
    """Send events; the booking outcomes they caused, in publication order."""
    causes = {e["event_id"] for e in sent}

    def caused(record: Any) -> bool:
        return of_business(business)(record) and body(record)["causation_id"] in causes

    async with Reader(platform.bootstrap, OUTCOMES) as reader:
        await platform.send(*sent)
        found = await reader.until(caused, count, settle=settle)
    return [{"topic": r.topic, **body(r)["data"]} for r in found]


async def _used(platform: Platform, business: str) -> dict[str, int]:
    return {r.record_id: r.sessions_used for r in await platform.records(business)}


async def test_the_chosen_record_is_redeemed_with_its_discount(
    platform: Platform, api: httpx.AsyncClient
) -> None:
    business, [first, second] = await _business_with_records(
        platform,
        {"package_id": "p1"},
        {"package_id": "p2", "discount": {"type": "percent", "value": "25"}},
    )
    [applied] = await _outcomes(
        platform, business, events.booking(business, "bk-1", record_id=second), count=1
    )
    assert applied["topic"] == "booking.package_applied"
    assert (applied["package_record_id"], applied["sessions_remaining"]) == (second, 9)
    assert (applied["price_before"]["amount"], applied["price_after"]["amount"]) == (
        "60.00",
        "45.00",
    )
    assert await _used(platform, business) == {first: 0, second: 1}
    held = (await api.get(f"/v1/businesses/{business}/bookings/bk-1/package")).json()
    assert (held["package_record_id"], held["price_after"]["amount"]) == (second, "45.00")
    history = (await api.get(f"/v1/businesses/{business}/package-records/{second}")).json()[
        "history"
    ]
    assert [(h["kind"], h["booking_id"]) for h in history][-1] == ("redeemed", "bk-1")


async def test_without_a_choice_the_record_expiring_first_is_used(platform: Platform) -> None:
    business, [late, soon] = await _business_with_records(
        platform,
        {"package_id": "p-late", "validity": {"type": "days", "days": 300}},
        {"package_id": "p-soon", "validity": {"type": "days", "days": 30}},
    )
    widget = events.booking(business, "bk-w", source="widget", status="pending")
    [applied] = await _outcomes(platform, business, widget, count=1)
    assert applied["package_record_id"] == soon
    assert await _used(platform, business) == {late: 0, soon: 1}


async def test_between_equal_expiries_the_oldest_record_is_used(platform: Platform) -> None:
    business, [older, _newer] = await _business_with_records(
        platform,
        {"package_id": "p-a", "validity": {"type": "never"}},
        {"package_id": "p-b", "validity": {"type": "never"}},
    )
    [applied] = await _outcomes(platform, business, events.booking(business, "bk-1"), count=1)
    assert applied["package_record_id"] == older


async def test_no_eligible_record_is_reported_and_nothing_redeemed(platform: Platform) -> None:
    business, [record] = await _business_with_records(platform, {})
    other_service = events.booking(business, "bk-1", service_id="svc-facial")
    not_wanted = events.booking(business, "bk-2", service_id="svc-facial", use_package=False)
    [outcome] = await _outcomes(platform, business, other_service, not_wanted, count=1, settle=2)
    assert (outcome["topic"], outcome["reason"]) == (
        "booking.package_not_applied",
        "no_eligible_record",
    )
    assert await _used(platform, business) == {record: 0}


async def test_an_amount_discount_never_takes_the_price_below_zero(platform: Platform) -> None:
    business, [_record] = await _business_with_records(
        platform, {"discount": {"type": "amount", "value": {"amount": "80.00", "currency": "EUR"}}}
    )
    [applied] = await _outcomes(platform, business, events.booking(business, "bk-1"), count=1)
    assert applied["price_after"] == {"amount": "0.00", "currency": "EUR"}


async def test_a_price_in_another_currency_than_the_discount_is_not_applied(
    platform: Platform,
) -> None:
    business, [record] = await _business_with_records(
        platform, {"discount": {"type": "amount", "value": {"amount": "10.00", "currency": "EUR"}}}
    )
    usd = events.booking(business, "bk-1", currency="USD")
    chosen = events.booking(business, "bk-2", currency="USD", record_id=record)
    [not_applied] = await _outcomes(platform, business, usd, count=1)
    assert not_applied["reason"] == "no_eligible_record"  # auto-pick passes over it
    await platform.send(chosen)
    assert await platform.outcome(chosen) == ("rejected", "currency_mismatch")
    assert await _used(platform, business) == {record: 0}


async def test_a_no_show_gives_the_session_back_once_however_often_delivered(
    platform: Platform,
) -> None:
    business, [record] = await _business_with_records(platform, {})
    await _outcomes(platform, business, events.booking(business, "bk-1"), count=1)
    no_show = events.status_change(business, "bk-1", "no_show", 2)
    cancel = events.status_change(business, "bk-1", "cancelled", 3, previous="no_show")
    back = events.status_change(business, "bk-1", "confirmed", 4, previous="cancelled")
    removed = await _outcomes(
        platform, business, no_show, no_show, no_show, cancel, back, count=1, settle=2
    )
    assert [(r["reason"], r["session_restored"]) for r in removed] == [("booking_no_show", True)]
    assert await _used(platform, business) == {record: 0}


async def test_an_edit_after_the_record_expired_removes_without_restoring(
    real_infra: Infra, platform: Platform
) -> None:
    from tests.support.expiry import expire_with_two_processes

    business, [record] = await _business_with_records(
        platform, {"validity": {"type": "days", "days": 1}}
    )
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    booked = events.booking(business, "bk-1", starts_at=tomorrow)
    [applied] = await _outcomes(platform, business, booked, count=1)
    assert applied["topic"] == "booking.package_applied"
    await expire_with_two_processes(real_infra, days_ahead=3)
    # Moved to a day after the record's last: the record, expired since, gets nothing back.
    edit = events.booking(
        business, "bk-1", version=2, topic="booking.updated", starts_at=tomorrow + timedelta(days=2)
    )
    outcomes = await _outcomes(platform, business, edit, count=2)
    by_topic = {o["topic"]: o for o in outcomes}
    removed = by_topic["booking.package_removed"]
    assert (removed["reason"], removed["session_restored"]) == ("record_expired", False)
    assert by_topic["booking.package_not_applied"]["reason"] == "no_eligible_record"
    assert await _used(platform, business) == {record: 1}


async def test_a_service_change_gives_back_and_matches_again(platform: Platform) -> None:
    business, [massage, facial] = await _business_with_records(
        platform,
        {"package_id": "p-m"},
        {"package_id": "p-f", "services": [{"service_id": "svc-facial", "sessions": 5}]},
    )
    await _outcomes(platform, business, events.booking(business, "bk-1"), count=1)
    edit = events.booking(
        business, "bk-1", version=2, topic="booking.updated", service_id="svc-facial"
    )
    found = {o["topic"]: o for o in await _outcomes(platform, business, edit, count=2)}
    removed, applied = found["booking.package_removed"], found["booking.package_applied"]
    assert (removed["reason"], removed["session_restored"]) == ("service_changed", True)
    assert applied["package_record_id"] == facial
    assert await _used(platform, business) == {massage: 0, facial: 1}


async def test_deselecting_the_package_gives_the_session_back(platform: Platform) -> None:
    business, [record] = await _business_with_records(platform, {})
    await _outcomes(platform, business, events.booking(business, "bk-1"), count=1)
    edit = events.booking(business, "bk-1", version=2, topic="booking.updated", use_package=False)
    [removed] = await _outcomes(platform, business, edit, count=1)
    assert (removed["reason"], removed["session_restored"]) == ("package_deselected", True)
    assert await _used(platform, business) == {record: 0}


async def test_a_stale_version_changes_nothing(platform: Platform) -> None:
    business, [record] = await _business_with_records(platform, {})
    await _outcomes(platform, business, events.booking(business, "bk-1", version=5), count=1)
    stale = events.status_change(business, "bk-1", "cancelled", 4)
    await platform.send(stale)
    assert await platform.outcome(stale) == ("ignored", "stale_version")
    assert await _used(platform, business) == {record: 1}


async def test_a_status_change_before_its_booking_ends_as_in_order(platform: Platform) -> None:
    business, [record] = await _business_with_records(platform, {})
    early = events.status_change(business, "bk-1", "cancelled", 2)
    await platform.send(early)
    await platform.send(events.booking(business, "bk-1"))
    assert await _used(platform, business) == {record: 0}


async def test_the_last_session_exhausts_the_record_and_a_restore_reactivates_it(
    platform: Platform,
) -> None:
    business, [_record] = await _business_with_records(platform, {"sessions": 1})
    async with Reader(platform.bootstrap, ["package_record.updated"]) as reader:
        await platform.send(events.booking(business, "bk-1"))
        await platform.send(events.status_change(business, "bk-1", "cancelled", 2))
        updates = await reader.until(of_business(business), 2)
    assert [body(u)["data"]["status"] for u in updates] == ["exhausted", "active"]


async def test_another_business_s_record_is_never_used(platform: Platform) -> None:
    owner, [record] = await _business_with_records(platform, {})
    intruder = events.new_business()
    [outcome] = await _outcomes(
        platform, intruder, events.booking(intruder, "bk-x", record_id=record), count=1
    )
    assert (outcome["topic"], outcome["reason"]) == (
        "booking.package_not_applied",
        "record_not_found",
    )
    assert await _used(platform, owner) == {record: 0}
