"""A service decodes the next batch while the one before commits, commits offsets while the next
transaction runs, and never reorders batches or their offset commits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from services.kernel.db import metadata
from services.kernel.kernel import Prepared
from services.kernel.service import Service
from services.kernel.settings import Settings
from services.kernel.tables import kernel_tables


@dataclass(frozen=True)
class Record:
    """A fetched Kafka record."""

    partition: int
    offset: int
    topic: str = "booking.created"
    key: bytes | None = None
    value: bytes | None = b"{}"
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class Journal:
    """What happened, in order, across the fake kernel and consumer."""

    steps: list[str] = field(default_factory=list)
    fail_once: set[int] = field(default_factory=set)
    fail_commit_once: set[int] = field(default_factory=set)
    sought: dict[TopicPartition, int] = field(default_factory=dict)
    arriving: list[Record] = field(default_factory=list)


class Kernel:
    """Records what the service asks of it; a batch's first offset names it."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def prepare(self, records: Sequence[Record]) -> Prepared:
        self.journal.steps.append(f"decode {records[0].offset}")
        prepared = Prepared(0.0)
        prepared.good = list(records)  # type: ignore[arg-type]
        return prepared

    async def finish(self, prepared: Prepared) -> None:
        first = prepared.good[0].offset  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)  # the transaction
        if first in self.journal.fail_once:
            self.journal.fail_once.discard(first)
            raise RuntimeError("the DLQ could not be reached")
        self.journal.steps.append(f"apply {first}")


class Consumer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.journal.steps.append(f"committing {sorted(offsets.values())}")
        await asyncio.sleep(0.03)  # slower than a transaction: the broker is far away
        if failing := self.journal.fail_commit_once & set(offsets.values()):
            self.journal.fail_commit_once -= failing
            raise ValueError("an error aiokafka does not expect")
        self.journal.steps.append(f"commit {sorted(offsets.values())}")

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[int, list[Record]]:
        """What reached the buffer since the last fetch, without waiting for more."""
        assert timeout_ms == 0
        taken = self.journal.arriving[:max_records]
        del self.journal.arriving[:max_records]
        if taken:
            self.journal.steps.append(f"fetch {[r.offset for r in taken]}")
        fetched: dict[int, list[Record]] = {}
        for r in taken:
            fetched.setdefault(r.partition, []).append(r)
        return fetched

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.journal.sought[tp] = offset


@dataclass
class Message:
    raw_message: list[Record]
    consumer: Consumer


def _service(journal: Journal) -> Service:
    service = Service(
        "redemption", kernel_tables(metadata("redemption")), _never, settings=Settings()
    )
    service.kernel = Kernel(journal)  # type: ignore[assignment]
    return service


async def _never(*_: Any) -> None:
    raise AssertionError("the fake kernel does not call the handler")


async def test_the_next_batch_is_decoded_while_the_one_before_commits_in_order() -> None:
    journal = Journal()
    service = _service(journal)
    consumer = Consumer(journal)

    await service.handle(Message([Record(0, 10), Record(1, 20)], consumer))  # type: ignore[arg-type]
    await service.handle(Message([Record(0, 12)], consumer))  # type: ignore[arg-type]
    await service.drain()

    assert journal.steps == [
        "decode 10",
        "decode 12",  # before batch 10 was applied: decoding overlapped its transaction
        "apply 10",
        "committing [11, 21]",
        "apply 12",  # while batch 10's offsets were being committed
        "commit [11, 21]",
        "committing [13]",  # only once the batch before had committed its offsets
        "commit [13]",
    ]


async def test_a_batch_that_fails_is_fetched_again_with_the_one_after_it() -> None:
    journal = Journal(fail_once={10})
    service = _service(journal)
    consumer = Consumer(journal)

    await service.handle(Message([Record(0, 10), Record(1, 20)], consumer))  # type: ignore[arg-type]
    await service.handle(Message([Record(0, 12), Record(2, 5)], consumer))  # type: ignore[arg-type]

    # Neither was committed; every partition they touched goes back to its first record.
    assert journal.sought == {
        TopicPartition("booking.created", 0): 10,
        TopicPartition("booking.created", 1): 20,
        TopicPartition("booking.created", 2): 5,
    }
    assert not any(step.startswith(("apply", "commit")) for step in journal.steps)
    journal.steps.clear()

    await service.handle(Message([Record(0, 10), Record(1, 20)], consumer))  # type: ignore[arg-type]
    await service.handle(Message([Record(0, 12), Record(2, 5)], consumer))  # type: ignore[arg-type]
    await service.drain()
    assert [s for s in journal.steps if s.startswith(("apply", "commit "))] == [
        "apply 10",
        "apply 12",
        "commit [11, 21]",
        "commit [6, 13]",
    ]


