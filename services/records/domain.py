"""Rules of records: terms copied at creation, status, expiry, edits and balances."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from contracts.inbound import PackageDefined, ValidForDays, ValidUntil
from contracts.outbound import RecordStatus

RECORD_NAMESPACE = uuid.UUID("7b0c1f8e-3a55-4c53-9d0e-5f2b7a1c9e40")
SETTLED = ("active", "exhausted")  # what the balances say, when not frozen
LIVE = (*SETTLED, "frozen")


def record_id(business_id: str, *origin: str | int) -> str:
    """A stable id: the same origin (invoice line unit, assignment) always names the same record."""
    return str(uuid.uuid5(RECORD_NAMESPACE, "/".join(map(str, (business_id, *origin)))))


def expires_on(package: PackageDefined, created_on: date) -> date | None:
    """Validity to the last valid day: creation + days, the until date, or never."""
    v = package.validity
    if isinstance(v, ValidForDays):
        return created_on + timedelta(days=v.days)
    if isinstance(v, ValidUntil):
        return v.date
    return None


@dataclass(frozen=True, slots=True)
class Balance:
    """One service of a record."""

    service_id: str
    total: int | None
    used: int = 0

    @property
    def remaining(self) -> int | None:
        """Sessions left; None for unlimited."""
        return None if self.total is None else max(self.total - self.used, 0)


@dataclass(frozen=True, slots=True)
class Record:
    """A package record and its balances, as the rules see it."""

    record_id: str
    business_id: str
    client_id: str
    package_id: str
    status: RecordStatus
    paid: bool
    expires_on: date | None
    created_on: date
    balances: tuple[Balance, ...] = field(default=())
    expiry_by_hand: bool = False
    frozen_from: date | None = None
    frozen_until: date | None = None

    def balance(self, service_id: str) -> Balance | None:
        """The balance of one service, if the record covers it."""
        return next((b for b in self.balances if b.service_id == service_id), None)

    def expired_on(self, today: date) -> bool:
        """Rule 8: a record expires at the end of its last valid day."""
        return self.expires_on is not None and today > self.expires_on

    def serves_on(self, day: date) -> bool:
        """A record serves appointments on the days it is valid: not cancelled, not after its
        last valid day (an appointment entered after the fact still counts), not frozen."""
        return self.status != "cancelled" and not self.expired_on(day) and not self.frozen_on(day)

    def frozen_on(self, day: date) -> bool:
        """Whether the day falls in the record's freeze."""
        return (
            self.frozen_from is not None
            and self.frozen_until is not None
            and self.frozen_from <= day <= self.frozen_until
        )

    def live_on(self, today: date) -> bool:
        """Neither cancelled nor expired today: a session may still come back to it."""
        return self.status in LIVE and not self.expired_on(today)


def settle_status(record: Record) -> RecordStatus:
    """Active or exhausted from the balances; frozen, cancelled and expired stay as they are."""
    return status_for(record.status, record.balances)


def status_for(status: RecordStatus, balances: Sequence[Balance]) -> RecordStatus:
    """A settled status follows the balances: exhausted when no session of any service is
    left; frozen, cancelled and expired stay as they are."""
    if status not in SETTLED:
        return status
    limited = [b for b in balances if b.total is not None]
    if balances and len(limited) == len(balances) and all(b.remaining == 0 for b in limited):
        return "exhausted"
    return "active"


def with_terms(record: Record, package: PackageDefined) -> Record:
    """Rule 3: new terms; used sessions stay used and no balance goes below zero.

    A new validity counts from the record's own creation day, unless the business set the
    record's expiry by hand.
    """
    old = {b.service_id: b for b in record.balances}
    balances = []
    for s in package.services:
        used = old[s.service_id].used if s.service_id in old else 0
        total = None if s.sessions is None else max(s.sessions, used)
        balances.append(Balance(s.service_id, total, used))
    new_ids = {s.service_id for s in package.services}
    # A service taken out of the package keeps what was used of it, with nothing left.
    balances += [
        Balance(b.service_id, b.used, b.used)
        for b in record.balances
        if b.service_id not in new_ids and b.used > 0
    ]
    updated = replace(record, balances=tuple(balances))
    if not record.expiry_by_hand:
        updated = replace(updated, expires_on=expires_on(package, record.created_on))
    return replace(updated, status=settle_status(updated))


