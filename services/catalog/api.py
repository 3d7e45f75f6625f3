"""What other services may ask the catalog."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.inbound import PackageDefined
from services.catalog.tables import package


@dataclass(frozen=True, slots=True)
class Package:
    """A package as the catalog knows it."""

    terms: PackageDefined
    active: bool


async def find_package(conn: AsyncConnection, business_id: str, package_id: str) -> Package | None:
    """The business's package, or None where this business has no such package (yet)."""
    return (await find_packages(conn, {(business_id, package_id)})).get((business_id, package_id))


async def find_packages(
    conn: AsyncConnection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Package]:
    """The packages known of these (business, package) pairs, in one statement."""
    pairs = sorted(set(keys))
    if not pairs:
        return {}
    wanted = tuple_(package.c.business_id, package.c.package_id).in_(pairs)
    rows = await conn.execute(
        select(
            package.c.business_id, package.c.package_id, package.c.terms, package.c.status
        ).where(wanted)
    )
    return {
        (r.business_id, r.package_id): Package(
            PackageDefined.model_validate(r.terms), r.status == "active"
        )
        for r in rows
        if r.terms is not None
    }
