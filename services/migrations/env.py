"""Alembic environment: every service's schema, migrated with the asyncpg engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.catalog.tables import metadata as catalog
from services.invoicing.tables import metadata as invoicing
from services.kernel.db import make_engine
from services.kernel.settings import Settings
from services.records.tables import metadata as records
from services.redemption.tables import metadata as redemption

target_metadata = [catalog, records, invoicing, redemption]
SCHEMAS = [m.schema for m in target_metadata]


def _run(connection: Connection) -> None:
    for schema in SCHEMAS:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_schemas=True,
        # Only the services' schemas are ours; anything else in the database is left alone.
        include_name=lambda name, kind, _parent: kind != "schema" or name in SCHEMAS,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    url = context.config.attributes.get("database_url")
    settings = Settings(database_url=url) if url else Settings()
    engine = make_engine(settings, pool_size=1)
    async with engine.begin() as conn:
        # Two processes migrating at once take turns.
        await conn.execute(text("SELECT pg_advisory_xact_lock(7300)"))
        await conn.run_sync(_run)
    await engine.dispose()


asyncio.run(_main())
