"""Rules 9-12: which record a booking redeems, and when its session comes back.

Plain values in, decisions out: the handler loads the batch's bookings and records, calls
`decide` once per event in order, and writes what the decisions say.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, Protocol

from contracts.base import Money
from contracts.inbound import (
    AmountDiscount,
    BookingSnapshot,
    BookingStatus,
    BookingStatusChanged,
    Discount,
)
from contracts.outbound import (
    NotAppliedReason,
    PackageApplied,
    PackageForfeited,
    PackageNotApplied,
    PackageRemoved,
    PackageRepriced,
    RemovalReason,
)

ENDING: tuple[BookingStatus, ...] = ("no_show", "cancelled")
MAX_PLACES = 6

ForfeitReason = Literal["no_show", "late_cancel"]
BookingEvent = BookingSnapshot | BookingStatusChanged
Inputs = tuple[str, str, bool, str | None, str | None]
"""What matching depends on: client, service, use_package, the chosen record and the
appointment's day (ISO)."""
Outbound = PackageApplied | PackageRemoved | PackageNotApplied | PackageRepriced | PackageForfeited


class BalanceView(Protocol):
    """One service of a record, as records.domain.Balance has it."""

    @property
    def service_id(self) -> str: ...
    @property
    def total(self) -> int | None: ...
    @property
    def used(self) -> int: ...


