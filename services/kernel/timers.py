"""Periodic work of a service (expiry, waiting events), one process at a time, via the outbox."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from services.kernel.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from services.kernel.service import Service

log = logging.getLogger(__name__)

Work = Callable[[UnitOfWork], Awaitable[int]]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


async def run_once(service: Service, name: str, work: Work, now: datetime) -> int:
    """One round of `work` in its own transaction; another process holding the lock skips it."""
    if service.engine is None or service.kernel is None or service.relay is None:
        raise RuntimeError("the service has not started")
    async with service.engine.begin() as conn:
        lock_key = zlib.crc32(f"{service.name}:{name}".encode())
        if not await conn.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key}):
            return 0
        uow = UnitOfWork(conn, service.name, now=now)
        done = await work(uow)
        await service.kernel.write_outbox(uow)
    if done:
        service.relay.wake()
    return done


def periodic(
    name: str, work: Work, clock: Clock = utc_now
) -> Callable[[Service], Coroutine[Any, Any, None]]:
    """A timer that runs `work` every `sweep_interval_s` until it finds nothing left to do."""

    async def run(service: Service) -> None:
        while True:
            try:
                while await run_once(service, name, work, clock()):
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; will try again", name)
            await asyncio.sleep(service.settings.sweep_interval_s)

    return run
