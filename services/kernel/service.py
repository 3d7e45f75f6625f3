"""A consumer service: its FastStream app, its engine, producer, kernel, relay and timers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
)
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from contracts.base import Envelope
from contracts.topics import OUTBOUND
from services.kernel import logs, metrics, tracing
from services.kernel.asyncapi import ContractAsyncAPI
from services.kernel.db import make_engine
from services.kernel.dead_letters import KafkaDeadLetters
from services.kernel.faults import crash_after_commit, crash_after_publish, failing_for
from services.kernel.http import HttpServer
from services.kernel.kernel import BatchHandler, BatchLocks, Kernel, Prepared, RawRecord
from services.kernel.pruning import Pruner
from services.kernel.relay import Relay
from services.kernel.settings import Settings
from services.kernel.tables import KernelTables
from services.kernel.watch import Watch

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

Timer = Callable[["Service"], Coroutine[Any, Any, None]]
Handler = Callable[..., Awaitable[None]]
# Each service's health and metrics port unless PACKAGES_HTTP_PORT says otherwise; the read
# API has 8080.
HTTP_PORTS = {"catalog": 8081, "invoicing": 8082, "records": 8083, "redemption": 8084}


async def _kernel_decodes(_message: Any) -> list[Any]:
    """The kernel decodes each record itself, so that poison is dead-lettered, not raised.

    FastStream gets an empty list for the handler's body; the AsyncAPI document describes each
    topic's message from the contract (services/kernel/asyncapi.py).
    """
    return []


class Service:
    """Everything one consumer process of a service runs."""

    def __init__(
        self,
        name: str,
        tables: KernelTables,
        handler: BatchHandler,
        *,
        locks: BatchLocks | None = None,
        settings: Settings | None = None,
        timers: Sequence[Timer] = (),
        publishes: Sequence[str] = (),
        early_events_sql: str | None = None,
    ) -> None:
        """`early_events_sql` counts the events the service keeps waiting, for the metric."""
        self.name = name
        self.settings = settings or Settings()
        self._tables = tables
        self._handler = handler
        self.locks = locks
        self._timers = timers
        self._tasks: list[asyncio.Task[None]] = []
        self._housekeeping: list[asyncio.Task[None]] = []
        self.watch = Watch(name, self.settings, tables, early_events_sql=early_events_sql)
        self.http: HttpServer | None = None
        # FastStream's lines go through our handler too (JSON or text), not its own console one.
        self.broker = KafkaBroker(
            # A list: FastStream takes a string for one host and would not split "a:9092,b:9092".
            self.settings.kafka_bootstrap_servers.split(","),
            security=self.settings.broker_security(),
            sasl_oauth_token_provider=self.settings.kafka_token_provider,
            graceful_timeout=15.0,
            logger=logging.getLogger("packages.faststream.access"),
        )
        self.app = FastStream(
            self.broker,
            logger=logging.getLogger("packages.faststream"),
            on_startup=[self.start],
            on_shutdown=[self.drain],
            after_shutdown=[self.stop],
            specification=ContractAsyncAPI(
                title=f"Packages {name}",
                version="1.0.0",
                description=f"The {name} consumer of Packages: what it consumes and publishes.",
            ),
        )
        for topic in publishes:
            # Documentation only: events leave through the outbox relay's producer.
            schema: Any = Envelope[OUTBOUND[topic]]  # type: ignore[valid-type]
            self.broker.publisher(topic, schema=schema, description=f"Published by {name}")
        self.engine: AsyncEngine | None = None
        self.kernel: Kernel | None = None
        self.relay: Relay | None = None
        self._producer: AIOKafkaProducer | None = None
        self._in_flight: tuple[asyncio.Task[None], Sequence[RawRecord], Any] | None = None
        self._committing: asyncio.Task[None] | None = None
        self._draining = False

    def subscriber(self, *topics: str) -> Callable[[Handler], Any]:
        """A batch subscriber of this service's group that commits only after the transaction."""
        self.watch.topics += topics
        subscriber: Callable[[Handler], Any] = self.broker.subscriber(
            *topics,
            group_id=self.name,
            listener=self.watch.membership(),
            batch=True,
            max_records=self.settings.batch_max_records,
            batch_timeout_ms=self.settings.batch_timeout_ms,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            decoder=_kernel_decodes,
            max_partition_fetch_bytes=2 * 1024 * 1024,
        )
        return subscriber

    async def handle(self, message: KafkaMessage) -> None:
        """Decode a fetched batch while the one before commits, then start its transaction.

        One transaction at a time, in fetch order; each batch's offsets are committed after its
        own transaction, never before, and in batch order. The decoding of the next batch
        overlaps the transaction, and the offset commit overlaps the next transaction. What
        arrived during the wait is fetched into the batch before its transaction begins.
        """
        if self.kernel is None:
            raise RuntimeError("the service has not started")
        records: Sequence[RawRecord] = message.raw_message
        if not records:
            return
        prepared = self.kernel.prepare(records)
        if not await self._previous_finished(records):
            return
        # What arrived while the transaction before ran joins this batch: otherwise, at a low
        # rate, it would wait for this whole transaction as well before its own began.
        if meanwhile := await self._arrived_meanwhile(message.consumer, len(records)):
            records = [*records, *meanwhile]
            prepared.extend(self.kernel.prepare(meanwhile))
        finishing = self._finish(message.consumer, records, prepared)
        if self._draining:
            await finishing
            await self._offsets_committed()
        else:
            self._in_flight = (asyncio.create_task(finishing), records, message.consumer)

    async def _finish(
        self, consumer: Any, records: Sequence[RawRecord], prepared: Prepared
    ) -> None:
        assert self.kernel is not None
        await self.kernel.finish(prepared)
        crash_after_commit(
            records, self.settings.fault_crash_marker, self.settings.fault_crash_once_file
        )
        # The offsets are committed while the next transaction runs, in batch order: one
        # commit at a time, and never more than one behind the transactions.
        await self._offsets_committed()
        self._committing = asyncio.create_task(commit(consumer, records))

    async def _arrived_meanwhile(self, consumer: Any, fetched: int) -> list[RawRecord]:
        """Records already fetched into the consumer's buffer, up to a batch; none when draining."""
        room = self.settings.batch_max_records - fetched
        if room <= 0 or self._draining:
            return []
        try:
            more = await consumer.getmany(timeout_ms=0, max_records=room)
        except (ConsumerStoppedError, IllegalStateError, KafkaError) as exc:
            log.warning("could not add what arrived meanwhile to the batch: %r", exc)
            return []
        return [record for part in more.values() for record in part]

    async def _offsets_committed(self) -> None:
        """Wait for the offset commit in flight. One that failed only means redelivery, which
        the inbox recognises: it is logged, and never fails the batch after it."""
        previous, self._committing = self._committing, None
        if previous is None:
            return
        await asyncio.wait([previous])
        if not previous.cancelled() and (error := previous.exception()) is not None:
            log.error("offset commit failed (%r); its batch will come again as a duplicate", error)

    async def _previous_finished(self, fetched: Sequence[RawRecord] = ()) -> bool:
        """Wait for the batch in flight; if it failed, fetch it (and `fetched`) again."""
        if self._in_flight is None:
            return True
        task, records, consumer = self._in_flight
        self._in_flight = None
        try:
            await task
        except Exception:
            log.exception("a batch failed outside the kernel's retries; fetching it again")
            rewind(consumer, [*records, *fetched])
            return False
        return True

    async def drain(self) -> None:
        """Finish the batch in flight and its offsets before the consumer closes (on_shutdown)."""
        self._draining = True
        await self._previous_finished()
        await self._offsets_committed()

    async def start(self) -> None:
        """Open the engine and producer and start the relay and timers."""
        s = self.settings
        tracer = tracing.configure(self.name)
        if not logging.getLogger().handlers:  # a process of its own, not a host's (tests)
            logs.configure(self.name, s.log_format, s.log_level, traced=tracer is not None)
        metrics.declare(self.name)
        port = HTTP_PORTS.get(self.name, 0) if s.http_port is None else s.http_port
        if port:
            self.http = HttpServer(self.watch, port)
            self.http.start()
            log.info("health and metrics on port %d", self.http.port)
        # No ping per checkout, a round trip per batch: a batch that meets a dropped
        # connection fails transiently and runs again at once, the pool replacing its
        # connections; a relay round or a timer that meets one tries again at its next turn.
        self.engine = make_engine(s, pre_ping=False)
        # What start-up made lives as long as the process: keep it out of every collection, and
        # let the young generation hold a batch's worth of objects before it is collected.
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        self._producer = AIOKafkaProducer(
            **s.kafka_options(),
            enable_idempotence=True,
            acks="all",
            # The relay hands over whole batches, all before the sender next runs: lingering
            # would only delay them.
            linger_ms=0,
            max_batch_size=512 * 1024,
            max_request_size=2 * 1024 * 1024,
        )
        await self._producer.start()
        self.relay = Relay(
            self.name,
            self.engine,
            self._tables,
            self._producer,
            batch=s.relay_batch,
            poll_interval_s=s.relay_poll_interval_s,
            after_publish=crash_after_publish(s.fault_relay_crash_once_file),
        )
        self.kernel = Kernel(
            self.name,
            self.engine,
            self._tables,
            failing_for(self._handler, s.fault_fail_event_id),
            KafkaDeadLetters(self.name, self._producer),
            locks=self.locks,
            max_attempts=s.max_attempts,
            max_backoff_s=s.retry_max_backoff_s,
            on_commit=self.relay.wake,
            tracer=tracer,
        )
        self._tasks = [asyncio.create_task(self.relay.run(), name=f"{self.name}-relay")]
        self._tasks += [
            asyncio.create_task(timer(self), name=f"{self.name}-timer") for timer in self._timers
        ]
        relay_task = self._tasks[0]
        self.watch.engine = self.engine
        self.watch.relay_alive = lambda: not relay_task.done()
        self._housekeeping = [
            asyncio.create_task(self.watch.run(), name=f"{self.name}-watch"),
            asyncio.create_task(
                Pruner(self.name, self.engine, self._tables, s).run(), name=f"{self.name}-prune"
            ),
        ]

    async def stop(self) -> None:
        """Stop timers and relay, publish what is left, close the producer and engine."""
        with contextlib.suppress(Exception):
            await self.drain()
        relay_task, timers = (self._tasks[0], self._tasks[1:]) if self._tasks else (None, [])
        timers = [*timers, *self._housekeeping]
        for task in timers:
            task.cancel()
        if self.relay is not None and relay_task is not None:
            # Cancelling mid-round would publish rows without marking them sent, and another
            # process would publish them again: let the relay finish instead, within reason.
            self.relay.stop()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(relay_task, timeout=10)
        for task in timers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._producer is not None:
            await self._producer.stop()
        if self.engine is not None:
            await self.engine.dispose()
        if self.http is not None:
            await self.http.stop()


async def commit(consumer: Any, records: Sequence[RawRecord]) -> None:
    """Commit the batch's offsets; a rebalance may refuse it, and the inbox makes that safe."""
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError, KafkaError) as exc:
        log.warning("offset commit refused (%r); redelivery will be recognised as duplicate", exc)


def rewind(consumer: Any, records: Sequence[RawRecord]) -> None:
    """Seek each partition back to the first of these records, so they are fetched again."""
    first: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        first[tp] = min(first.get(tp, r.offset), r.offset)
    for tp, offset in first.items():
        try:
            consumer.seek(tp, offset)
        except (IllegalStateError, KafkaError, AssertionError) as exc:
            log.warning("cannot rewind %s (%r): it was reassigned", tp, exc)
