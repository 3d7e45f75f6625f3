"""Records' rules as plain values: validity, template edits, business edits and who may act."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from contracts.inbound import PackageDefined
from services.records import domain
from services.records.domain import Balance, Record

_KEEP = object()
SOLD = date(2026, 3, 1)


def relax(**changes: Any) -> PackageDefined:
    """Relax 10: ten massages, valid 90 days from the sale."""
    fields: dict[str, Any] = {
        "package_id": "pkg-relax10",
        "name": "Relax 10",
        "price": {"amount": "450.00", "currency": "EUR"},
        "services": [{"service_id": "svc-massage", "sessions": 10}],
        "discount": {"type": "percent", "value": "100"},
        "validity": {"type": "days", "days": 90},
        "status": "active",
        "version": 1,
    }
    return PackageDefined.model_validate(fields | changes)


def ana_s(**changes: Any) -> Record:
    """Ana's Relax 10, sold on 1 March, three massages used."""
    fields: dict[str, Any] = {
        "record_id": "rec-1",
        "business_id": "biz-lumen",
        "client_id": "cli-ana",
        "package_id": "pkg-relax10",
        "status": "active",
        "paid": True,
        "expires_on": date(2026, 5, 30),
        "created_on": SOLD,
        "balances": (Balance("svc-massage", 10, 3),),
    }
    return Record(**(fields | changes))


def test_days_of_validity_count_from_the_sale_day() -> None:
    assert domain.expires_on(relax(), SOLD) == date(2026, 5, 30)
    assert domain.expires_on(relax(validity={"type": "never"}), SOLD) is None
    until = relax(validity={"type": "until", "date": "2026-12-31"})
    assert domain.expires_on(until, SOLD) == date(2026, 12, 31)


def test_a_record_serves_through_its_last_day_and_never_when_cancelled() -> None:
    record = ana_s()
    assert record.serves_on(date(2026, 5, 30))
    assert not record.serves_on(date(2026, 5, 31))
    assert record.serves_on(date(2026, 1, 1))  # an appointment before the sale, entered late
    assert not ana_s(status="cancelled").serves_on(date(2026, 4, 1))
    assert ana_s(status="expired").serves_on(date(2026, 5, 1))  # the day counts, not the sweep


def test_a_session_comes_back_only_to_a_record_live_today() -> None:
    assert ana_s().live_on(date(2026, 5, 30))
    assert not ana_s().live_on(date(2026, 5, 31))
    assert not ana_s(status="cancelled").live_on(date(2026, 4, 1))


def test_a_new_validity_counts_from_each_record_s_own_sale_day() -> None:
    after = domain.with_terms(ana_s(), relax(validity={"type": "days", "days": 180}))
    assert after.expires_on == date(2026, 8, 28)


def test_a_new_validity_leaves_an_expiry_the_business_set_by_hand() -> None:
    by_hand = ana_s(expires_on=date(2026, 12, 31), expiry_by_hand=True)
    after = domain.with_terms(by_hand, relax(validity={"type": "days", "days": 10}))
    assert after.expires_on == date(2026, 12, 31)


def test_new_session_counts_keep_what_was_used() -> None:
    fewer = relax(services=[{"service_id": "svc-massage", "sessions": 2}])
    after = domain.with_terms(ana_s(), fewer)
    assert after.balances == (Balance("svc-massage", 3, 3),)
    assert after.status == "exhausted"


def test_an_expiry_set_by_the_business_is_marked_as_set_by_hand() -> None:
    edited = domain.edit(
        ana_s(), expires=date(2027, 1, 31), totals=None, status=None, keep=_KEEP, today=SOLD
    )
    assert isinstance(edited, Record)
    assert (edited.expires_on, edited.expiry_by_hand) == (date(2027, 1, 31), True)
    untouched = domain.edit(
        ana_s(), expires=_KEEP, totals=None, status=None, keep=_KEEP, today=SOLD
    )
    assert isinstance(untouched, Record)
    assert not untouched.expiry_by_hand


