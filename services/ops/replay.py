"""Replay a `<topic>.dlq` to its topic: the original bytes, key and headers, once each."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import Progress

from contracts.topics import DLQ_SUFFIX, INBOUND, dlq
from services.kernel.settings import Settings
from services.ops import reading
from services.ops.dead_letter import DeadLetter
from services.ops.position import Position

GROUP = "packages-dlq-replay"
EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a replay takes: those matching every filter given (none: all)."""

    error_code: str | None = None
    event_type: str | None = None
    event_ids: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Ids are compared as UUIDs print, in lower case, whatever case the operator typed.
        object.__setattr__(self, "event_ids", frozenset(i.lower() for i in self.event_ids))

    def takes(self, letter: DeadLetter) -> bool:
        """The letter passes every filter."""
        return (
            (self.error_code is None or letter.error_code == self.error_code)
            and (self.event_type is None or letter.event_type == self.event_type)
            and (not self.event_ids or (letter.event_id or "").lower() in self.event_ids)
        )


@dataclass(frozen=True, slots=True)
class Taken:
    """A letter a replay took (or, dry, would take)."""

    partition: int
    offset: int
    error_code: str
    event_type: str | None
    event_id: str | None


@dataclass
class ReplayReport:
    """What a replay did, or would do when dry."""

    topic: str
    dry_run: bool
    taken: list[Taken] = field(default_factory=list)
    skipped: int = 0
    unroutable: int = 0
    by_code: Counter[str] = field(default_factory=Counter)
    examples: list[DeadLetter] = field(default_factory=list)

    @property
    def replayed(self) -> int:
        """Letters sent back to their topic (0 when dry)."""
        return 0 if self.dry_run else len(self.taken)


def inbound_topic(name: str) -> str:
    """The inbound topic an operator means by `name` (`invoice.published` or its `.dlq`)."""
    topic = name.removesuffix(DLQ_SUFFIX)
    if topic not in INBOUND:
        raise ValueError(f"{name} is not an inbound topic; one of: {', '.join(INBOUND)}")
    return topic


async def replay(
    settings: Settings,
    topic: str,
    selection: Selection = Selection(),  # frozen: one shared default is safe
    *,
    dry_run: bool = False,
    limit: int | None = None,
    from_start: bool = False,
    progress: bool = False,
) -> ReplayReport:
    """Send the selected letters of `topic`'s DLQ back to `topic`, each once.

    Reads from the replay group's position up to the DLQ's end offsets at the start; commits
    the new position after the broker has acknowledged the sends. `from_start` ignores the
    position, so that letters already replayed are sent again.
    """
    topic = inbound_topic(topic)
    tps = await reading.partitions(settings, [dlq(topic)])
    positions = {tp: Position() for tp in tps} if from_start else await _positions(settings, tps)
    report = ReplayReport(topic, dry_run)
    async with AsyncExitStack() as stack:
        kafka = await stack.enter_async_context(reading.consumer(settings, GROUP))
        producer = None if dry_run else await stack.enter_async_context(_producer(settings))
        covered: dict[TopicPartition, reading.Span] = {}
        for tp, log in (await reading.logs(kafka, tps)).items():
            start = positions[tp].fit(log.start, log.end)
            covered[tp] = reading.Span(log.start if start is None else start, log.end)
        bar = stack.enter_context(Progress(console=Console(stderr=True), disable=not progress))
        task = bar.add_task(
            f"reading {dlq(topic)}" if dry_run else f"replaying {dlq(topic)}",
            total=sum(len(s) for s in covered.values()),
        )
        batches = await stack.enter_async_context(aclosing(reading.read(kafka, covered)))
        async for batch in batches:
            done = await _replay_batch(
                batch, positions, selection, producer=producer, report=report, limit=limit
            )
            bar.advance(task, len(batch))
            if producer is not None:
                # Only now: every send of the batch is acknowledged by the broker.
                await _commit(kafka, positions)
            if done:
                break
        if producer is not None:
            # Again, so that the broker's offset retention counts from this run.
            await _commit(kafka, positions)
    return report


async def _commit(kafka: Any, positions: dict[TopicPartition, Position]) -> None:
    await kafka.commit({tp: p.commit() for tp, p in positions.items() if p.offset is not None})


@asynccontextmanager
async def _producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent producer: a retried send is never written twice."""
    producer = AIOKafkaProducer(
        **settings.kafka_options(),
        enable_idempotence=True,
        acks="all",
        max_request_size=2 * 1024 * 1024,
    )
    try:
        await producer.start()
        yield producer
    finally:
        await producer.stop()


async def _positions(
    settings: Settings, tps: list[TopicPartition]
) -> dict[TopicPartition, Position]:
    """The replay group's committed positions, with the metadata only the admin client reads."""
    async with reading.admin(settings) as admin:
        committed = await admin.list_consumer_group_offsets(GROUP, partitions=tps)
    return {
        tp: Position.parse(committed[tp].offset, committed[tp].metadata)
        if tp in committed
        else Position()
        for tp in tps
    }


async def _replay_batch(
    batch: list[Any],
    positions: dict[TopicPartition, Position],
    selection: Selection,
    *,
    producer: AIOKafkaProducer | None,
    report: ReplayReport,
    limit: int | None,
) -> bool:
    """Send the batch's selected letters and wait for the acks; True once `limit` is reached."""
    sends: list[asyncio.Future[Any]] = []
    partitions_of: dict[str, set[int]] = {}
    for record in batch:
        position = positions[TopicPartition(record.topic, record.partition)]
        if position.replayed(record.offset):
            continue
        letter = DeadLetter.of(record)
        if letter.original_topic not in INBOUND:
            report.unroutable += 1
            position.examined(record.offset, taken=False)
            continue
        if not selection.takes(letter):
            report.skipped += 1
            position.examined(record.offset, taken=False)
            continue
        report.taken.append(
            Taken(
                letter.partition,
                letter.offset,
                letter.error_code,
                letter.event_type,
                letter.event_id,
            )
        )
        report.by_code[letter.error_code] += 1
        if len(report.examples) < EXAMPLES:
            report.examples.append(letter)
        if producer is not None:
            if letter.original_topic not in partitions_of:
                partitions_of[letter.original_topic] = set(
                    await producer.partitions_for(letter.original_topic)
                )
            # Back to the partition it was read from: the platform's partitioner may not be ours,
            # and a key's events must stay on one partition to keep their order.
            partition = (
                letter.original_partition
                if letter.original_partition in partitions_of[letter.original_topic]
                else None
            )
            sends.append(
                await producer.send(
                    letter.original_topic,
                    value=letter.value,
                    key=letter.key,
                    partition=partition,
                    headers=list(letter.original_headers),
                )
            )
        position.examined(record.offset, taken=True)
        if limit is not None and len(report.taken) >= limit:
            break
    await asyncio.gather(*sends)
    return limit is not None and len(report.taken) >= limit