class RecordView(Protocol):
    """A record, as records.domain.Record has it."""

    @property
    def record_id(self) -> str: ...
    @property
    def business_id(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def package_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def expires_on(self) -> date | None: ...
    @property
    def created_on(self) -> date: ...
    @property
    def balances(self) -> Sequence[BalanceView]: ...

    def serves_on(self, day: date) -> bool:
        """Whether the record serves an appointment on that day."""

    def expired_on(self, today: date) -> bool:
        """Whether the record is past its last valid day."""

    def live_on(self, today: date) -> bool:
        """Whether a session may still come back to the record today."""


class RedeemableView(Protocol):
    """A record with the terms redemption needs, as records.api.Redeemable has it."""

    @property
    def record(self) -> RecordView: ...
    @property
    def discount(self) -> Discount: ...
    @property
    def seq(self) -> int: ...


@dataclass(frozen=True, slots=True, eq=False)
class Held:
    """The redemption a booking holds; identity matters, two holds are never the same."""

    record_id: str
    service_id: str
    price_before: Money
    price_after: Money
    stored_id: int | None = None


@dataclass(frozen=True, slots=True)
class Booking:
    """What redemption keeps of a booking: last snapshot, effective status, its hold."""

    business_id: str
    booking_id: str
    client_id: str
    status: BookingStatus
    snapshot_version: int = 0
    status_version: int = 0
    service_id: str | None = None
    price: Money | None = None
    use_package: bool = True
    chosen_record_id: str | None = None
    released: bool = False
    matched_on: Inputs | None = None
    held: Held | None = None
    starts_at: datetime | None = None

    @property
    def inputs(self) -> Inputs | None:
        """The matching inputs of the last snapshot; None before any snapshot."""
        if self.service_id is None:
            return None
        day = None if self.starts_at is None else self.starts_at.isoformat()
        return (self.client_id, self.service_id, self.use_package, self.chosen_record_id, day)

    @property
    def awaits_package(self) -> bool:
        """Asked for a package, holds none and can still get one: matched again when a record
        that would serve it appears or becomes usable."""
        return (
            self.held is None
            and self.use_package
            and self.service_id is not None
            and not self.released
            and self.status not in ENDING
        )

    def day(self, zone: tzinfo) -> date:
        """The appointment's day in the business's time zone."""
        assert self.starts_at is not None
        return self.starts_at.astimezone(zone).date()


@dataclass(frozen=True, slots=True)
class Redeemed:
    """A session of a record was taken for the booking."""

    held: Held


@dataclass(frozen=True, slots=True)
class Removed:
    """The booking let go of its hold; the session came back only if `restored`."""

    held: Held
    reason: RemovalReason
    restored: bool


@dataclass(frozen=True, slots=True)
class Repriced:
    """The booking's price changed: the same record prices it again; no session moves."""

    held: Held
    before: Held


@dataclass(frozen=True, slots=True)
class Forfeited:
    """A no-show or late cancellation kept its session by the business's policy: the booking
    keeps its redemption."""

    held: Held
    reason: Literal["no_show", "late_cancel"]


Action = Redeemed | Removed | Repriced | Forfeited


@dataclass(frozen=True, slots=True)
class Policy:
    """The business's policy for sessions of bookings that did not happen (CONTRACT.md,
    "Additions"): a no-show gives the session back unless `no_show` is forfeit; a cancellation
    unless it came less than `late_cancel_hours` before the appointment."""

    no_show: str = "restore"
    late_cancel_hours: int | None = None

    def keeps(self, status: str, starts_at: datetime, at: datetime) -> ForfeitReason | None:
        """Why a session is kept for a booking that ended `status` at `at`, if it is."""
        if status == "no_show" and self.no_show == "forfeit":
            return "no_show"
        hours = self.late_cancel_hours
        if status == "cancelled" and hours is not None and starts_at - at < timedelta(hours=hours):
            return "late_cancel"
        return None


@dataclass(frozen=True, slots=True)
class Applied:
    """The event applies: the booking's new state, what happened, what to publish."""

    booking: Booking
    actions: tuple[Action, ...]
    events: tuple[Outbound, ...]


@dataclass(frozen=True, slots=True)
class Stale:
    """The event is at or below a version already applied: it changes nothing."""

    detail: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A rule refuses the event (`message.rejected`): it changes nothing."""

    reason: str
    detail: str


Outcome = Applied | Stale | Refused


class Ledger:
    """The batch's records and the sessions used of them, as the batch's decisions change them."""

    def __init__(self, records: Iterable[RedeemableView]) -> None:
        self._records: dict[str, RedeemableView] = {}
        self._used: dict[tuple[str, str], int] = {}
        self._totals: dict[tuple[str, str], int | None] = {}
        self._clients: dict[tuple[str, str], list[RedeemableView]] = {}
        for r in records:
            rec = r.record
            self._records[rec.record_id] = r
            self._clients.setdefault((rec.business_id, rec.client_id), []).append(r)
            for b in rec.balances:
                self._used[rec.record_id, b.service_id] = b.used
                self._totals[rec.record_id, b.service_id] = b.total
        for candidates in self._clients.values():
            candidates.sort(key=pick_order)

    def get(self, record_id: str) -> RedeemableView | None:
        """A record of the batch by id."""
        return self._records.get(record_id)

    def of_client(self, business_id: str, client_id: str) -> list[RedeemableView]:
        """The client's records in the order rule 9 picks them."""
        return self._clients.get((business_id, client_id), [])

    def covers(self, record_id: str, service_id: str) -> bool:
        """Whether the record includes the service."""
        return (record_id, service_id) in self._totals

    def used(self, record_id: str, service_id: str) -> int:
        """Sessions of the service used on the record, now."""
        return self._used[record_id, service_id]

    def remaining(self, record_id: str, service_id: str) -> int | None:
        """Sessions of the service left on the record, now; None for unlimited."""
        total = self._totals[record_id, service_id]
        return None if total is None else total - self._used[record_id, service_id]

    def take(self, record_id: str, service_id: str) -> None:
        """Use one session (unlimited services count up too)."""
        self._used[record_id, service_id] += 1

    def give_back(self, record_id: str, service_id: str) -> None:
        """Return one session."""
        self._used[record_id, service_id] -= 1


def pick_order(r: RedeemableView) -> tuple[bool, date, date, int]:
    """Rule 9: the record that expires first (never = last), then the oldest."""
    rec = r.record
    return (rec.expires_on is None, rec.expires_on or date.min, rec.created_on, r.seq)


def decide(
    state: Booking | None,
    business_id: str,
    event: BookingEvent,
    ledger: Ledger,
    today: date,
    *,
    zone: tzinfo = UTC,
    policy: Policy = Policy(),
    at: datetime | None = None,
) -> Outcome:
    """Apply one booking event: stale, refused, or the booking's new state and what it did.

    `today` is the day in the business's time `zone`, in which appointments' days are taken;
    `at` is when the event happened, which the business's `policy` judges a cancellation by.
    On `Applied` the ledger holds the event's session changes; otherwise it is unchanged.
    """
    absorbed = absorb(state, business_id, event)
    if isinstance(absorbed, Stale):
        return absorbed
    work = _Work(ledger, today, zone, policy, at)
    try:
        booking = work.reconcile(absorbed, edited=isinstance(event, BookingSnapshot))
    except _Refusal as refusal:
        work.undo()
        return Refused(refusal.reason, refusal.detail)
    return Applied(booking, tuple(work.actions), tuple(work.events))


@dataclass(frozen=True, slots=True)
class Option:
    """A record that would serve a booking, as the booking form shows it."""

    record: RedeemableView
    sessions_remaining: int | None
    price_after: Money


def options(booking: Booking, ledger: Ledger, today: date, *, zone: tzinfo = UTC) -> list[Option]:
    """The records that would serve such a booking, in the order a redemption picks them."""
    work = _Work(ledger, today, zone, Policy(), None)
    assert booking.service_id is not None
    assert booking.price is not None
    found = []
    for r in work.candidates(booking):
        after = price_after(booking.price, r.discount)
        assert not isinstance(after, Refused)  # candidates' discounts apply
        left = ledger.remaining(r.record.record_id, booking.service_id)
        found.append(Option(r, left, after))
    return found


def rematch(booking: Booking, ledger: Ledger, today: date, *, zone: tzinfo = UTC) -> Applied | None:
    """A booking waiting for a package, matched again now that a record of its client appeared
    or became usable; None where it still gets none (nothing new is published then), or its
    appointment's day has passed."""
    if not booking.awaits_package or booking.day(zone) < today:
        return None
    work = _Work(ledger, today, zone, Policy(), None)
    try:
        held = work.match(booking, quiet=True)
    except _Refusal:
        work.undo()
        return None
    if held is None:
        return None
    return Applied(replace(booking, held=held), tuple(work.actions), tuple(work.events))


def absorb(state: Booking | None, business_id: str, event: BookingEvent) -> Booking | Stale:
    """The booking with the event's facts, or Stale when a newer version is already known."""
    current = state or Booking(business_id, event.booking_id, event.client_id, event.status)
    if isinstance(event, BookingSnapshot):
        if event.version <= current.snapshot_version:
            return Stale(f"version {event.version} <= snapshot {current.snapshot_version}")
        # A status change newer than this snapshot keeps its status (it arrived early).
        newest = event.version > current.status_version
        return replace(
            current,
            client_id=event.client_id,
            service_id=event.service_id,
            price=event.price,
            use_package=event.use_package,
            chosen_record_id=event.package_record_id,
            starts_at=event.starts_at,
            snapshot_version=event.version,
            status=event.status if newest else current.status,
        )
    known = max(current.snapshot_version, current.status_version)
    if event.version <= known:
        return Stale(f"version {event.version} <= {known}")
    return replace(current, status=event.status, status_version=event.version)


def price_after(price: Money, discount: Discount) -> Money | Refused:
    """Rule 10: the discounted price, rounded to the price's places, never below zero."""
    amount = price.amount
    if isinstance(discount, AmountDiscount):
        if discount.value.currency != price.currency:
            return Refused(
                "currency_mismatch",
                f"booking price is in {price.currency}, "
                f"the package discount in {discount.value.currency}",
            )
        after = amount - discount.value.amount
    else:
        after = amount * (Decimal(100) - discount.value) / Decimal(100)
    places = min(max(-_exponent(amount), 0), MAX_PLACES)
    after = min(max(after, Decimal(0)), amount)
    return Money.model_construct(
        amount=after.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP),
        currency=price.currency,
    )


