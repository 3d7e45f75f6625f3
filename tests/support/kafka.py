"""Writing inbound events to Kafka and reading what the services publish."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord


async def produce(
    bootstrap: str,
    messages: Sequence[tuple[str, bytes | dict[str, Any], bytes | None]],
    options: Mapping[str, object] | None = None,
) -> None:
    """Send (topic, value, key) messages in order and wait for the broker's acknowledgement.

    `options` are more of aiokafka's (security: `Settings.kafka_options()`).
    """
    producer = AIOKafkaProducer(
        **{"bootstrap_servers": bootstrap, **(options or {})}, enable_idempotence=True
    )
    await producer.start()
    try:
        pending = []
        for topic, value, key in messages:
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            pending.append(await producer.send(topic, raw, key=key))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def keyed(
    topic: str, event: dict[str, Any], key_field: str = "client_id"
) -> tuple[str, dict[str, Any], bytes | None]:
    """A message keyed as the platform keys it."""
    key = event["data"].get(key_field) or event["business_id"]
    return topic, event, str(key).encode()


class Reader:
    """Reads topics from the beginning, keeping what matches a filter."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=f"test-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.records: list[ConsumerRecord[bytes, bytes]] = []

    async def __aenter__(self) -> Reader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(
        self,
        keep: Callable[[ConsumerRecord[bytes, bytes]], bool],
        count: int,
        timeout: float = 60.0,  # noqa: ASYNC109 - a reading deadline
        settle: float = 0.0,
        distinct: Callable[[ConsumerRecord[bytes, bytes]], Hashable] | None = None,
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Read until `count` kept records (then `settle` more seconds for extras) or time out.

        With `distinct`, copies of a record (the same `distinct` of it) count once.
        """
        kept: list[ConsumerRecord[bytes, bytes]] = []
        seen: set[Hashable] = set()
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    self.records.append(r)
                    if keep(r):
                        kept.append(r)
                        seen.add(distinct(r) if distinct else len(kept))
            if len(seen) >= count and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                return kept
            await asyncio.sleep(0)
        return kept


def body(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    """The JSON value of a record."""
    value = orjson.loads(record.value or b"null")
    assert isinstance(value, dict)
    return value


def of_business(business_id: str) -> Callable[[ConsumerRecord[bytes, bytes]], bool]:
    """Keep the outbound events of one business."""

    def keep(record: ConsumerRecord[bytes, bytes]) -> bool:
        try:
            return bool(body(record).get("business_id") == business_id)
        except Exception:  # noqa: BLE001 - not ours if it is not JSON
            return False

    return keep
