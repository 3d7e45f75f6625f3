"""What a worker tells about itself: readiness, and the gauges it samples every few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel import metrics
from services.kernel.settings import Settings
from services.kernel.tables import KernelTables

log = logging.getLogger(__name__)
OK = "ok"


class Membership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Whether a consumer has joined its group, and since when it is rebalancing."""

    def __init__(self) -> None:
        self.joined = False
        self.rebalancing_since: float | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:  # noqa: ARG002
        """A rebalance began: the consumer rejoins."""
        self.rebalancing_since = time.monotonic()

    async def on_partitions_assigned(self, assigned: Any) -> None:  # noqa: ARG002
        """The consumer is in its group (with or without partitions)."""
        self.joined, self.rebalancing_since = True, None

    def check(self, bound_s: float) -> str:
        """`ok`, or what keeps the consumer out of its group."""
        if not self.joined:
            return "not joined its group yet"
        if self.rebalancing_since is not None:
            waited = time.monotonic() - self.rebalancing_since
            if waited > bound_s:
                return f"rejoining its group for {waited:.0f} s"
        return OK


@dataclass
class Watch:
    """A service's readiness checks and sampled gauges."""

    service: str
    settings: Settings
    tables: KernelTables
    topics: list[str] = field(default_factory=list)
    memberships: list[Membership] = field(default_factory=list)
    early_events_sql: str | None = None
    engine: AsyncEngine | None = None
    relay_alive: Callable[[], bool] = lambda: False

    def membership(self) -> Membership:
        """A listener for one more consumer of the service."""
        member = Membership()
        self.memberships.append(member)
        return member

    async def checks(self) -> dict[str, str]:
        """Each readiness check and how it stands: `ok`, or what is wrong."""
        bound = self.settings.rejoin_bound_s
        consumers = [m.check(bound) for m in self.memberships] or ["no consumer"]
        result = {
            "postgres": await self._postgres(),
            "consumer": next((c for c in consumers if c != OK), OK),
            "relay": OK if self.relay_alive() else "relay loop not running",
        }
        metrics.READY.labels(self.service).set(all(v == OK for v in result.values()))
        return result

    async def _postgres(self) -> str:
        if self.engine is None:
            return "not connected yet"
        try:
            async with asyncio.timeout(self.settings.health_timeout_s), self.engine.connect() as c:
                await c.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return f"unavailable: {type(exc).__name__}"
        return OK

    async def run(self) -> None:
        """Sample every `watch_interval_s` until cancelled; a failed sample is tried again.

        Each kind of sample has a loop of its own: a database that waits on a lock never
        keeps the lag from being refreshed.
        """
        lag = _Lag(self.service, self.settings, self.topics)
        try:
            await asyncio.gather(
                self._every(lag.sample), self._every(self._database), self._every(self.checks)
            )
        finally:
            await lag.close()

    async def _every(self, sample: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await sample()
            except Exception as exc:  # noqa: BLE001 - a gauge goes stale, nothing stops
                log.warning("could not sample %s: %r", self.service, exc)
            await asyncio.sleep(self.settings.watch_interval_s)

    async def _database(self) -> None:
        """Outbox backlog and age, early events, the inbox's and outbox's sizes."""
        if self.engine is None:
            return
        inbox, outbox = self.tables.inbox, self.tables.outbox
        queries: Sequence[str] = (
            f"SELECT count(*) FROM (SELECT 1 FROM {outbox.schema}.outbox"
            " WHERE sent_at IS NULL LIMIT 10000000) AS unsent",
            "SELECT coalesce(extract(epoch FROM now() - ("
            f"SELECT created_at FROM {outbox.schema}.outbox"
            " WHERE sent_at IS NULL ORDER BY id LIMIT 1)), 0)",
            f"SELECT pg_total_relation_size('{inbox.schema}.inbox')",
            f"SELECT pg_total_relation_size('{outbox.schema}.outbox')",
            self.early_events_sql or "SELECT NULL",
        )
        async with self.engine.connect() as conn:
            unsent, age, inbox_bytes, outbox_bytes, early = [
                await conn.scalar(text(q)) for q in queries
            ]
        metrics.OUTBOX_UNSENT.labels(self.service).set(unsent or 0)
        metrics.OUTBOX_OLDEST_UNSENT.labels(self.service).set(float(age or 0))
        metrics.TABLE_BYTES.labels(self.service, "inbox").set(inbox_bytes or 0)
        metrics.TABLE_BYTES.labels(self.service, "outbox").set(outbox_bytes or 0)
        if early is not None:
            metrics.EARLY_EVENTS.labels(self.service).set(early)


class _Lag:
    """Samples the group's lag on every partition it reads, whichever process owns it."""

    def __init__(self, service: str, settings: Settings, topics: list[str]) -> None:
        self._service = service
        self._settings = settings
        self._topics = topics
        self._clients: tuple[AIOKafkaConsumer, AIOKafkaAdminClient] | None = None

    async def sample(self) -> None:
        """End offset - committed offset of each partition; the clients are made again after a
        failure."""
        try:
            kafka, admin = self._clients or await self._connect()
            await self._sample(kafka, admin)
        except Exception:
            await self.close()
            raise

    async def _connect(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        kafka = AIOKafkaConsumer(**self._settings.kafka_options(), enable_auto_commit=False)
        admin = AIOKafkaAdminClient(**self._settings.kafka_options())
        self._clients = (kafka, admin)
        await kafka.start()
        await admin.start()
        return kafka, admin

    async def _sample(self, kafka: AIOKafkaConsumer, admin: AIOKafkaAdminClient) -> None:
        described: list[dict[str, Any]] = await admin.describe_topics(self._topics)
        parts = [
            TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
        ]
        if not parts:
            return
        ends: dict[TopicPartition, int] = await kafka.end_offsets(parts)
        committed = await admin.list_consumer_group_offsets(self._service, partitions=parts)
        for tp in parts:
            done = committed.get(tp)
            position = done.offset if done is not None and done.offset >= 0 else 0
            metrics.LAG.labels(self._service, tp.topic, str(tp.partition)).set(
                max(ends.get(tp, 0) - position, 0)
            )
        metrics.LAG_SAMPLED.labels(self._service).set(time.time())

    async def close(self) -> None:
        """Close the clients, if any."""
        clients, self._clients = self._clients, None
        if clients is not None:
            kafka, admin = clients
            with contextlib.suppress(Exception):
                await kafka.stop()
            with contextlib.suppress(Exception):
                await admin.close()
