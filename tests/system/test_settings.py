"""A business's settings through the topics: its time zone counts its days, its policy
decides whether a no-show or a late cancellation gives the session back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.catalog.tables import business_settings
from services.records.tables import package_record
from tests.support import events
from tests.support.flow import Platform
from tests.support.kafka import Reader, body, of_business

pytestmark = pytest.mark.infra
ENDINGS = ["booking.package_removed", "booking.package_forfeited"]


def _settings(business: str, version: int = 1, **changes: Any) -> dict[str, Any]:
    data = {
        "time_zone": "UTC",
        "no_show": "restore",
        "late_cancel_hours": None,
        "expiring_soon_days": 7,
        "version": version,
    }
    return events.envelope(
        "business.settings_changed", business, data | changes, actor=events.OWNER
    )


async def _holding(platform: Platform, business: str, starts_at: datetime | None = None) -> None:
    """A pro business whose client Ana holds a session for booking bk-1."""
    await platform.send(events.plan(business), events.package(business))
    await platform.send(
        events.invoice(business, "cli-ana", "inv-1", lines=[events.package_line("l1")])
    )
    async with Reader(platform.bootstrap, ["booking.package_applied"]) as reader:
        await platform.send(events.booking(business, "bk-1", starts_at=starts_at))
        assert await reader.until(of_business(business), 1)


async def _ending(platform: Platform, business: str, status: str) -> dict[str, Any]:
    async with Reader(platform.bootstrap, ENDINGS) as reader:
        await platform.send(events.status_change(business, "bk-1", status, 2))
        [ended] = await reader.until(of_business(business), 1, settle=1.0)
    return {"topic": ended.topic, **body(ended)["data"]}


async def test_a_no_show_under_a_forfeit_policy_keeps_the_session(platform: Platform) -> None:
    business = events.new_business()
    await platform.send(_settings(business, no_show="forfeit"))
    await _holding(platform, business)

    ended = await _ending(platform, business, "no_show")

    assert (ended["topic"], ended["reason"], ended["sessions_remaining"]) == (
        "booking.package_forfeited",
        "no_show",
        9,
    )
    [record] = await platform.records(business, "cli-ana")
    assert record.sessions_used == 1


@pytest.mark.parametrize(("hours_ahead", "kept"), [(2, True), (72, False)])
async def test_a_cancellation_inside_the_late_window_keeps_the_session(
    platform: Platform, hours_ahead: int, kept: bool
) -> None:
    business = events.new_business()
    await platform.send(_settings(business, late_cancel_hours=24))
    await _holding(platform, business, datetime.now(UTC) + timedelta(hours=hours_ahead))

    ended = await _ending(platform, business, "cancelled")

    if kept:
        assert (ended["topic"], ended["reason"]) == ("booking.package_forfeited", "late_cancel")
    else:
        assert (ended["topic"], ended["reason"]) == ("booking.package_removed", "booking_cancelled")
    [record] = await platform.records(business, "cli-ana")
    assert record.sessions_used == (1 if kept else 0)


async def test_a_record_is_created_on_the_sale_s_day_in_the_business_s_time_zone(
    platform: Platform,
) -> None:
    business = events.new_business()
    # Late in the evening in UTC is already the next day in Tokyo.
    sold_at = datetime.now(UTC).replace(hour=20, minute=0, second=0, microsecond=0) - timedelta(
        days=2
    )
    await platform.send(_settings(business, time_zone="Asia/Tokyo"), events.plan(business))
    await platform.send(events.package(business, validity={"type": "days", "days": 10}))
    assigned = events.envelope(
        "package.assigned",
        business,
        {"assignment_id": "asg-1", "package_id": "pkg-relax10", "client_id": "cli-ana"},
        occurred_at=sold_at,
    )
    await platform.send(assigned)
    await platform.settled(assigned)
    [record] = await platform.rows(
        select(package_record.c.created_on, package_record.c.expires_on).where(
            package_record.c.business_id == business
        )
    )
    assert record.created_on == sold_at.date() + timedelta(days=1)
    assert record.expires_on == record.created_on + timedelta(days=10)


async def test_a_stale_settings_version_changes_nothing_and_a_gap_applies(
    platform: Platform,
) -> None:
    business = events.new_business()
    v3 = _settings(business, 3, no_show="forfeit")
    v2 = _settings(business, 2, time_zone="Europe/Berlin")
    await platform.send(v3, v2)
    assert await platform.outcome(v3) == ("applied", None)
    assert await platform.outcome(v2) == ("ignored", "stale_version")
    [row] = await platform.rows(
        select(business_settings).where(business_settings.c.business_id == business)
    )
    assert (row.version, row.time_zone, row.no_show) == (3, "UTC", "forfeit")
