"""The catalog's rules: who may manage packages, what a valid package is, which version wins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from contracts.base import Actor
from contracts.inbound import AmountDiscount, PackageDefined, ValidForDays

ENTITLED_PLANS = frozenset({"pro", "enterprise"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """A rule refused the message."""

    reason: str
    detail: str


def plan_at(changes: Sequence[tuple[datetime, str]], at: datetime) -> str | None:
    """The plan in force at `at`: the last change at or before it.

    Before the first change known, the first: an event that had arrived before that plan would
    have waited for it and been judged by it, and the order of arrival must not matter.
    """
    before = [plan for changed_at, plan in changes if changed_at <= at]
    if before:
        return before[-1]
    return changes[0][1] if changes else None


def may_manage(plan: str | None, actor: Actor | None) -> Refusal | None:
    """Rule 1: package management is for the owner of a Pro (or higher) business."""
    if plan not in ENTITLED_PLANS:
        return Refusal("not_entitled", f"plan {plan or 'unknown'} does not include packages")
    if actor is None or actor.role != "owner":
        return Refusal("not_owner", "only the business owner manages packages")
    return None


MAX_SESSIONS = 100_000


SETTERS = frozenset({"owner", "system"})


def may_set(actor: Actor | None) -> Refusal | None:
    """Business settings are the owner's (or the platform's, as `system`)."""
    if actor is None or actor.role not in SETTERS:
        return Refusal("not_permitted", "only the owner (or the platform) sets business settings")
    return None


def validate(package: PackageDefined) -> Refusal | None:
    """Rule 2: the checks the schema cannot make, each naming its field.

    What the contract's schema says (sessions at least 1, a percent within 0..100, amounts
    never negative, an until validity's date) is bad input, refused before any rule runs.
    """
    if not package.services:
        return Refusal("invalid_package", "services: at least one service is required")
    ids = [s.service_id for s in package.services]
    if len(set(ids)) != len(ids):
        return Refusal("invalid_package", "services: service ids must be unique")
    for i, s in enumerate(package.services):
        if s.sessions is not None and s.sessions > MAX_SESSIONS:
            return Refusal(
                "invalid_package", f"services[{i}].sessions: must be at most {MAX_SESSIONS}"
            )
    return _validate_discount(package) or _validate_validity(package)


def _validate_discount(package: PackageDefined) -> Refusal | None:
    d = package.discount
    if isinstance(d, AmountDiscount) and d.value.currency != package.price.currency:
        return Refusal("invalid_package", "discount.value.currency: must be the package's currency")
    return None


def _validate_validity(package: PackageDefined) -> Refusal | None:
    v = package.validity
    if isinstance(v, ValidForDays) and not 1 <= v.days <= 36_500:
        return Refusal("invalid_package", "validity.days: must be at least 1")
    return None


def is_stale(incoming_version: int, applied_version: int | None) -> bool:
    """A version at or below the applied one changes nothing; gaps are fine."""
    return applied_version is not None and incoming_version <= applied_version
