"""Topics made fresh for each run, events preloaded or sent at a rate, outcomes read back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bench.checker import Outcome
from bench.workload import Event, stamped

Options = Mapping[str, Any]
_WAIT_S = 60.0


class Sendable(Protocol):
    """An inbound event as a workload holds it."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> bytes: ...


async def reset_topics(options: Options, wanted: Mapping[str, int]) -> None:
    """Delete these topics where they exist and create them empty with these partitions."""
    # Deleting a topic also drops every group's offsets on it: each consumer starts over.
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        existing = set(await admin.list_topics()) & set(wanted)
        if existing:
            await admin.delete_topics(sorted(existing))
        deadline = time.monotonic() + _WAIT_S
        while set(await admin.list_topics()) & existing:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {sorted(existing)} were not deleted in {_WAIT_S} s")
            await asyncio.sleep(0.2)
        await _create(admin, wanted, deadline)
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, wanted: Mapping[str, int], deadline: float) -> None:
    """Create the topics, retrying while the broker still finishes deleting them."""
    pending = dict(wanted)
    while pending:
        response = await admin.create_topics(
            [NewTopic(name, n, 1) for name, n in pending.items()], timeout_ms=30_000
        )
        for entry in response.topic_errors:
            if entry[1] == 0:
                pending.pop(entry[0], None)
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not create {sorted(pending)}: {response.topic_errors}")
            await asyncio.sleep(0.3)
    while True:
        described = await admin.describe_topics(list(wanted))
        if all(_has_leaders(t) for t in described) and len(described) == len(wanted):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {sorted(wanted)} have no leaders")
        await asyncio.sleep(0.1)


def _has_leaders(topic: dict[str, Any]) -> bool:
    parts: list[dict[str, Any]] = topic.get("partitions", [])
    return (
        topic.get("error_code") == 0
        and bool(parts)
        and all(p.get("leader", -1) >= 0 for p in parts)
    )


async def _listed_groups(admin: AIOKafkaAdminClient) -> list[Any]:
    """Every consumer group, once the coordinator has loaded them."""
    # A broker started again on its data loads the groups it had for a moment after it answers.
    deadline = time.monotonic() + _WAIT_S
    while True:
        try:
            return list(await admin.list_consumer_groups())
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _members(admin: AIOKafkaAdminClient, group: str) -> tuple[str, int]:
    """The group's state and member count; ("Dead", 0) when it does not exist yet."""
    # A fresh cluster has no coordinator until some group commits: list before describing.
    listed = await _listed_groups(admin)
    if group not in {entry[0] for entry in listed}:
        return "Dead", 0
    described = await admin.describe_consumer_groups([group])
    for response in described:
        for entry in response.groups:
            # (error_code, group, state, protocol_type, protocol, members, ...)
            if entry[1] == group:
                return str(entry[2]), len(entry[5])
    return "Dead", 0


async def group_in_use(options: Options, group: str) -> bool:
    """Whether a consumer group has members, or is rebalancing toward some."""
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        state, members = await _members(admin, group)
    finally:
        await admin.close()
    return members > 0 or state not in ("Dead", "Empty")


async def settled_at(options: Options, group: str, members: int) -> float:
    """The wall time (epoch seconds) a group first holds `members` members and is stable."""
    # Until then partitions move between members as each joins: start-up, not steady pace.
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        while True:
            state, count = await _members(admin, group)
            if state == "Stable" and count >= members:
                return time.time()
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def preload(options: Options, events: Sequence[Sendable]) -> None:
    """Send the events in order, keyed by client, and wait until the broker has them all."""
    producer = AIOKafkaProducer(
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=2 * 1024 * 1024,
        **options,
    )
    await producer.start()
    try:
        sent = [await producer.send(e.topic, e.value, key=e.key) for e in events]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


