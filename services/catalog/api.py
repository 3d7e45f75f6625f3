"""What other services may ask the catalog."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
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
    row = (
        await conn.execute(
            select(package.c.terms, package.c.status).where(
                package.c.business_id == business_id, package.c.package_id == package_id
            )
        )
    ).first()
    if row is None or row.terms is None:
        return None
    return Package(PackageDefined.model_validate(row.terms), row.status == "active")
