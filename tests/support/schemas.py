"""Test schemas made afresh on the real PostgreSQL."""

from __future__ import annotations

from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine


async def recreate(engine: AsyncEngine, metadata: MetaData) -> AsyncEngine:
    """Drop `metadata`'s schema with all it holds and create it again, empty."""
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA IF EXISTS {metadata.schema} CASCADE"))
        await conn.execute(text(f"CREATE SCHEMA {metadata.schema}"))
        await conn.run_sync(metadata.create_all)
    return engine
