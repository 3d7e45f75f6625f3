"""Rules 9-12 as plain values: which record a booking redeems and when a session comes back."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest

from contracts.base import Money
from contracts.inbound import (
    AmountDiscount,
    BookingSnapshot,
    BookingStatusChanged,
    Discount,
    PercentDiscount,
)
from contracts.outbound import (
    PackageApplied,
    PackageForfeited,
    PackageNotApplied,
    PackageRemoved,
    PackageRepriced,
    RecordStatus,
)
from services.records.domain import Balance, Record
from services.records.sessions import Redeemable
from services.redemption import domain
from services.redemption.domain import Applied, Booking, Ledger, Refused, Stale, decide

BIZ = "biz-lumen"
ANA = "cli-ana"
MASSAGE = "svc-massage"
FACIAL = "svc-facial"
TODAY = date(2026, 11, 20)
FREE = PercentDiscount(type="percent", value=Decimal(100))
EUR = Money(amount=Decimal("60.00"), currency="EUR")
_sold = itertools.count(1)


def record(
    record_id: str,
    sessions: dict[str, tuple[int | None, int]] | None = None,
    *,
    client_id: str = ANA,
    business_id: str = BIZ,
    status: str = "active",
    expires_on: date | None = None,
    created_on: date = date(2026, 11, 1),
    discount: Discount = FREE,
) -> Redeemable:
    """A record with (total, used) per service."""
    balances = tuple(
        Balance(s, total, used) for s, (total, used) in (sessions or {MASSAGE: (10, 0)}).items()
    )
    return Redeemable(
        Record(
            record_id=record_id,
            business_id=business_id,
            client_id=client_id,
            package_id="pkg-1",
            status=cast("RecordStatus", status),
            paid=False,
            expires_on=expires_on,
            created_on=created_on,
            balances=balances,
        ),
        discount,
        next(_sold),
        discount.model_dump_json(),
        '{"type": "assignment", "assignment_id": "as-1"}',
    )


def snapshot(version: int = 1, **changes: Any) -> BookingSnapshot:
    """The whole booking bk-1 of Ana."""
    fields: dict[str, Any] = {
        "booking_id": "bk-1",
        "client_id": ANA,
        "service_id": MASSAGE,
        "starts_at": "2026-11-27T15:00:00Z",
        "status": "confirmed",
        "price": {"amount": "60.00", "currency": "EUR"},
        "source": "calendar",
        "package_record_id": None,
        "use_package": True,
        "version": version,
    }
    return BookingSnapshot.model_validate(fields | changes)


def status(status_: str, version: int) -> BookingStatusChanged:
    """bk-1 changes status."""
    return BookingStatusChanged.model_validate(
        {"booking_id": "bk-1", "client_id": ANA, "status": status_, "version": version}
    )


def run(
    ledger: Ledger, *events: domain.BookingEvent, today: date = TODAY, state: Booking | None = None
) -> tuple[Booking | None, list[domain.Outcome]]:
    """Apply events one after another, as the handler does."""
    outcomes = []
    for event in events:
        outcome = decide(state, BIZ, event, ledger, today)
        if isinstance(outcome, Applied):
            state = outcome.booking
        outcomes.append(outcome)
    return state, outcomes


def applied(outcome: domain.Outcome) -> Applied:
    """The outcome, which must be Applied."""
    assert isinstance(outcome, Applied)
    return outcome


def test_a_booking_redeems_one_session_of_the_eligible_record() -> None:
    ledger = Ledger([record("rec-1")])

    state, [outcome] = run(ledger, snapshot())

    [event] = applied(outcome).events
    assert isinstance(event, PackageApplied)
    assert (event.package_record_id, event.sessions_remaining) == ("rec-1", 9)
    assert ledger.used("rec-1", MASSAGE) == 1
    assert state is not None
    assert state.held is not None
    assert state.held.record_id == "rec-1"


def test_the_record_expiring_first_then_the_oldest_is_picked() -> None:
    never = record("rec-a", created_on=date(2026, 1, 1))
    late = record("rec-b", expires_on=date(2027, 6, 1), created_on=date(2026, 2, 1))
    young = record("rec-c", expires_on=date(2027, 1, 1), created_on=date(2026, 10, 1))
    old = record("rec-d", expires_on=date(2027, 1, 1), created_on=date(2026, 9, 1))

    assert [r.record.record_id for r in Ledger([never, late, young, old]).of_client(BIZ, ANA)] == [
        "rec-d",
        "rec-c",
        "rec-b",
        "rec-a",
    ]


@pytest.mark.parametrize(
    ("dead", "reason"),
    [
        (record("rec-x", status="cancelled"), "record_not_eligible"),
        (record("rec-x", status="expired", expires_on=date(2026, 11, 19)), "record_not_eligible"),
        (record("rec-x", expires_on=date(2026, 11, 19)), "record_not_eligible"),
        (record("rec-x", {MASSAGE: (1, 1)}), "record_not_eligible"),
        (record("rec-x", {FACIAL: (5, 0)}), "record_not_eligible"),
        (record("rec-x", client_id="cli-ben"), "record_not_found"),
        (record("rec-x", business_id="biz-other"), "record_not_found"),
    ],
    ids=[
        "cancelled",
        "expired",
        "past-its-last-day",
        "used-up",
        "other-service",
        "other-client",
        "other-business",
    ],
)
def test_a_chosen_record_that_cannot_serve_is_not_applied(dead: Redeemable, reason: str) -> None:
    ledger = Ledger([dead, record("rec-good")])

    _, [outcome] = run(ledger, snapshot(package_record_id="rec-x"))

    assert applied(outcome).events == (
        PackageNotApplied(
            booking_id="bk-1", client_id=ANA, reason=reason, package_record_id="rec-x"
        ),
    )
    assert ledger.used("rec-good", MASSAGE) == 0


def test_a_record_is_usable_on_its_last_valid_day() -> None:
    on_its_last_day = snapshot(starts_at="2026-11-20T18:00:00Z")
    _, [outcome] = run(Ledger([record("rec-1", expires_on=TODAY)]), on_its_last_day)

    assert isinstance(applied(outcome).events[0], PackageApplied)


def test_without_use_package_nothing_is_matched_or_reported() -> None:
    ledger = Ledger([record("rec-1")])

    _, [outcome] = run(ledger, snapshot(use_package=False))

    assert applied(outcome).events == ()


@pytest.mark.parametrize(
    ("discount", "price", "after"),
    [
        (PercentDiscount(type="percent", value=Decimal(20)), "60.00", "48.00"),
        (PercentDiscount(type="percent", value=Decimal("12.5")), "9.99", "8.74"),
        (PercentDiscount(type="percent", value=Decimal(0)), "60", "60"),
        (
            AmountDiscount(type="amount", value=Money(amount=Decimal(15), currency="EUR")),
            "60.00",
            "45.00",
        ),
        (
            AmountDiscount(type="amount", value=Money(amount=Decimal(99), currency="EUR")),
            "60.00",
            "0.00",
        ),
    ],
)
def test_the_discount_applies_to_the_price_and_never_goes_below_zero(
    discount: Discount, price: str, after: str
) -> None:
    result = domain.price_after(Money(amount=Decimal(price), currency="EUR"), discount)

    assert result == Money(amount=Decimal(after), currency="EUR")
    assert isinstance(result, Money)
    assert str(result.amount) == after


def test_an_amount_discount_in_another_currency_refuses_the_event_and_changes_nothing() -> None:
    usd_off = AmountDiscount(type="amount", value=Money(amount=Decimal(10), currency="USD"))
    held = record("rec-2", expires_on=date(2027, 1, 1))
    ledger = Ledger([record("rec-1", discount=usd_off), held])
    state, _ = run(ledger, snapshot(package_record_id="rec-2"))

    _, [outcome] = run(ledger, snapshot(version=2, package_record_id="rec-1"), state=state)

    assert outcome == Refused(
        "currency_mismatch", "booking price is in EUR, the package discount in USD"
    )
    assert (ledger.used("rec-1", MASSAGE), ledger.used("rec-2", MASSAGE)) == (0, 1)


def test_no_show_gives_the_session_back_once_and_releases_the_booking() -> None:
    ledger = Ledger([record("rec-1")])

    state, outcomes = run(
        ledger,
        snapshot(),
        status("no_show", 2),
        status("no_show", 3),
        status("cancelled", 4),
        status("confirmed", 5),
    )

    removed = [
        e
        for o in outcomes
        if isinstance(o, Applied)
        for e in o.events
        if isinstance(e, PackageRemoved)
    ]
    assert [(e.reason, e.session_restored, e.sessions_remaining) for e in removed] == [
        ("booking_no_show", True, 10)
    ]
    assert ledger.used("rec-1", MASSAGE) == 0
    assert state is not None
    assert state.released
    assert state.held is None


def test_a_version_at_or_below_the_last_is_stale() -> None:
    ledger = Ledger([record("rec-1")])

    _, outcomes = run(
        ledger,
        snapshot(version=2),
        snapshot(version=2),
        snapshot(version=1),
        status("cancelled", 2),
    )

    assert [type(o) for o in outcomes] == [Applied, Stale, Stale, Stale]
    assert ledger.used("rec-1", MASSAGE) == 1


def test_a_status_change_before_its_booking_is_kept_and_wins_when_newer() -> None:
    ledger = Ledger([record("rec-1")])

    state, outcomes = run(ledger, status("cancelled", 2), snapshot(version=1))

    assert [applied(o).events for o in outcomes] == [(), ()]
    assert state is not None
    assert (state.status, state.released, state.held) == ("cancelled", True, None)
    assert ledger.used("rec-1", MASSAGE) == 0


def test_an_older_snapshot_keeps_the_newer_status() -> None:
    state, _ = run(Ledger([record("rec-1")]), status("completed", 3), snapshot(version=2))

    assert state is not None
    assert state.status == "completed"
    assert state.held is not None


def test_an_edit_on_a_dead_record_removes_without_giving_back() -> None:
    ledger = Ledger([record("rec-1", expires_on=date(2026, 11, 25))])
    state, _ = run(ledger, snapshot(starts_at="2026-11-24T15:00:00Z"))

    # Moved past the record's last day, once that day has gone.
    later = snapshot(version=2, starts_at="2026-11-27T15:00:00Z")
    _, [outcome] = run(ledger, later, state=state, today=date(2026, 11, 26))

    # The booking is matched again for its new day, and no record serves it.
    [event, not_applied] = applied(outcome).events
    assert isinstance(event, PackageRemoved)
    assert (event.reason, event.session_restored, event.sessions_remaining) == (
        "record_expired",
        False,
        9,
    )
    assert isinstance(not_applied, PackageNotApplied)
    assert ledger.used("rec-1", MASSAGE) == 1


def test_a_service_the_record_does_not_cover_gives_back_and_rematches() -> None:
    ledger = Ledger([record("rec-m"), record("rec-f", {FACIAL: (3, 0)})])
    state, _ = run(ledger, snapshot())

    _, [outcome] = run(ledger, snapshot(version=2, service_id=FACIAL), state=state)

    assert [(type(e).__name__, e.package_record_id) for e in applied(outcome).events] == [
        ("PackageRemoved", "rec-m"),
        ("PackageApplied", "rec-f"),
    ]
    assert (ledger.used("rec-m", MASSAGE), ledger.used("rec-f", FACIAL)) == (0, 1)


def test_choosing_another_record_moves_the_session() -> None:
    ledger = Ledger([record("rec-1", expires_on=date(2027, 1, 1)), record("rec-2")])
    state, _ = run(ledger, snapshot())

    _, [outcome] = run(ledger, snapshot(version=2, package_record_id="rec-2"), state=state)

    [removed, redeemed] = applied(outcome).actions
    assert isinstance(removed, domain.Removed)
    assert (removed.reason, removed.restored, removed.held.record_id) == (
        "package_deselected",
        True,
        "rec-1",
    )
    assert isinstance(redeemed, domain.Redeemed)
    assert redeemed.held.record_id == "rec-2"


def test_an_unchanged_edit_after_not_applied_does_not_report_again() -> None:
    ledger = Ledger([])
    state, [first] = run(ledger, snapshot())

    repriced = snapshot(version=2, price={"amount": "65.00", "currency": "EUR"})
    _, [second] = run(ledger, repriced, state=state)

    assert [e.reason for e in applied(first).events if isinstance(e, PackageNotApplied)] == [
        "no_eligible_record"
    ]
    assert applied(second).events == ()


def test_an_appointment_moved_to_another_day_is_matched_again() -> None:
    ledger = Ledger([record("rec-1", expires_on=date(2026, 11, 25))])
    state, [first] = run(ledger, snapshot())  # the 27th: past the record's last day

    _, [second] = run(ledger, snapshot(version=2, starts_at="2026-11-24T15:00:00Z"), state=state)

    assert [type(e) for e in applied(first).events] == [PackageNotApplied]
    assert [type(e) for e in applied(second).events] == [PackageApplied]


def test_an_unlimited_service_counts_up_without_a_balance() -> None:
    ledger = Ledger([record("rec-1", {MASSAGE: (None, 4)})])

    _, [outcome] = run(ledger, snapshot())

    [event] = applied(outcome).events
    assert isinstance(event, PackageApplied)
    assert event.sessions_remaining is None
    assert ledger.used("rec-1", MASSAGE) == 5


def test_a_booking_moved_to_another_client_gives_back_and_uses_the_new_clients_record() -> None:
    ledger = Ledger([record("rec-ana"), record("rec-ben", client_id="cli-ben")])
    state, _ = run(ledger, snapshot())

    _, [outcome] = run(ledger, snapshot(version=2, client_id="cli-ben"), state=state)

    assert [(type(e).__name__, e.package_record_id) for e in applied(outcome).events] == [
        ("PackageRemoved", "rec-ana"),
        ("PackageApplied", "rec-ben"),
    ]
    assert (ledger.used("rec-ana", MASSAGE), ledger.used("rec-ben", MASSAGE)) == (0, 1)


def test_a_refused_event_leaves_the_booking_as_it_was() -> None:
    usd_off = AmountDiscount(type="amount", value=Money(amount=Decimal(10), currency="USD"))
    ledger = Ledger([record("rec-1", discount=usd_off)])

    state, [outcome] = run(ledger, snapshot(package_record_id="rec-1"))

    assert isinstance(outcome, Refused)
    assert state is None


def test_an_appointment_entered_after_the_fact_redeems_on_a_record_valid_that_day() -> None:
    expired = record("rec-1", status="expired", expires_on=date(2026, 11, 25))

    _, [outcome] = run(
        Ledger([expired]), snapshot(starts_at="2026-11-24T15:00:00Z"), today=date(2026, 11, 28)
    )

    assert [type(e) for e in applied(outcome).events] == [PackageApplied]


def test_a_record_does_not_serve_an_appointment_after_its_last_day() -> None:
    ledger = Ledger([record("rec-1", expires_on=date(2026, 11, 25)), record("rec-2")])

    _, [outcome] = run(ledger, snapshot(starts_at="2026-11-26T09:00:00Z"))

    [event] = applied(outcome).events
    assert isinstance(event, PackageApplied)
    assert event.package_record_id == "rec-2"


def test_the_appointment_day_is_the_business_s_day() -> None:
    from zoneinfo import ZoneInfo

    ledger = Ledger([record("rec-1", expires_on=date(2026, 11, 25))])
    # 23:30 UTC on the 25th is already the 26th in Berlin: past the record's last day there.
    late_evening = snapshot(starts_at="2026-11-25T23:30:00Z")

    outcome = decide(None, BIZ, late_evening, ledger, TODAY, zone=ZoneInfo("Europe/Berlin"))

    assert [type(e) for e in applied(outcome).events] == [PackageNotApplied]


def test_an_edit_moving_the_appointment_past_the_expiry_gives_back_to_a_live_record() -> None:
    ledger = Ledger([record("rec-1", expires_on=date(2026, 11, 30))])
    state, _ = run(ledger, snapshot())

    moved = snapshot(version=2, starts_at="2026-12-02T10:00:00Z")
    _, [outcome] = run(ledger, moved, state=state)

    removed = applied(outcome).events[0]
    assert isinstance(removed, PackageRemoved)
    assert (removed.reason, removed.session_restored) == ("record_expired", True)
    assert ledger.used("rec-1", MASSAGE) == 0


def test_a_held_booking_whose_price_changes_is_repriced_with_the_same_record() -> None:
    half = PercentDiscount(type="percent", value=Decimal(50))
    ledger = Ledger([record("rec-1", discount=half)])
    state, _ = run(ledger, snapshot())

    dearer = snapshot(version=2, price={"amount": "80.00", "currency": "EUR"})
    state, [outcome] = run(ledger, dearer, state=state)

    [event] = applied(outcome).events
    assert isinstance(event, PackageRepriced)
    assert (event.price_before.amount, event.price_after.amount) == (
        Decimal("80.00"),
        Decimal("40.00"),
    )
    assert ledger.used("rec-1", MASSAGE) == 1
    assert state is not None
    assert state.held is not None
    assert state.held.price_after.amount == Decimal("40.00")


def test_auto_pick_passes_over_a_record_whose_discount_cannot_apply() -> None:
    usd_off = AmountDiscount(type="amount", value=Money(amount=Decimal(10), currency="USD"))
    first = record("rec-usd", discount=usd_off, expires_on=date(2026, 12, 31))
    ledger = Ledger([first, record("rec-eur")])

    _, [outcome] = run(ledger, snapshot())

    [event] = applied(outcome).events
    assert isinstance(event, PackageApplied)
    assert event.package_record_id == "rec-eur"


def test_a_waiting_booking_is_matched_again_when_a_record_appears() -> None:
    state, _ = run(Ledger([]), snapshot())
    assert state is not None
    assert state.awaits_package

    rematched = domain.rematch(state, Ledger([record("rec-new")]), TODAY)

    assert rematched is not None
    [event] = rematched.events
    assert isinstance(event, PackageApplied)
    assert not rematched.booking.awaits_package


def test_a_waiting_booking_whose_day_has_passed_or_that_ended_is_not_matched_again() -> None:
    state, _ = run(Ledger([]), snapshot())
    assert state is not None
    cancelled, _ = run(Ledger([]), status("cancelled", 2), state=state)
    assert cancelled is not None

    assert domain.rematch(state, Ledger([record("rec-new")]), date(2026, 11, 28)) is None
    assert not cancelled.awaits_package
    assert domain.rematch(cancelled, Ledger([record("rec-new")]), TODAY) is None


def test_matching_again_with_still_no_record_publishes_nothing() -> None:
    state, _ = run(Ledger([]), snapshot())
    assert state is not None

    assert domain.rematch(state, Ledger([record("rec-f", {FACIAL: (3, 0)})]), TODAY) is None


FORFEIT_NO_SHOWS = domain.Policy(no_show="forfeit")
DAY_AHEAD = domain.Policy(late_cancel_hours=24)
APPOINTMENT = datetime(2026, 11, 27, 15, tzinfo=UTC)


def _ended(
    policy: domain.Policy, status_: str, at: datetime, ledger: Ledger | None = None
) -> tuple[Ledger, Booking | None, domain.Outcome]:
    ledger = ledger or Ledger([record("rec-1")])
    state, _ = run(ledger, snapshot())
    outcome = decide(state, BIZ, status(status_, 2), ledger, TODAY, policy=policy, at=at)
    return ledger, applied(outcome).booking, outcome


@pytest.mark.parametrize(
    ("policy", "status_", "hours_before", "kept"),
    [
        (domain.Policy(), "no_show", 0, None),
        (FORFEIT_NO_SHOWS, "no_show", 0, "no_show"),
        (FORFEIT_NO_SHOWS, "cancelled", 1, None),
        (DAY_AHEAD, "cancelled", 23, "late_cancel"),
        (DAY_AHEAD, "cancelled", 24, None),
        (DAY_AHEAD, "cancelled", -2, "late_cancel"),  # cancelled after it should have begun
        (DAY_AHEAD, "no_show", 0, None),
        (domain.Policy(late_cancel_hours=0), "cancelled", 1, None),
    ],
)
def test_the_business_s_policy_decides_whether_a_session_comes_back(
    policy: domain.Policy, status_: str, hours_before: int, kept: str | None
) -> None:
    at = APPOINTMENT - timedelta(hours=hours_before)
    ledger, booking, outcome = _ended(policy, status_, at)

    [event] = applied(outcome).events
    if kept is None:
        assert isinstance(event, PackageRemoved)
        assert event.session_restored
        assert ledger.used("rec-1", MASSAGE) == 0
    else:
        assert isinstance(event, PackageForfeited)
        assert (event.reason, event.sessions_remaining) == (kept, 9)
        assert ledger.used("rec-1", MASSAGE) == 1
        assert booking is not None
        assert booking.held is not None  # the booking keeps its redemption


def test_a_forfeited_session_is_forfeited_once_and_a_status_back_redeems_nothing() -> None:
    ledger, booking, _ = _ended(FORFEIT_NO_SHOWS, "no_show", APPOINTMENT)

    again = decide(booking, BIZ, status("cancelled", 3), ledger, TODAY, policy=FORFEIT_NO_SHOWS)
    back = decide(applied(again).booking, BIZ, status("confirmed", 4), ledger, TODAY)

    assert applied(again).events == ()
    assert applied(back).events == ()
    assert ledger.used("rec-1", MASSAGE) == 1
