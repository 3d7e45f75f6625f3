"""The same events, in order, through the real handlers on a clean database: the reference."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from services.bootstrap import migrate
from services.catalog.handlers import Catalog
from services.catalog.tables import kernel as catalog_tables
from services.invoicing.handlers import Invoicing
from services.invoicing.tables import kernel as invoicing_tables
from services.kernel.db import make_engine
from services.kernel.kernel import Kernel, Poison
from services.kernel.settings import Settings
from services.redemption.handlers import BOOKING_LOCKS
from services.redemption.handlers import handle_batch as redeem
from services.redemption.tables import kernel as redemption_tables

log = logging.getLogger(__name__)
OWNER = {
    "business.plan_changed": "catalog",
    "package.created": "catalog",
    "invoice.published": "invoicing",
}


class _Refuse:
    async def park(self, poison: Sequence[Poison]) -> None:
        raise AssertionError(f"the in-order replay dead-lettered {poison}")


@dataclass
class _Record:
    topic: str
    value: bytes | None
    offset: int
    partition: int = 0
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()


async def replay_in_order(url: str, events: list[dict[str, Any]], business: str) -> dict[str, int]:
    """Sessions used per client after `events` one by one, in order, on a fresh database."""
    name = f"replay_{uuid.uuid4().hex[:8]}"
    admin = make_engine(Settings(database_url=url), pool_size=1)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    fresh = make_url(url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, fresh)  # alembic runs its own event loop
    engine = make_engine(Settings(database_url=fresh), pool_size=2)
    try:
        kernels = {
            "catalog": Kernel(
                "catalog", engine, catalog_tables, Catalog(0).handle_batch, _Refuse()
            ),
            "invoicing": Kernel(
                "invoicing", engine, invoicing_tables, Invoicing(0).handle_batch, _Refuse()
            ),
            "redemption": Kernel(
                "redemption",
                engine,
                redemption_tables,
                redeem,
                _Refuse(),
                locks=BOOKING_LOCKS,
            ),
        }
        for offset, event in enumerate(events):
            owner = OWNER.get(event["event_type"], "redemption")
            await kernels[owner].handle([_Record(event["event_type"], orjson.dumps(event), offset)])
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT p.client_id, s.sessions_used FROM records.package_record p"
                        " JOIN records.record_service s USING (record_id) WHERE p.business_id = :b"
                    ),
                    {"b": business},
                )
            ).all()
        return {r[0]: r[1] for r in rows}
    finally:
        await engine.dispose()
        try:
            async with admin.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        except DBAPIError as exc:  # a leftover scratch database is no failure of the scenario
            log.warning("could not drop %s: %s", name, exc)
        await admin.dispose()