async def test_a_failed_offset_commit_is_logged_and_the_batches_after_it_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = Journal(fail_commit_once={11})
    service = _service(journal)
    consumer = Consumer(journal)

    await service.handle(Message([Record(0, 10)], consumer))  # type: ignore[arg-type]
    await service.handle(Message([Record(0, 11)], consumer))  # type: ignore[arg-type]
    await service.handle(Message([Record(0, 12)], consumer))  # type: ignore[arg-type]
    await service.drain()

    # Batch 10 will come again and be recognised as a duplicate; nothing after it is held up.
    assert journal.sought == {}
    assert [s for s in journal.steps if s.startswith(("apply", "commit "))] == [
        "apply 10",
        "apply 11",
        "apply 12",
        "commit [12]",
        "commit [13]",
    ]
    assert "offset commit failed" in caplog.text


async def test_a_batch_handled_while_draining_has_its_offsets_committed_at_once() -> None:
    journal = Journal()
    service = _service(journal)
    consumer = Consumer(journal)

    await service.drain()  # shutting down: FastStream may still deliver a fetched batch
    await service.handle(Message([Record(0, 10)], consumer))  # type: ignore[arg-type]

    assert journal.steps == ["decode 10", "apply 10", "committing [11]", "commit [11]"]


async def test_what_arrives_during_a_transaction_joins_the_batch_waiting_for_it() -> None:
    journal = Journal()
    service = _service(journal)
    consumer = Consumer(journal)

    await service.handle(Message([Record(0, 10)], consumer))  # type: ignore[arg-type]
    # Batch 11 was fetched while batch 10's transaction ran; 12 and 13 arrived after that.
    journal.arriving = [Record(0, 12), Record(1, 30)]
    await service.handle(Message([Record(0, 11)], consumer))  # type: ignore[arg-type]
    await service.drain()

    assert journal.steps == [
        "decode 10",
        "decode 11",
        "apply 10",
        "committing [11]",
        "fetch [12, 30]",  # once batch 10's transaction was over, not when 11 was fetched
        "decode 12",
        "apply 11",  # one transaction for 11, 12 and 30
        "commit [11]",
        "committing [13, 31]",
        "commit [13, 31]",
    ]


async def test_a_batch_is_topped_up_to_its_size_and_no_further() -> None:
    journal = Journal()
    service = _service(journal)
    consumer = Consumer(journal)
    full = Settings().batch_max_records
    journal.arriving = [Record(1, n) for n in range(full)]

    await service.handle(Message([Record(0, 10), Record(0, 11)], consumer))  # type: ignore[arg-type]
    await service.drain()

    assert f"fetch {list(range(full - 2))}" in journal.steps
    assert journal.steps[-1] == f"commit {[12, full - 2]}"
    assert [r.offset for r in journal.arriving] == [full - 2, full - 1]


async def test_a_topped_up_batch_that_fails_is_fetched_again_whole() -> None:
    journal = Journal(fail_once={10}, arriving=[Record(0, 11), Record(1, 30)])
    service = _service(journal)
    consumer = Consumer(journal)

    await service.handle(Message([Record(0, 10)], consumer))  # type: ignore[arg-type]
    await service.handle(Message([Record(0, 12)], consumer))  # type: ignore[arg-type]

    # The records the batch took in while it waited go back with it.
    assert journal.sought == {
        TopicPartition("booking.created", 0): 10,
        TopicPartition("booking.created", 1): 30,
    }
    assert not any(step.startswith("commit") for step in journal.steps)


def test_a_service_reaches_every_broker_of_a_cluster() -> None:
    settings = Settings(kafka_bootstrap_servers="kafka-1:9092,kafka-2:9092,kafka-3:9092")

    service = Service(
        "redemption", kernel_tables(metadata("redemption")), _never, settings=settings
    )

    # What the broker hands aiokafka: one string would be taken as a single host name.
    assert service.broker._connection_kwargs["bootstrap_servers"] == [
        "kafka-1:9092", "kafka-2:9092", "kafka-3:9092"
    ]  # fmt: skip
