"""Rules of records: terms copied at creation, status, expiry, edits and balances."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from contracts.inbound import PackageDefined, ValidForDays, ValidUntil
from contracts.outbound import RecordStatus

RECORD_NAMESPACE = uuid.UUID("7b0c1f8e-3a55-4c53-9d0e-5f2b7a1c9e40")
LIVE = ("active", "exhausted")


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

    def balance(self, service_id: str) -> Balance | None:
        """The balance of one service, if the record covers it."""
        return next((b for b in self.balances if b.service_id == service_id), None)

    def expired_on(self, today: date) -> bool:
        """Rule 8: a record expires at the end of its last valid day."""
        return self.expires_on is not None and today > self.expires_on

    def serves_on(self, day: date) -> bool:
        """A record serves appointments on the days it is valid: not cancelled, not after its
        last valid day (an appointment entered after the fact still counts)."""
        return self.status != "cancelled" and not self.expired_on(day)

    def live_on(self, today: date) -> bool:
        """Neither cancelled nor expired today: a session may still come back to it."""
        return self.status in LIVE and not self.expired_on(today)


def settle_status(record: Record) -> RecordStatus:
    """Active or exhausted from the balances; cancelled and expired stay as they are."""
    return status_for(record.status, record.balances)


def status_for(status: RecordStatus, balances: Sequence[Balance]) -> RecordStatus:
    """A live status follows the balances: exhausted when no session of any service is left."""
    if status not in LIVE:
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


def edit(
    record: Record,
    *,
    expires: date | object | None,
    totals: dict[str, int | None] | None,
    status: str | None,
    keep: object,
    today: date,
) -> Record | EditRefused:
    """Rule 7: change expiry and totals (never below used), or cancel; no reactivation."""
    if record.status == "cancelled" and status == "active":
        return EditRefused("record_cancelled", "a cancelled record cannot be reactivated")
    if record.status == "cancelled" and (totals or expires is not keep):
        return EditRefused("record_cancelled", "a cancelled record cannot be edited")
    balances = list(record.balances)
    for service_id, total in (totals or {}).items():
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
    updated = replace(record, balances=tuple(balances))
    if expires is not keep:
        updated = replace(updated, expires_on=expires, expiry_by_hand=True)  # type: ignore[arg-type]
    if status == "cancelled":
        return replace(updated, status="cancelled")
    if updated.status == "expired" and not updated.expired_on(today):
        # A new expiry in the future brings an expired record back; cancelled ones never.
        updated = replace(updated, status="active")
    return replace(updated, status=settle_status(updated))
