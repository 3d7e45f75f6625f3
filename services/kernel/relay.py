"""Publishes the outbox in order with an idempotent producer and marks rows sent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kernel import metrics, tracing
from services.kernel.db import is_transient
from services.kernel.tables import KernelTables

log = logging.getLogger(__name__)
_PARTITIONER = DefaultPartitioner()


class Relay:
    """One relay per process; an advisory lock lets one of a service's relays publish at a time.

    The relay that takes the lock keeps it, on a connection of its own in autocommit, until it
    stops or the connection fails: a round is then its select and its mark, with no
    transaction, lock or commit of its own around them. The server frees the lock when that
    connection's session ends, however the process ends.
    """

    def __init__(
        self,
        service: str,
        engine: AsyncEngine,
        tables: KernelTables,
        producer: Any,
        *,
        batch: int = 1000,
        poll_interval_s: float = 0.5,
        after_publish: Callable[[], None] = lambda: None,
    ) -> None:
        self.service = service
        self._engine = engine
        self._producer = producer
        self._batch = batch
        self._poll_interval_s = poll_interval_s
        self._after_publish = after_publish
        self._wake = asyncio.Event()
        self._stopping = False
        self._holder: AsyncConnection | None = None
        self._next_try = 0.0
        self._committed = False
        schema = tables.outbox.schema
        self._channel = f"{schema}_outbox"
        self._notify = text(f"NOTIFY {self._channel}")
        self._lock_key = zlib.crc32(f"outbox:{schema}".encode())
        mark = (
            f"UPDATE {schema}.outbox SET sent_at = now() WHERE id = ANY(CAST(:acked AS bigint[]))"
        )
        self._mark = text(mark)
        # The rows the last round had acknowledged are marked as the next round is selected,
        # one round trip; the select still sees them unsent, so it leaves them out by id, as
        # it does the rows still in flight.
        self._mark_and_select = text(
            f"WITH marked AS ({mark})"
            f" SELECT id, topic, key, payload, traceparent, tracestate FROM {schema}.outbox"
            # NOT IN a subquery is hashed: the skipped ids are the lowest unsent ones, which
            # the scan meets first.
            " WHERE sent_at IS NULL AND id NOT IN (SELECT unnest(CAST(:skip AS bigint[])))"
            " ORDER BY id LIMIT :limit"
        )

    def stop(self) -> None:
        """Finish the round under way and what is left, then end `run()`."""
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        """Something was committed: publish it now rather than at the next poll."""
        self._committed = True
        self._wake.set()

    def _notified(self, *_: object) -> None:
        """Another process's relay says its process committed rows to publish."""
        self._wake.set()

    async def _tell_holder(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(self._notify)

    async def run(self) -> None:
        """Relay until `stop()`: what is committed by then is published first."""
        try:
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval_s)
                self._wake.clear()
                try:
                    await self.drain()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a relay must outlive any failure
                    level = logging.WARNING if is_transient(exc) else logging.ERROR
                    log.log(level, "outbox relay failed, will retry: %r", exc)
                    await asyncio.sleep(self._poll_interval_s)
            # A commit may have woken it during its last round: what is committed by now goes.
            await self.drain()
        finally:
            await self.close()

    async def drain(self) -> int:
        """Publish unsent rows until a round comes back short; return how many were sent.

        Rounds overlap: while one round's rows wait for the broker's acknowledgement, the
        next round is selected and the rounds acknowledged before it are marked sent. A round
        is sent only once the one before it is acknowledged, so rows of a key never overtake
        each other, even when a send fails.
        """
        conn = await self._lock_held()
        if conn is None:
            # Another process's relay holds the outbox: it publishes what this one committed.
            if self._committed:
                await self._tell_holder()
                self._committed = False
            return 0
        sent = 0
        acked: list[int] = []  # acknowledged, not yet marked sent
        in_flight: list[int] = []
        futures: list[asyncio.Future[Any]] = []
        more = True
        try:
            while True:
                rows: Sequence[Any] = []
                if more:
                    rows = (
                        await conn.execute(
                            self._mark_and_select,
                            {"acked": acked, "skip": acked + in_flight, "limit": self._batch},
                        )
                    ).all()
                    acked = []
                if in_flight:
                    await asyncio.gather(*futures)
                    self._after_publish()
                    metrics.PUBLISHED.labels(self.service).inc(len(in_flight))
                    sent += len(in_flight)
                    acked, in_flight, futures = acked + in_flight, [], []
                if not rows:
                    break
                in_flight = [r[0] for r in rows]
                await self._send(rows, futures)
                # A short round found all there was: what commits later wakes the relay again.
                more = len(rows) >= self._batch
            await self._mark_sent(conn, acked)
        except Exception:
            # What the producer was given finishes before another relay may take the lock and
            # publish newer rows of the same keys; the lock goes with the connection.
            await asyncio.gather(*futures, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._mark_sent(conn, acked)  # else they go again: duplicates, in order
            await self.close()
            raise
        except BaseException:
            await self.close()
            raise
        return sent

    async def _mark_sent(self, conn: AsyncConnection, acked: list[int]) -> None:
        if acked:
            await conn.execute(self._mark, {"acked": acked})

    async def close(self) -> None:
        """Let the lock go: the connection's session ends, it never returns to the pool."""
        holder, self._holder = self._holder, None
        metrics.RELAY_HOLDER.labels(self.service).set(0)
        if holder is not None:
            with contextlib.suppress(Exception):
                await holder.invalidate()
            with contextlib.suppress(Exception):
                await holder.close()

    async def _lock_held(self) -> AsyncConnection | None:
        """This relay's connection holding the outbox's lock; None while another holds it."""
        if self._holder is not None:
            return self._holder
        if time.monotonic() < self._next_try:
            return None
        # Should the holder stop, the lock is free: look once per poll, not at every commit.
        self._next_try = time.monotonic() + self._poll_interval_s
        conn = await self._engine.connect()
        try:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            locked = await conn.scalar(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": self._lock_key}
            )
            if locked:
                # The other processes' relays say here when their processes commit.
                raw = await conn.get_raw_connection()
                await raw.driver_connection.add_listener(  # type: ignore[union-attr]
                    self._channel, self._notified
                )
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            await conn.close()
            raise
        if not locked:
            await conn.close()
            return None
        self._holder, self._next_try = conn, 0.0
        metrics.RELAY_HOLDER.labels(self.service).set(1)
        return conn

    async def _send(self, rows: Sequence[Any], futures: list[asyncio.Future[Any]]) -> None:
        """Send rows in order, a batch per partition: far cheaper than a `send` per message.

        Partitions are chosen as `send` would (murmur2 of the key), so a key keeps its
        partition; within a partition, rows keep their outbox order. Each batch's delivery
        future joins `futures` as soon as the producer has it.
        """
        producer = self._producer
        batches: dict[tuple[str, int], Any] = {}
        partitions: dict[str, list[int]] = {}
        for _id, topic, key, payload, traceparent, tracestate in rows:
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            key_bytes = key.encode() if key is not None else None
            tp = (topic, _PARTITIONER(key_bytes, partitions[topic], partitions[topic]))
            batch = batches.get(tp)
            if batch is None:
                batch = batches[tp] = producer.create_batch()
            message = {
                "key": key_bytes,
                "value": bytes(payload),
                "timestamp": None,
                "headers": tracing.headers_of(traceparent, tracestate),
            }
            if batch.append(**message) is None:
                futures.append(await producer.send_batch(batch, tp[0], partition=tp[1]))
                batch = batches[tp] = producer.create_batch()
                if batch.append(**message) is None:
                    raise ValueError(f"an outbox row of {len(payload)} bytes fits in no batch")
        for (topic, partition), batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
