"""Bounded storage: sent outbox rows and old inbox rows are deleted past their retention.

Small batches, each its own short transaction, off the hot path: sent outbox rows are taken
from the front of the outbox (its oldest ids), which no relay reads; inbox rows by `handled_at`
(a BRIN index finds them). One process of a service prunes at a time.
"""

from __future__ import annotations

import asyncio
import logging
import zlib

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel import metrics
from services.kernel.settings import Settings
from services.kernel.tables import KernelTables

log = logging.getLogger(__name__)


class Pruner:
    """Deletes what a service no longer needs to keep."""

    def __init__(
        self, service: str, engine: AsyncEngine, tables: KernelTables, settings: Settings
    ) -> None:
        self.service = service
        self._engine = engine
        self._settings = settings
        self._lock_key = zlib.crc32(f"{service}:prune".encode())
        outbox, inbox = f"{tables.outbox.schema}.outbox", f"{tables.inbox.schema}.inbox"
        self._outbox = text(
            f"WITH front AS (SELECT id FROM {outbox} ORDER BY id LIMIT :n)"
            f" DELETE FROM {outbox} o USING front WHERE o.id = front.id"
            " AND o.sent_at < now() - make_interval(secs => :keep)"
        )
        self._inbox = text(
            f"DELETE FROM {inbox} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {inbox} WHERE handled_at < now() - make_interval(secs => :keep)"
            " LIMIT :n))"
        )

    async def prune(self) -> dict[str, int]:
        """Delete everything past its retention, a batch at a time; how many rows of each."""
        s = self._settings
        done = {"outbox": 0, "inbox": 0}
        for table, statement, keep in (
            ("outbox", self._outbox, s.outbox_retention_s),
            ("inbox", self._inbox, s.inbox_retention_s),
        ):
            while deleted := await self._delete(statement, keep):
                done[table] += deleted
                metrics.PRUNED.labels(self.service, table).inc(deleted)
                await asyncio.sleep(0.01)  # let the batches' transactions in between
        return done

    async def _delete(self, statement: TextClause, keep: float) -> int:
        async with self._engine.begin() as conn:
            lock = text("SELECT pg_try_advisory_xact_lock(:k)")
            if not await conn.scalar(lock, {"k": self._lock_key}):
                return 0  # another process of the service prunes
            result = await conn.execute(statement, {"n": self._settings.prune_batch, "keep": keep})
            return int(result.rowcount)

    async def run(self) -> None:
        """Prune every `prune_interval_s` until cancelled."""
        while True:
            try:
                done = await self.prune()
                if any(done.values()):
                    log.info("pruned %d outbox and %d inbox rows", done["outbox"], done["inbox"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - pruning waits for its next turn
                log.warning("pruning failed, will try again: %r", exc)
            await asyncio.sleep(self._settings.prune_interval_s)