@dataclass(frozen=True, slots=True)
class EditRefused:
    """An edit a rule refuses."""

    reason: str
    detail: str


ASSIGNERS = frozenset({"owner", "staff", "system"})
EDITORS = frozenset({"owner", "staff"})


def permitted(role: str | None, allowed: frozenset[str]) -> EditRefused | None:
    """Who may do what: business users assign and edit records, clients never."""
    if role in allowed:
        return None
    return EditRefused("not_permitted", f"a {role or 'missing'} actor may not do this")


_ABSENT = object()


def _with_totals(record: Record, totals: dict[str, int | None]) -> list[Balance] | EditRefused:
    """New session totals, never below what was used."""
    balances = list(record.balances)
    for service_id, total in totals.items():
        current = record.balance(service_id)
        if current is None:
            return EditRefused(
                "service_not_in_record", f"sessions: {service_id} is not in the record"
            )
        if total is not None and (total < current.used or total < 0):
            return EditRefused(
                "sessions_below_used",
                f"sessions: {service_id} total {total} is below the {current.used} already used",
            )
        balances = [replace(b, total=total) if b.service_id == service_id else b for b in balances]
    return balances


def freeze(record: Record, until: date | None, today: date) -> Record | EditRefused:
    """Frozen from today through `until`; None unfreezes now. The expiry moves by the days
    the record was frozen once the freeze ends (`thaw`)."""
    if until is None:
        return thaw(record, today) if record.frozen_from is not None else record
    if until < today:
        return EditRefused("invalid_freeze", f"frozen_until: {until} is before today ({today})")
    if record.status not in LIVE:
        return EditRefused("record_not_live", f"a {record.status} record cannot be frozen")
    start = record.frozen_from or today
    return replace(record, frozen_from=start, frozen_until=until, status="frozen")


def thaw(record: Record, today: date) -> Record:
    """The freeze ends today (the day after its last day, or earlier when lifted): the expiry
    moves by the days it lasted, unless the record never expires."""
    if record.frozen_from is None:
        return record
    last = min(record.frozen_until or today, today - timedelta(days=1))
    days = max((last - record.frozen_from).days + 1, 0)
    expires = record.expires_on and record.expires_on + timedelta(days=days)
    status: RecordStatus = "active" if record.status == "frozen" else record.status
    thawed = replace(record, frozen_from=None, frozen_until=None, expires_on=expires, status=status)
    return replace(thawed, status=settle_status(thawed))


def edit(
    record: Record,
    *,
    expires: date | object | None,
    totals: dict[str, int | None] | None,
    status: str | None,
    keep: object,
    today: date,
    frozen_until: date | object | None = _ABSENT,
) -> Record | EditRefused:
    """Rule 7: change expiry and totals (never below used), freeze or unfreeze, or cancel; no
    reactivation. `keep` stands for a field the request leaves as it is."""
    if frozen_until is _ABSENT:
        frozen_until = keep
    if record.status == "cancelled" and status == "active":
        return EditRefused("record_cancelled", "a cancelled record cannot be reactivated")
    if record.status == "cancelled" and (totals or expires is not keep or frozen_until is not keep):
        return EditRefused("record_cancelled", "a cancelled record cannot be edited")
    balances = _with_totals(record, totals or {})
    if isinstance(balances, EditRefused):
        return balances
    updated = replace(record, balances=tuple(balances))
    if expires is not keep:
        updated = replace(updated, expires_on=expires, expiry_by_hand=True)  # type: ignore[arg-type]
    if status == "cancelled":
        return replace(updated, status="cancelled", frozen_from=None, frozen_until=None)
    if updated.status == "expired" and not updated.expired_on(today):
        # A new expiry in the future brings an expired record back; cancelled ones never.
        updated = replace(updated, status="active")
    updated = replace(updated, status=settle_status(updated))
    if frozen_until is keep:
        return updated
    return freeze(updated, frozen_until, today)  # type: ignore[arg-type]
