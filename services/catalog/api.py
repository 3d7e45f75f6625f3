"""What other services may ask the catalog."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Date, cast, exists, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.inbound import PackageDefined
from services.catalog.tables import business_settings, package


@dataclass(frozen=True, slots=True)
class Package:
    """A package as the catalog knows it."""

    terms: PackageDefined
    active: bool


@dataclass(frozen=True, slots=True)
class BusinessSettings:
    """A business's time zone (its days), no-show and late-cancellation policy, notice lead."""

    time_zone: tzinfo = UTC
    no_show: str = "restore"
    late_cancel_hours: int | None = None
    expiring_soon_days: int = 7

    def today(self, now: datetime) -> date:
        """The business's day at `now`."""
        return day_of(now, self.time_zone)


DEFAULT_SETTINGS = BusinessSettings()


async def settings_of(
    conn: AsyncConnection, business_ids: Iterable[str]
) -> dict[str, BusinessSettings]:
    """Each business's settings, the defaults for one that never sent any, in one statement."""
    wanted = sorted(set(business_ids))
    found = {
        r.business_id: BusinessSettings(
            _zone(r.time_zone), r.no_show, r.late_cancel_hours, r.expiring_soon_days
        )
        for r in await conn.execute(
            select(business_settings).where(business_settings.c.business_id.in_(wanted))
        )
    }
    return {b: found.get(b, DEFAULT_SETTINGS) for b in wanted}


def business_today(business_id: Any, now: Any) -> ColumnElement[Any]:
    """For another service's query: the business's day at `now`, in its time zone."""
    zone = (
        select(business_settings.c.time_zone)
        .where(business_settings.c.business_id == business_id)
        .scalar_subquery()
    )
    return cast(func.timezone(func.coalesce(zone, "UTC"), now), Date)


def expiring_soon_days(business_id: Any) -> ColumnElement[int]:
    """For another service's query: the business's notice lead time, in days."""
    lead = (
        select(business_settings.c.expiring_soon_days)
        .where(business_settings.c.business_id == business_id)
        .scalar_subquery()
    )
    return func.coalesce(lead, DEFAULT_SETTINGS.expiring_soon_days)


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> tzinfo:
    return ZoneInfo(name)


def day_of(instant: datetime, zone: tzinfo) -> date:
    """The day an instant falls on in a time zone."""
    return instant.astimezone(zone).date()


def package_known(business_id: Any, package_id: Any) -> ColumnElement[bool]:
    """A condition, for another service's query, that the package these columns name has been
    defined (its terms are known)."""
    return (
        exists()
        .where(
            package.c.business_id == business_id,
            package.c.package_id == package_id,
            package.c.terms.isnot(None),
        )
        .correlate_except(package)
    )


async def find_package(conn: AsyncConnection, business_id: str, package_id: str) -> Package | None:
    """The business's package, or None where this business has no such package (yet)."""
    return (await find_packages(conn, {(business_id, package_id)})).get((business_id, package_id))


async def find_packages(
    conn: AsyncConnection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Package]:
    """The packages known of these (business, package) pairs, in one statement.

    Each stays as read until the caller's transaction ends: a package edit waits for the
    records sold from these terms to commit, and then reaches them too.
    """
    pairs = sorted(set(keys))
    if not pairs:
        return {}
    wanted = tuple_(package.c.business_id, package.c.package_id).in_(pairs)
    rows = await conn.execute(
        select(package.c.business_id, package.c.package_id, package.c.terms, package.c.status)
        .where(wanted)
        .order_by(package.c.business_id, package.c.package_id)
        .with_for_update(key_share=True, read=True)
    )
    return {
        (r.business_id, r.package_id): Package(
            PackageDefined.model_validate(r.terms), r.status == "active"
        )
        for r in rows
        if r.terms is not None
    }
