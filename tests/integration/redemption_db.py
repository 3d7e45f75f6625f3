"""A real PostgreSQL of the redemption tests' own, with every service's schema.

Loaded with `pytest_plugins` so the server starts once however many modules use it; the
schemas come from `metadata.create_all` until the migrations cover them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from deploy.postgres_local import LocalPostgres, start_postgres
from services.catalog.tables import metadata as catalog_metadata
from services.invoicing.tables import metadata as invoicing_metadata
from services.records.tables import metadata as records_metadata
from services.redemption.tables import metadata as redemption_metadata

METADATA = (catalog_metadata, records_metadata, redemption_metadata, invoicing_metadata)


@pytest.fixture(scope="session")
def redemption_pg(workdir: Path) -> Iterator[LocalPostgres]:
    """A real PostgreSQL of our own in this run's directory, stopped at the end of the run."""
    server = start_postgres(workdir / "redemption-pg")
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def redemption_engine(redemption_pg: LocalPostgres) -> AsyncIterator[AsyncEngine]:
    """An engine on a database with every service's schema, made fresh for the run."""
    eng = create_async_engine(redemption_pg.url, pool_size=4)
    async with eng.begin() as conn:
        for md in METADATA:
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {md.schema} CASCADE"))
            await conn.execute(text(f"CREATE SCHEMA {md.schema}"))
            await conn.run_sync(md.create_all)
    yield eng
    await eng.dispose()
