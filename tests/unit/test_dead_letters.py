"""Dead letters too large for their DLQ are parked without their value, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from services.kernel.dead_letters import ERROR_CODE, VALUE_OMITTED, KafkaDeadLetters
from services.kernel.kernel import Poison


@dataclass
class Record:
    """A fetched Kafka record."""

    value: bytes | None
    offset: int
    topic: str = "invoice.published"
    partition: int = 2
    key: bytes | None = b"cli-ana"
    headers: Sequence[tuple[str, bytes]] = (("traceparent", b"00-4bf9"),)


@dataclass
class Broker:
    """A producer: its broker takes records up to `limit` bytes, it refuses above `early`."""

    limit: int
    early: int = 10**9
    fail_with: Exception | None = None
    parked: list[dict[str, Any]] = field(default_factory=list)

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        size = len(value or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > self.early:
            raise MessageSizeTooLargeError("larger than max_request_size")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_with is not None:
            future.set_exception(self.fail_with)
        elif size > self.limit:
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.parked.append({"topic": topic, "value": value, "key": key, **dict(headers)})
            future.set_result(None)
        return future


def _poison(value: bytes | None, offset: int) -> Poison:
    return Poison(Record(value, offset), "not_json", "message: Invalid JSON", attempts=1)


async def test_a_letter_the_dlq_takes_keeps_its_original_bytes() -> None:
    broker = Broker(limit=10_000)
    await KafkaDeadLetters("invoicing", broker).park([_poison(b"%PDF-1.7 small", 7)])
    [letter] = broker.parked
    assert (letter["topic"], letter["value"], letter["key"]) == (
        "invoice.published.dlq",
        b"%PDF-1.7 small",
        b"cli-ana",
    )
    assert VALUE_OMITTED not in letter
    assert letter["traceparent"] == b"00-4bf9"


async def test_a_letter_too_large_for_the_dlq_is_parked_without_its_value() -> None:
    broker = Broker(limit=10_000)
    big, small = _poison(b"%PDF-1.7" + b"\x00" * 50_000, 8), _poison(b"{oops", 9)
    await KafkaDeadLetters("invoicing", broker).park([big, small])
    assert [(p["value"], p["x-original-offset"]) for p in broker.parked] == [
        (b"{oops", b"9"),
        (None, b"8"),
    ]
    omitted = broker.parked[1]
    assert omitted[VALUE_OMITTED] == b"50008"
    assert omitted[ERROR_CODE] == b"not_json"
    assert omitted["x-original-topic"] == b"invoice.published"


async def test_a_letter_the_producer_refuses_outright_is_parked_without_its_value() -> None:
    broker = Broker(limit=10**9, early=10_000)
    await KafkaDeadLetters("invoicing", broker).park([_poison(b"x" * 20_000, 3)])
    [letter] = broker.parked
    assert (letter["value"], letter[VALUE_OMITTED]) == (None, b"20000")


async def test_any_other_failure_to_park_is_raised_so_the_batch_is_not_committed() -> None:
    broker = Broker(limit=10_000, fail_with=KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        await KafkaDeadLetters("invoicing", broker).park([_poison(b"{oops", 4)])
