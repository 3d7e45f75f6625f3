"""Decode, deduplicate, apply and record a fetched batch in one transaction; park poison."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.base import Envelope
from contracts.codec import MalformedMessage, decode
from services.kernel import metrics
from services.kernel.db import is_transient
from services.kernel.rows import Columns, pack, unpack
from services.kernel.tables import KernelTables
from services.kernel.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)
_OUTBOX_COLUMNS = ("event_id", "topic", "key", "payload", "causation_id")
_INBOX_COLUMNS: Columns = (
    ("event_id", "uuid"),
    ("event_type", "text"),
    ("kafka_partition", "int"),
    ("kafka_offset", "bigint"),
    ("deliveries", "int"),
)
_OUTCOME_COLUMNS: Columns = (
    ("event_id", "uuid"),
    ("outcome", "text"),
    ("reason", "text"),
    ("detail", "text"),
)


class RawRecord(Protocol):
    """What the kernel reads of a Kafka record (aiokafka's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded inbound message and where it came from."""

    record: RawRecord
    envelope: Envelope[Any]


@dataclass(frozen=True, slots=True)
class Poison:
    """A message that could not be applied, and why."""

    record: RawRecord
    code: str
    error: str
    attempts: int


@dataclass(slots=True)
class Prepared:
    """A decoded batch waiting for its transaction."""

    started: float
    good: list[Message] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)

    def extend(self, more: Prepared) -> None:
        """Add records fetched after these, keeping fetch order."""
        self.good += more.good
        self.poison += more.poison


