"""The database engine and how to tell a passing failure from a real one."""

from __future__ import annotations

import ssl

import orjson
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.kernel.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLSTATE classes that say "try again": connection lost, server shutting down or starting,
# too many connections, serialization failure, deadlock, lock not available.
_TRANSIENT_SQLSTATES = ("08", "57P", "53300", "40001", "40P01", "55P03")


def metadata(schema: str) -> MetaData:
    """The metadata of one service's schema, with named constraints."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def make_engine(
    settings: Settings, pool_size: int | None = None, *, pre_ping: bool = True
) -> AsyncEngine:
    """An asyncpg-backed engine; prepared statements are cached per connection.

    `pre_ping` tests each connection as it leaves the pool, a round trip each time. Callers
    that retry work which meets a dropped connection (`is_transient`) can do without it.
    """
    connect_args: dict[str, object] = {"server_settings": {"application_name": "packages"}}
    if settings.database_ssl == "verify-full" and settings.database_ssl_rootcert:
        # The server's certificate must chain to this CA and name the host: verify-full.
        connect_args["ssl"] = ssl.create_default_context(cafile=settings.database_ssl_rootcert)
    elif settings.database_ssl != "disable":
        connect_args["ssl"] = settings.database_ssl
    return create_async_engine(
        settings.database_url.get_secret_value(),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=2,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args=connect_args,
        # JSONB columns are read on the hot path: orjson is several times faster than json.
        json_serializer=lambda value: orjson.dumps(value).decode(),
        json_deserializer=orjson.loads,
    )


def is_transient(exc: BaseException) -> bool:
    """True where the same work may well succeed if tried again."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError | OSError):
            return True
        if getattr(current, "connection_invalidated", False):
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATES):
            return True
        if type(current).__name__ == "ConnectionDoesNotExistError" or "connection is closed" in str(
            current
        ):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False
