"""The catalog's rules as plain values: the plan of an event's time, and who may manage."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.base import Actor
from services.catalog import domain

OWNER = Actor(user_id="u-owner", role="owner")
T1 = datetime(2026, 11, 1, 9, tzinfo=UTC)
T2 = datetime(2026, 11, 2, 9, tzinfo=UTC)
T3 = datetime(2026, 11, 3, 9, tzinfo=UTC)


def test_an_event_is_judged_by_the_plan_of_its_time() -> None:
    changes = [(T1, "pro"), (T3, "free")]
    assert domain.plan_at(changes, T2) == "pro"
    assert domain.plan_at(changes, T3) == "free"


def test_an_event_before_the_first_plan_known_is_judged_by_that_plan() -> None:
    # Had it arrived first, it would have waited for that plan.
    assert domain.plan_at([(T2, "pro")], T1) == "pro"
    assert domain.plan_at([], T1) is None


def test_only_the_owner_of_an_entitled_business_manages_packages() -> None:
    assert domain.may_manage("pro", OWNER) is None
    assert domain.may_manage("enterprise", OWNER) is None
    free = domain.may_manage("free", OWNER)
    assert free is not None
    assert free.reason == "not_entitled"
    staff = domain.may_manage("pro", Actor(user_id="u-desk", role="staff"))
    assert staff is not None
    assert staff.reason == "not_owner"


def test_an_older_or_equal_version_is_stale_and_a_gap_is_fine() -> None:
    assert domain.is_stale(2, 2)
    assert domain.is_stale(1, 2)
    assert not domain.is_stale(5, 2)
    assert not domain.is_stale(1, None)