BatchHandler = Callable[[UnitOfWork, Sequence[Envelope[Any]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BatchLocks:
    """What two consumers of a service must not handle at once (a booking, say): a batch
    takes a transaction lock on each of its keys, in `space`, before its handler runs."""

    space: int
    keys: Callable[[Sequence[Envelope[Any]]], Iterable[str]]


# Transaction locks on a list of keys in one order (of their hashes), so that two
# transactions taking keys in this way cannot deadlock on them.
_LOCK_KEYS = (
    "SELECT count(pg_advisory_xact_lock(:space, k)) AS n FROM ("
    " SELECT DISTINCT hashtext(x) AS k"
    " FROM jsonb_array_elements_text(CAST(:keys AS jsonb)) AS x ORDER BY k) AS keys"
)


async def hold_locks(conn: AsyncConnection, space: int, keys: Iterable[str]) -> None:
    """Hold the transaction locks of `keys` in `space` (as `BatchLocks` are held) until the
    transaction ends."""
    wanted = list(keys)
    if wanted:
        await conn.execute(
            text(_LOCK_KEYS), {"space": space, "keys": orjson.dumps(wanted).decode()}
        )


class DeadLetters(Protocol):
    """Where poison goes."""

    async def park(self, poison: Sequence[Poison]) -> None:
        """Send each poison message to its topic's .dlq; return once they are acknowledged."""


class Kernel:
    """The message-handling kernel one consumer group runs on."""

    def __init__(
        self,
        service: str,
        engine: AsyncEngine,
        tables: KernelTables,
        handler: BatchHandler,
        dead_letters: DeadLetters,
        *,
        locks: BatchLocks | None = None,
        max_attempts: int = 3,
        max_backoff_s: float = 5.0,
        on_commit: Callable[[], None] = lambda: None,
        clock: Callable[[], Any] | None = None,
    ) -> None:
        """`locks`: what a batch holds alone while it is handled, if anything."""
        self.service = service
        self._engine = engine
        self._handler = handler
        self._dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._max_backoff_s = max_backoff_s
        self._on_commit = on_commit
        self._clock = clock
        self._locks = locks
        schema = tables.inbox.schema
        insert = (
            f"INSERT INTO {schema}.inbox"
            " (consumer, event_id, event_type, kafka_partition, kafka_offset, deliveries)"
            f" SELECT :consumer, v.* FROM ({unpack(_INBOX_COLUMNS)}) AS v"
        )
        ctes = ""
        if locks:
            # The locks come with the inbox, a round trip fewer. The handler's statements run
            # after it, so each reads what a batch that held a key before committed. Keys are
            # locked in one order, so two batches cannot deadlock on them.
            ctes = f"locked AS ({_LOCK_KEYS}), "
            insert += " WHERE (SELECT n FROM locked) >= 0"
        # A redelivery only counts itself: `xmax = 0` tells a fresh row from an updated one.
        # Only redeliveries come back, so a batch of new events (the usual one) returns no rows.
        self._insert_inbox = text(
            f"WITH {ctes}stored AS ({insert} ON CONFLICT (consumer, event_id)"
            f" DO UPDATE SET deliveries = {schema}.inbox.deliveries + EXCLUDED.deliveries"
            " RETURNING event_id, (xmax = 0) AS fresh)"
            " SELECT event_id FROM stored WHERE NOT fresh"
        )
        self._update_outcomes = text(
            f"UPDATE {schema}.inbox i"
            " SET outcome = v.outcome, reason = v.reason, detail = v.detail"
            f" FROM ({unpack(_OUTCOME_COLUMNS)}) AS v"
            " WHERE i.consumer = :consumer AND i.event_id = v.event_id"
        )
        self._schema = schema

    async def handle(self, records: Sequence[RawRecord]) -> None:
        """Handle one fetched batch; returns once every record is applied, skipped or parked."""
        await self.finish(self.prepare(records))

    def prepare(self, records: Sequence[RawRecord]) -> Prepared:
        """Decode and validate a batch: CPU only, so it may overlap another batch's transaction."""
        prepared = Prepared(time.perf_counter())
        for record in records:
            try:
                prepared.good.append(Message(record, decode(record.topic, record.value)))
            except MalformedMessage as exc:
                prepared.poison.append(Poison(record, exc.code, exc.detail, attempts=1))
        return prepared

    async def finish(self, prepared: Prepared) -> None:
        """Apply a prepared batch in one transaction and park its poison."""
        poison = prepared.poison
        if prepared.good:
            poison = poison + await self._apply_isolating_poison(prepared.good)
        if poison:
            for p in poison:
                metrics.DEAD_LETTERS.labels(self.service, p.record.topic, p.code).inc()
                log.warning(
                    "dead-lettering %s[%d]@%d: %s: %s",
                    p.record.topic,
                    p.record.partition,
                    p.record.offset,
                    p.code,
                    p.error,
                )
            await self._dead_letters.park(poison)
        metrics.BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - prepared.started)

    async def _apply_isolating_poison(self, batch: list[Message]) -> list[Poison]:
        """Apply the batch; if it fails for good, apply each half the same way, in order.

        A poison message among n good ones costs about 2 log2(n) transactions rather than n,
        and the good ones still apply in their order.
        """
        try:
            await self._apply_retrying_transient(batch)
        except Exception as exc:  # noqa: BLE001 - anything else is the batch's own fault
            if len(batch) == 1:
                return await self._retry_alone(batch[0], exc)
            log.info("batch of %d failed (%r); isolating the poison", len(batch), exc)
        else:
            return []
        middle = len(batch) // 2
        first = await self._apply_isolating_poison(batch[:middle])
        return first + await self._apply_isolating_poison(batch[middle:])

    async def _retry_alone(self, message: Message, first: Exception) -> list[Poison]:
        """Give one failing message its remaining attempts, then call it poison."""
        error: Exception = first
        for attempt in range(2, self._max_attempts + 1):
            await asyncio.sleep(min(0.05 * 2**attempt, self._max_backoff_s))
            try:
                await self._apply_retrying_transient([message])
            except Exception as exc:  # noqa: BLE001
                error = exc
            else:
                return []
        log.error(
            "giving up on %s after %d attempts",
            message.envelope.event_id,
            self._max_attempts,
            exc_info=error,
        )
        return [
            Poison(
                message.record,
                "handler_error",
                f"{type(error).__name__}: {error}",
                self._max_attempts,
            )
        ]

    async def _apply_retrying_transient(self, batch: list[Message]) -> None:
        """Apply; a passing failure (database away, deadlock) is retried with backoff, forever."""
        delay = 0.05
        while True:
            try:
                await self._apply(batch)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                metrics.RETRIES.labels(self.service).inc()
                log.warning("transient failure, retrying in %.2fs: %r", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)
            else:
                return

    async def _apply(self, batch: list[Message]) -> None:
        """The one transaction: inbox, the handler's change, outcomes, outbox."""
        unique: dict[uuid.UUID, Message] = {}
        copies: Counter[uuid.UUID] = Counter()
        for m in batch:
            unique.setdefault(m.envelope.event_id, m)
            copies[m.envelope.event_id] += 1
        async with self._engine.begin() as conn:
            result = await conn.execute(
                self._insert_inbox,
                {
                    **self._lock_params([m.envelope for m in unique.values()]),
                    "consumer": self.service,
                    "rows": pack(
                        [
                            (
                                i,
                                m.envelope.event_type,
                                m.record.partition,
                                m.record.offset,
                                copies[i],
                            )
                            for i, m in unique.items()
                        ]
                    ),
                },
            )
            seen = set(result.scalars())
            envelopes = [m.envelope for m in unique.values() if m.envelope.event_id not in seen]
            uow = UnitOfWork(conn, self.service, **({"now": self._clock()} if self._clock else {}))
            if envelopes:
                await self._handler(uow, envelopes)
            await self.write_outbox(uow)
        self._count(batch, envelopes, uow)
        if uow.outbox:
            self._on_commit()

    def _lock_params(self, envelopes: list[Envelope[Any]]) -> dict[str, Any]:
        if self._locks is None:
            return {}
        return {
            "space": self._locks.space,
            "keys": orjson.dumps(list(self._locks.keys(envelopes))).decode(),
        }

    async def write_outbox(self, uow: UnitOfWork) -> None:
        """Write the outcomes and outbound events a unit of work gathered."""
        if uow.outcomes:
            await uow.conn.execute(
                self._update_outcomes,
                {
                    "consumer": self.service,
                    "rows": pack(
                        [(i, o.outcome, o.reason, o.detail[:2000]) for i, o in uow.outcomes.items()]
                    ),
                },
            )
        if uow.outbox:
            # Binary COPY: the outbox is the largest write of a batch, and never conflicts.
            raw = await uow.conn.get_raw_connection()
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                "outbox",
                schema_name=self._schema,
                columns=_OUTBOX_COLUMNS,
                records=[
                    (r.event_id, r.topic, r.key, r.payload, r.causation_id) for r in uow.outbox
                ],
            )

    def _count(self, batch: list[Message], applied: list[Envelope[Any]], uow: UnitOfWork) -> None:
        fresh = {e.event_id for e in applied}
        counts: Counter[tuple[str, str]] = Counter()
        for m in batch:
            eid = m.envelope.event_id
            if eid in fresh:
                fresh.discard(eid)  # later copies in the same batch are duplicates
                outcome = uow.outcomes[eid].outcome if eid in uow.outcomes else "applied"
            else:
                outcome = "duplicate"
            counts[m.record.topic, outcome] += 1
        for (topic, outcome), n in counts.items():
            metrics.MESSAGES.labels(self.service, topic, outcome).inc(n)