def _applies_in(discount: Discount, currency: str) -> bool:
    """Whether the discount can apply to a price in `currency` (a percent always can)."""
    return not isinstance(discount, AmountDiscount) or discount.value.currency == currency


def _money(money: Money) -> tuple[Decimal, str]:
    return money.amount, money.currency


def _exponent(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


class _Refusal(Exception):  # noqa: N818 - a control-flow signal inside this module only
    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.reason)
        self.reason = refused.reason
        self.detail = refused.detail


class _Work:
    """One event's reconciliation: the steps of rules 9-12, recording actions and events."""

    def __init__(
        self, ledger: Ledger, today: date, zone: tzinfo, policy: Policy, at: datetime | None
    ) -> None:
        self.ledger = ledger
        self.today = today
        self.zone = zone
        self.policy = policy
        self.at = at
        self.actions: list[Action] = []
        self.events: list[Outbound] = []

    def reconcile(self, b: Booking, *, edited: bool) -> Booking:
        """Bring the booking's hold in line with its state (`edited`: a whole new snapshot)."""
        inputs = b.inputs
        if inputs is None:
            return b  # a status change ahead of its booking: kept until the snapshot comes
        if b.status in ENDING:
            return b if b.released else self._release(b)
        if b.released or not edited:
            # Out of cancelled again never silently redeems a second time; any other status
            # change is only noted.
            return b
        if b.held is not None:
            b = self._review(b, b.held)
        if b.held is None and b.use_package and inputs != b.matched_on:
            return replace(b, held=self.match(b), matched_on=inputs)
        return b if b.matched_on == inputs else replace(b, matched_on=inputs)

    def undo(self) -> None:
        """Take back the ledger changes of this event (it was refused)."""
        for action in reversed(self.actions):
            held = action.held
            if isinstance(action, Redeemed):
                self.ledger.give_back(held.record_id, held.service_id)
            elif isinstance(action, Removed) and action.restored:
                self.ledger.take(held.record_id, held.service_id)

    def _release(self, b: Booking) -> Booking:
        """Rule 11: no-show or cancelled gives the session back, once, and ends matching;
        unless the business's policy keeps it, when the booking keeps its redemption."""
        kept = None
        if b.held is not None and b.starts_at is not None and self.at is not None:
            kept = self.policy.keeps(b.status, b.starts_at, self.at)
        if b.held is not None and kept is not None:
            held = b.held
            self.actions.append(Forfeited(held, kept))
            self.events.append(
                PackageForfeited.model_construct(
                    booking_id=b.booking_id,
                    client_id=b.client_id,
                    package_record_id=held.record_id,
                    reason=kept,
                    sessions_remaining=self.ledger.remaining(held.record_id, held.service_id),
                )
            )
        elif b.held is not None:
            reason: RemovalReason = (
                "booking_no_show" if b.status == "no_show" else "booking_cancelled"
            )
            # No session comes back to a record that has expired or been cancelled since.
            restored = self._held_record(b.held).live_on(self.today)
            b = self._remove(b, b.held, reason, restored=restored)
        return replace(b, released=True)

    def _held_record(self, held: Held) -> RecordView:
        found = self.ledger.get(held.record_id)
        if found is None:
            raise LookupError(f"record {held.record_id} of a held redemption was not loaded")
        return found.record

    def _review(self, b: Booking, held: Held) -> Booking:
        """Rule 12: the hold stays while its record serves the (possibly moved) appointment
        day; otherwise it goes, the session coming back only to a record still live today. A
        deselection or a new service gives the session back; a new price reprices it."""
        record = self._held_record(held)
        if record.status == "cancelled":
            return self._remove(b, held, "record_cancelled", restored=False)
        # A freeze keeps the holds it found: only a day past the expiry loses one.
        if record.expired_on(b.day(self.zone)):
            restored = record.live_on(self.today)
            return self._remove(b, held, "record_expired", restored=restored)
        chosen_other = b.chosen_record_id not in (None, held.record_id)
        if not b.use_package or chosen_other or record.client_id != b.client_id:
            return self._remove(b, held, "package_deselected", restored=True)
        if b.service_id != held.service_id:
            # The session comes back and the booking is matched again as if new, so the
            # balance is charged to the service actually booked.
            return self._remove(b, held, "service_changed", restored=True)
        if b.price is not None and _money(b.price) != _money(held.price_before):
            return self._reprice(b, held)
        return b

    def _reprice(self, b: Booking, held: Held) -> Booking:
        found = self.ledger.get(held.record_id)
        assert found is not None
        assert b.price is not None
        after = price_after(b.price, found.discount)
        if isinstance(after, Refused):
            raise _Refusal(after)
        repriced = replace(held, price_before=b.price, price_after=after)
        self.actions.append(Repriced(repriced, held))
        self.events.append(
            PackageRepriced.model_construct(
                booking_id=b.booking_id,
                client_id=b.client_id,
                package_record_id=held.record_id,
                service_id=held.service_id,
                price_before=b.price,
                price_after=after,
            )
        )
        return replace(b, held=repriced)

    def _remove(self, b: Booking, held: Held, reason: RemovalReason, *, restored: bool) -> Booking:
        if restored:
            self.ledger.give_back(held.record_id, held.service_id)
        self.actions.append(Removed(held, reason, restored))
        self.events.append(
            PackageRemoved.model_construct(
                booking_id=b.booking_id,
                client_id=b.client_id,
                package_record_id=held.record_id,
                reason=reason,
                session_restored=restored,
                sessions_remaining=self.ledger.remaining(held.record_id, held.service_id),
            )
        )
        return replace(b, held=None)

    def match(self, b: Booking, *, quiet: bool = False) -> Held | None:
        """Rule 9: the chosen record, else the eligible one expiring first, then the oldest;
        the hold it redeems, if any (`quiet`: nothing is published when there is none)."""
        found = self._chosen(b) if b.chosen_record_id else self._first_eligible(b)
        if isinstance(found, str):
            if quiet:
                return None
            self.events.append(
                PackageNotApplied.model_construct(
                    booking_id=b.booking_id,
                    client_id=b.client_id,
                    reason=found,
                    package_record_id=b.chosen_record_id,
                )
            )
            return None
        return self._redeem(b, found)

    def _chosen(self, b: Booking) -> RedeemableView | NotAppliedReason:
        assert b.chosen_record_id is not None
        found = self.ledger.get(b.chosen_record_id)
        # Another business's or another client's record is as good as missing.
        if found is None or (found.record.business_id, found.record.client_id) != (
            b.business_id,
            b.client_id,
        ):
            return "record_not_found"
        return found if self._eligible(found, b) else "record_not_eligible"

    def _first_eligible(self, b: Booking) -> RedeemableView | NotAppliedReason:
        return next(self.candidates(b), "no_eligible_record")

    def candidates(self, b: Booking) -> Iterator[RedeemableView]:
        """Rule 9's auto-pick order of the records that would serve the booking; it passes
        over a record whose discount cannot apply (another currency)."""
        assert b.price is not None
        currency = b.price.currency
        for r in self.ledger.of_client(b.business_id, b.client_id):
            if _applies_in(r.discount, currency) and self._eligible(r, b):
                yield r

    def _eligible(self, r: RedeemableView, b: Booking) -> bool:
        """Serves the appointment's day, covers the service and has a session of it left."""
        record = r.record
        assert b.service_id is not None
        if not record.serves_on(b.day(self.zone)):
            return False
        if not self.ledger.covers(record.record_id, b.service_id):
            return False
        left = self.ledger.remaining(record.record_id, b.service_id)
        return left is None or left > 0

    def _redeem(self, b: Booking, r: RedeemableView) -> Held:
        assert b.service_id is not None
        assert b.price is not None
        after = price_after(b.price, r.discount)
        if isinstance(after, Refused):
            raise _Refusal(after)
        record_id = r.record.record_id
        self.ledger.take(record_id, b.service_id)
        held = Held(record_id, b.service_id, b.price, after)
        self.actions.append(Redeemed(held))
        self.events.append(
            PackageApplied.model_construct(
                booking_id=b.booking_id,
                client_id=b.client_id,
                package_record_id=record_id,
                service_id=b.service_id,
                price_before=b.price,
                price_after=after,
                sessions_remaining=self.ledger.remaining(record_id, b.service_id),
            )
        )
        return held
