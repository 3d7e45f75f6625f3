"""Rules 1-8 through the topics: catalog, invoicing and records on real Kafka and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from services.catalog.tables import package
from services.records.tables import record_service
from tests.conftest import Infra
from tests.support import events
from tests.support.flow import Platform
from tests.support.kafka import Reader, body, of_business
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.infra


@pytest.fixture
def platform(real_infra: Infra, services: dict[str, ServiceProcess], engine: Any) -> Platform:
    return Platform(real_infra.bootstrap, engine)


async def _pro_business_with_package(platform: Platform, **package: Any) -> str:
    business = events.new_business()
    await platform.send(events.plan(business), events.package(business, **package))
    return business


def _assign(
    business: str,
    client: str = "cli-ben",
    assignment: str = "asg-1",
    package_id: str = "pkg-relax10",
) -> dict[str, Any]:
    return events.envelope(
        "package.assigned",
        business,
        {"assignment_id": assignment, "package_id": package_id, "client_id": client},
    )


def _edit(
    business: str, record_id: str, changes: dict[str, Any], client: str = "cli-ben"
) -> dict[str, Any]:
    return events.envelope(
        "package_record.edit_requested",
        business,
        {
            "request_id": "req-1",
            "package_record_id": record_id,
            "client_id": client,
            "changes": changes,
        },
    )


async def _packages(platform: Platform, business: str) -> list[Any]:
    return await platform.rows(select(package).where(package.c.business_id == business))


# -- catalog --------------------------------------------------------------------------------------


async def test_only_the_owner_manages_packages(platform: Platform) -> None:
    business = events.new_business()
    staff_made = events.package(business, actor=events.STAFF)
    await platform.send(events.plan(business), staff_made)
    assert await platform.outcome(staff_made) == ("rejected", "not_owner")
    assert await _packages(platform, business) == []


async def test_a_business_below_pro_cannot_manage_packages(platform: Platform) -> None:
    business = events.new_business()
    created = events.package(business)
    await platform.send(events.plan(business, "starter"), created)
    assert await platform.outcome(created) == ("rejected", "not_entitled")
    assert await _packages(platform, business) == []


async def test_an_invalid_package_is_refused_naming_the_field(platform: Platform) -> None:
    business = events.new_business()
    dollars_off = {"type": "amount", "value": {"amount": "5.00", "currency": "USD"}}
    created = events.package(business, discount=dollars_off)  # the price is in EUR
    async with Reader(platform.bootstrap, ["message.rejected"]) as reader:
        await platform.send(events.plan(business), created)
        [rejected] = await reader.until(of_business(business), 1)
    assert body(rejected)["data"]["reason"] == "invalid_package"
    assert body(rejected)["data"]["detail"].startswith("discount.value.currency")
    assert body(rejected)["data"]["rejected_event_id"] == created["event_id"]


async def test_a_stale_package_version_is_ignored_and_a_gap_applies(platform: Platform) -> None:
    business = await _pro_business_with_package(platform)
    v3 = events.package(business, version=3, topic="package.updated", sessions=8)
    v2 = events.package(business, version=2, topic="package.updated", sessions=5)
    await platform.send(v3, v2)
    assert await platform.outcome(v3) == ("applied", None)
    assert await platform.outcome(v2) == ("ignored", "stale_version")
    [row] = await _packages(platform, business)
    assert (row.terms_version, row.terms["services"][0]["sessions"]) == (3, 8)


async def test_a_package_event_before_the_plan_waits_for_it(platform: Platform) -> None:
    business = events.new_business()
    created = events.package(business)
    await platform.send(created)
    assert await platform.outcome(created) == ("deferred", "plan_not_seen_yet")
    await platform.send(events.plan(business))
    [row] = await _packages(platform, business)
    assert row.status == "active"


# -- invoicing ------------------------------------------------------------------------------------


async def test_quantity_three_makes_three_records_and_a_republish_adds_none(
    platform: Platform,
) -> None:
    business = await _pro_business_with_package(platform)
    lines = [events.package_line("l1", quantity=3)]
    await platform.send(events.invoice(business, lines=lines))
    await platform.send(events.invoice(business, lines=lines))  # republished: a new event id
    assert len(await platform.records(business)) == 3


async def test_a_disabled_package_line_is_refused_while_the_other_lines_apply(
    platform: Platform,
) -> None:
    business = await _pro_business_with_package(platform)
    await platform.send(
        events.package(business, "pkg-spa5", sessions=5),
        events.envelope(
            "package.disabled",
            business,
            {"package_id": "pkg-relax10", "version": 2},
            actor=events.OWNER,
        ),
    )
    published = events.invoice(
        business,
        lines=[
            events.package_line("l1", "pkg-relax10"),
            {"line_id": "l2", "type": "product", "product_id": "oil", "quantity": 1},
            events.package_line("l3", "pkg-spa5"),
        ],
    )
    await platform.send(published)
    assert await platform.outcome(published) == ("rejected", "package_disabled")
    assert [r.package_id for r in await platform.records(business)] == ["pkg-spa5"]


async def test_a_line_for_another_business_s_package_is_not_found(platform: Platform) -> None:
    owner = await _pro_business_with_package(platform)
    thief = await _pro_business_with_package(platform, package_id="pkg-own")
    published = events.invoice(thief, lines=[events.package_line("l1", "pkg-relax10")])
    # Unknown to this business: it waits for it a while (PACKAGES_EARLY_EVENT_WAIT_S), then
    # is refused; the other business's package of that id is never used.
    async with Reader(platform.bootstrap, ["message.rejected"]) as reader:
        await platform.send(published)
        [rejected] = await reader.until(of_business(thief), 1, timeout=40)
    assert body(rejected)["data"]["reason"] == "package_not_found"
    assert body(rejected)["causation_id"] == published["event_id"]
    assert await platform.records(thief) == []
    assert await platform.records(owner) == []


async def test_an_assigned_record_is_unpaid_until_its_invoice_is_paid(platform: Platform) -> None:
    business = await _pro_business_with_package(platform)
    await platform.send(_assign(business))
    [record] = await platform.records(business, "cli-ben")
    assert (record.paid, record.status) == (False, "active")
    await platform.send(
        events.invoice(
            business,
            "cli-ben",
            "inv-9",
            lines=[
                {"line_id": "l1", "type": "package_record", "package_record_id": record.record_id}
            ],
        )
    )
    assert (await platform.records(business, "cli-ben"))[0].paid is False
    async with Reader(platform.bootstrap, ["package_record.paid"]) as reader:
        await platform.send(
            events.envelope(
                "invoice.paid", business, {"invoice_id": "inv-9", "client_id": "cli-ben"}
            )
        )
        [paid] = await reader.until(of_business(business), 1)
    assert body(paid)["data"]["paid"] is True
    assert (await platform.records(business, "cli-ben"))[0].paid is True


async def test_an_assignment_of_a_disabled_package_is_refused(platform: Platform) -> None:
    business = await _pro_business_with_package(platform)
    await platform.send(
        events.envelope(
            "package.disabled",
            business,
            {"package_id": "pkg-relax10", "version": 2},
            actor=events.OWNER,
        )
    )
    assigned = _assign(business)
    await platform.send(assigned)
    assert await platform.outcome(assigned) == ("rejected", "package_disabled")


async def test_a_paid_invoice_makes_paid_records_and_voiding_cancels_them(
    platform: Platform,
) -> None:
    business = await _pro_business_with_package(platform)
    await platform.send(events.invoice(business, paid=True))
    assert {(r.paid, r.status) for r in await platform.records(business)} == {(True, "active")}
    async with Reader(platform.bootstrap, ["package_record.cancelled"]) as reader:
        await platform.send(
            events.envelope(
                "invoice.voided", business, {"invoice_id": "inv-1", "client_id": "cli-ana"}
            )
        )
        cancelled = await reader.until(of_business(business), 2)
    assert len(cancelled) == 2
    assert {r.status for r in await platform.records(business)} == {"cancelled"}


async def test_an_invoice_before_its_package_applies_when_the_package_arrives(
    platform: Platform,
) -> None:
    business = events.new_business()
    published = events.invoice(business)
    await platform.send(published)
    assert await platform.outcome(published) == ("deferred", "package_not_seen_yet")
    async with Reader(platform.bootstrap, ["package_record.created"]) as reader:
        await platform.send(events.plan(business), events.package(business))
        created = await reader.until(of_business(business), 2)
    assert [body(r)["causation_id"] for r in created] == [published["event_id"]] * 2


# -- records --------------------------------------------------------------------------------------


async def _use(platform: Platform, record_id: str, used: int) -> None:
    """Arrange used sessions (redemption's own tests drive this through bookings)."""
    async with platform.engine.begin() as conn:
        await conn.execute(
            update(record_service)
            .where(record_service.c.record_id == record_id)
            .values(sessions_used=used)
        )


async def test_a_package_edit_reaches_live_records_never_below_used(platform: Platform) -> None:
    business = await _pro_business_with_package(platform)
    await platform.send(events.invoice(business, lines=[events.package_line("l1", quantity=3)]))
    live, used, cancelled = await platform.records(business)
    await _use(platform, used.record_id, 7)
    await platform.send(
        _edit(business, cancelled.record_id, {"status": "cancelled"}, client="cli-ana")
    )
    async with Reader(platform.bootstrap, ["package_record.updated"]) as reader:
        await platform.send(
            events.package(
                business,
                version=2,
                topic="package.updated",
                sessions=5,
                discount={"type": "percent", "value": "50"},
            )
        )
        updated = await reader.until(of_business(business), 2, settle=1)
    assert sorted(body(r)["data"]["package_record_id"] for r in updated) == sorted(
        [live.record_id, used.record_id]
    )
    after = {r.record_id: r for r in await platform.records(business)}
    assert after[live.record_id].sessions_total == 5
    assert (after[used.record_id].sessions_total, after[used.record_id].sessions_used) == (7, 7)
    assert after[used.record_id].status == "exhausted"
    assert after[cancelled.record_id].sessions_total == 10
    assert after[live.record_id].discount == {"type": "percent", "value": "50"}


async def test_disabling_a_package_changes_no_record(platform: Platform) -> None:
    business = await _pro_business_with_package(platform)
    await platform.send(events.invoice(business))
    before = await platform.records(business)
    await platform.send(
        events.envelope(
            "package.disabled",
            business,
            {"package_id": "pkg-relax10", "version": 2},
            actor=events.OWNER,
        )
    )
    assert await platform.records(business) == before


async def test_a_record_edit_changes_expiry_and_totals_but_not_below_used(
    platform: Platform,
) -> None:
    business = await _pro_business_with_package(platform)
    await platform.send(_assign(business))
    [record] = await platform.records(business)
    await _use(platform, record.record_id, 4)
    too_low = _edit(
        business,
        record.record_id,
        {"sessions": [{"service_id": "svc-massage-60", "sessions_total": 3}]},
    )
    fine = _edit(
        business,
        record.record_id,
        {
            "expires_on": "2031-01-31",
            "sessions": [{"service_id": "svc-massage-60", "sessions_total": 12}],
        },
    )
    await platform.send(too_low, fine)
    assert await platform.outcome(too_low) == ("rejected", "sessions_below_used")
    [after] = await platform.records(business)
    assert (str(after.expires_on), after.sessions_total, after.sessions_used) == (
        "2031-01-31",
        12,
        4,
    )


async def test_a_cancelled_record_cannot_be_reactivated(platform: Platform) -> None:
    business = await _pro_business_with_package(platform)
    await platform.send(_assign(business))
    [record] = await platform.records(business)
    cancel = _edit(business, record.record_id, {"status": "cancelled"})
    revive = _edit(business, record.record_id, {"status": "active"})
    await platform.send(cancel, revive)
    assert await platform.outcome(revive) == ("rejected", "record_cancelled")
    assert (await platform.records(business))[0].status == "cancelled"


async def test_another_client_s_or_business_s_record_is_not_found(
    platform: Platform, api: httpx.AsyncClient
) -> None:
    business = await _pro_business_with_package(platform)
    other = await _pro_business_with_package(platform)
    await platform.send(_assign(business))
    [record] = await platform.records(business)
    wrong_client = _edit(business, record.record_id, {"status": "cancelled"}, client="cli-eve")
    wrong_business = _edit(other, record.record_id, {"status": "cancelled"})
    await platform.send(wrong_client, wrong_business)
    assert await platform.outcome(wrong_client) == ("rejected", "record_not_found")
    # Another business's record is one this business has not seen: it waits, then is refused.
    assert await platform.settled(wrong_business) == ("rejected", "record_not_found")
    assert (await platform.records(business))[0].status == "active"
    assert (
        await api.get(f"/v1/businesses/{other}/package-records/{record.record_id}")
    ).status_code == 404
    mine = await api.get(f"/v1/businesses/{business}/package-records/{record.record_id}")
    assert mine.status_code == 200


async def test_the_read_api_lists_with_filters_and_shows_history(
    platform: Platform, api: httpx.AsyncClient
) -> None:
    business = await _pro_business_with_package(platform)
    await platform.send(
        _assign(business, assignment="asg-1"), _assign(business, assignment="asg-2")
    )
    first, second = await platform.records(business)
    await platform.send(_edit(business, first.record_id, {"status": "cancelled"}))
    listing = await api.get(f"/v1/businesses/{business}/clients/cli-ben/package-records")
    assert [r["package_record_id"] for r in listing.json()] == [second.record_id, first.record_id]
    active = await api.get(
        f"/v1/businesses/{business}/clients/cli-ben/package-records",
        params={"status": "active", "service_id": "svc-massage-60"},
    )
    assert [r["package_record_id"] for r in active.json()] == [second.record_id]
    none = await api.get(
        f"/v1/businesses/{business}/clients/cli-ben/package-records",
        params={"service_id": "svc-sauna"},
    )
    assert none.json() == []
    history = (await api.get(f"/v1/businesses/{business}/package-records/{first.record_id}")).json()
    assert [h["kind"] for h in history["history"]] == ["created", "cancelled"]
    assert history["history"][1]["actor"] == events.STAFF


async def test_records_expire_once_with_two_records_processes(
    real_infra: Infra, platform: Platform
) -> None:
    from tests.support.expiry import expire_with_two_processes

    business = await _pro_business_with_package(platform, validity={"type": "days", "days": 1})
    await platform.send(_assign(business, assignment="a1"), _assign(business, assignment="a2"))
    async with Reader(platform.bootstrap, ["package_record.expired"]) as reader:
        await expire_with_two_processes(real_infra, days_ahead=3)
        expired = [body(r) for r in await reader.until(of_business(business), 2, settle=3)]
    # One event per record; a relay may only ever repeat an event under its same event_id.
    assert len({e["event_id"] for e in expired}) == 2
    assert len({e["data"]["package_record_id"] for e in expired}) == 2
    assert {r.status for r in await platform.records(business)} == {"expired"}