def test_a_cancelled_record_is_never_reactivated() -> None:
    refused = domain.edit(
        ana_s(status="cancelled"),
        expires=_KEEP,
        totals=None,
        status="active",
        keep=_KEEP,
        today=SOLD,
    )
    assert refused == domain.EditRefused(
        "record_cancelled", "a cancelled record cannot be reactivated"
    )


@pytest.mark.parametrize(
    ("role", "allowed", "permitted"),
    [
        ("owner", domain.ASSIGNERS, True),
        ("staff", domain.ASSIGNERS, True),
        ("system", domain.ASSIGNERS, True),
        ("client", domain.ASSIGNERS, False),
        ("owner", domain.EDITORS, True),
        ("staff", domain.EDITORS, True),
        ("system", domain.EDITORS, False),
        ("client", domain.EDITORS, False),
        (None, domain.EDITORS, False),
    ],
)
def test_business_users_assign_and_edit_records_clients_never(
    role: str | None, allowed: frozenset[str], permitted: bool
) -> None:
    refusal = domain.permitted(role, allowed)
    assert (refusal is None) == permitted
    if refusal:
        assert refusal.reason == "not_permitted"


def test_a_freeze_starts_on_the_request_s_day_and_serves_no_appointment_then() -> None:
    frozen = domain.freeze(ana_s(), date(2026, 4, 10), today=date(2026, 4, 1))
    assert isinstance(frozen, Record)
    assert (frozen.status, frozen.frozen_from, frozen.frozen_until) == (
        "frozen",
        date(2026, 4, 1),
        date(2026, 4, 10),
    )
    assert not frozen.serves_on(date(2026, 4, 5))
    assert frozen.serves_on(date(2026, 4, 11))
    assert frozen.live_on(date(2026, 4, 5))  # a session may still come back to it


def test_when_a_freeze_ends_the_expiry_moves_by_the_days_frozen() -> None:
    frozen = domain.freeze(ana_s(), date(2026, 4, 10), today=date(2026, 4, 1))
    assert isinstance(frozen, Record)

    thawed = domain.thaw(frozen, date(2026, 4, 11))

    assert thawed.expires_on == date(2026, 5, 30) + timedelta(days=10)
    assert (thawed.status, thawed.frozen_from, thawed.frozen_until) == ("active", None, None)


def test_a_freeze_lifted_early_counts_only_the_days_it_lasted() -> None:
    frozen = domain.freeze(ana_s(), date(2026, 4, 30), today=date(2026, 4, 1))
    assert isinstance(frozen, Record)

    lifted = domain.edit(
        frozen,
        expires=_KEEP,
        totals=None,
        status=None,
        keep=_KEEP,
        today=date(2026, 4, 4),
        frozen_until=None,
    )

    assert isinstance(lifted, Record)
    assert lifted.expires_on == date(2026, 5, 30) + timedelta(days=3)
    assert lifted.status == "active"


def test_a_record_that_never_expires_keeps_no_expiry_after_a_freeze() -> None:
    frozen = domain.freeze(ana_s(expires_on=None), date(2026, 4, 10), today=date(2026, 4, 1))
    assert isinstance(frozen, Record)
    assert domain.thaw(frozen, date(2026, 4, 11)).expires_on is None


def test_a_freeze_cannot_end_before_it_starts_nor_touch_a_cancelled_record() -> None:
    past = domain.freeze(ana_s(), date(2026, 3, 31), today=date(2026, 4, 1))
    assert isinstance(past, domain.EditRefused)
    assert past.reason == "invalid_freeze"
    cancelled = domain.edit(
        ana_s(status="cancelled"),
        expires=_KEEP,
        totals=None,
        status=None,
        keep=_KEEP,
        today=date(2026, 4, 1),
        frozen_until=date(2026, 4, 9),
    )
    assert isinstance(cancelled, domain.EditRefused)
    assert cancelled.reason == "record_cancelled"