class TopicReader:
    """Reads whole topics by partition, without a consumer group."""

    def __init__(self, options: Options, partitions: Mapping[str, int]) -> None:
        self._consumer = AIOKafkaConsumer(
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **options,
        )
        self._partitions = [TopicPartition(t, p) for t, n in partitions.items() for p in range(n)]

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def total(self) -> int:
        """Records in the topics now (they were created empty)."""
        ends = await self._consumer.end_offsets(self._partitions)
        return int(sum(ends.values()))

    async def read_all(self) -> list[Any]:
        """Every record from the beginning up to the end offsets as of now."""
        ends = await self._consumer.end_offsets(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        records: list[Any] = []
        left = {tp for tp, end in ends.items() if end > 0}
        while left:
            batches = await self._consumer.getmany(*left, timeout_ms=500)
            for tp, got in batches.items():
                records += got
                if got[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        return records

    async def from_now(self) -> None:
        """Skip what is there: follow only what comes next."""
        await self._consumer.seek_to_end(*self._partitions)

    async def follow(self, seen: Callable[[Any, float], None], stop: asyncio.Event) -> None:
        """Hand each new record to `seen` with the wall time it became visible, until `stop`."""
        while not stop.is_set():
            batches = await self._consumer.getmany(timeout_ms=20)
            now = time.time()
            for got in batches.values():
                for r in got:
                    seen(r, now)


def outcome(record: Any) -> Outcome:
    """An outcome record as the checker reads it."""
    doc = orjson.loads(record.value or b"{}")
    data = doc.get("data")
    return Outcome(
        topic=record.topic,
        event_id=str(doc.get("event_id")),
        causation_id=doc.get("causation_id"),
        timestamp_ms=int(record.timestamp),
        record_id=data.get("package_record_id") if isinstance(data, dict) else None,
    )


async def refused(options: Options, layout: Mapping[str, int]) -> list[str]:
    """What reached these topics (`message.rejected`, dead letters), shortened for a report."""
    async with TopicReader(options, layout) as reader:
        return [f"{r.topic}: {(r.value or b'')[:300]!r}" for r in await reader.read_all()]


async def wait_for_outcomes(
    reader: TopicReader,
    expected: int,
    stall_s: float,
    alive: Callable[[], bool],
    on_first: Callable[[], None],
) -> int:
    """Wait for `expected` records (or `stall_s` without progress); returns how many there are."""
    count, progress_at = 0, time.monotonic()
    while True:
        now = await reader.total()
        if now and not count:
            on_first()
        if now != count:
            count, progress_at = now, time.monotonic()
        if count >= expected or time.monotonic() - progress_at > stall_s or not alive():
            return count
        await asyncio.sleep(0.05)


async def offer(
    options: Options,
    reader: TopicReader,
    bookings: Iterator[Event],
    *,
    rate: int,
    seconds: float,
    drain_s: float,
) -> list[float]:
    """Send `rate` new bookings a second for `seconds`; their end-to-end latencies in seconds."""
    # Latency: occurred_at, stamped as the booking leaves, to its outcome visible on its topic;
    # infinite for those not seen within `drain_s` after the last send.
    total = int(rate * seconds)
    sent_at: dict[str, float] = {}
    visible: dict[str, float] = {}
    all_seen = asyncio.Event()

    def seen(record: Any, at: float) -> None:
        cause = orjson.loads(record.value or b"{}").get("causation_id")
        if cause in sent_at and cause not in visible:
            visible[cause] = at
            if len(visible) >= total:
                all_seen.set()

    stop = asyncio.Event()
    await reader.from_now()
    following = asyncio.create_task(reader.follow(seen, stop))
    # The platform's producer: no linger, so a booking leaves as it is made.
    producer = AIOKafkaProducer(linger_ms=0, acks="all", enable_idempotence=True, **options)
    await producer.start()
    try:
        started = time.monotonic()
        pending = []
        while len(sent_at) < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            while len(sent_at) < due:
                event = next(bookings)
                now = datetime.now(UTC)
                sent_at[event.event_id] = now.timestamp()
                value = stamped(event, now)
                pending.append(await producer.send(event.topic, value, key=event.key))
            await asyncio.sleep(0.001)
        with contextlib.suppress(KafkaError):
            await asyncio.gather(*pending)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), drain_s)
    finally:
        stop.set()
        await following
        await producer.stop()
    inf = float("inf")
    return [visible.get(e, inf) - t for e, t in sent_at.items()]
