"""Reading topics up to the end offsets they had when the reading began: never waits forever."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import UnknownTopicOrPartitionError

from services.kernel.settings import Settings

IDLE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one partition a reading covers: from `start` up to `end` (excluded)."""

    start: int
    end: int

    def __len__(self) -> int:
        return max(0, self.end - self.start)


@asynccontextmanager
async def consumer(
    settings: Settings, group_id: str | None = None
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer that only moves where it is told and never commits on its own."""
    kafka = AIOKafkaConsumer(
        **settings.kafka_options(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=2 * 1024 * 1024,
    )
    try:
        await kafka.start()
        yield kafka
    finally:
        await kafka.stop()


@asynccontextmanager
async def admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client."""
    client = AIOKafkaAdminClient(**settings.kafka_options())
    try:
        await client.start()
        yield client
    finally:
        await client.close()


async def partitions(settings: Settings, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of the topics; an unknown topic is an error, not an empty reading."""
    wanted = list(topics)
    async with admin(settings) as client:
        described: list[dict[str, Any]] = await client.describe_topics(wanted)
    numbers = {t["topic"]: [p["partition"] for p in t["partitions"]] for t in described}
    found: list[TopicPartition] = []
    for topic in wanted:
        if not numbers.get(topic):
            raise UnknownTopicOrPartitionError(f"topic {topic} does not exist")
        found += [TopicPartition(topic, p) for p in sorted(numbers[topic])]
    return found


async def logs(kafka: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, Span]:
    """Each partition's log as it is now: its first offset and its end."""
    first: dict[TopicPartition, int] = await kafka.beginning_offsets(tps)
    last: dict[TopicPartition, int] = await kafka.end_offsets(tps)
    return {tp: Span(first[tp], last[tp]) for tp in tps}


async def read(
    kafka: AIOKafkaConsumer,
    covered: Mapping[TopicPartition, Span],
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> AsyncGenerator[list[Any], None]:
    """Yield fetched batches of records within the spans, until every span is read."""
    kafka.assign(list(covered))
    for tp, span in covered.items():
        kafka.seek(tp, span.start)
    left = {tp: span for tp, span in covered.items() if len(span)}
    idle_since = time.monotonic()
    while left:
        fetched = await kafka.getmany(*left, timeout_ms=500)
        batch = [r for tp, records in fetched.items() for r in records if r.offset < left[tp].end]
        if batch:
            idle_since = time.monotonic()
            yield batch
        for tp in list(left):
            if await kafka.position(tp) >= left[tp].end:
                del left[tp]
        if left and time.monotonic() - idle_since > idle_timeout_s:
            raise TimeoutError(
                f"no records for {idle_timeout_s:.0f}s while reading "
                + ", ".join(f"{tp.topic}[{tp.partition}]" for tp in left)
            )
