"""Parks poison in `<topic>.dlq`: the original bytes, key and headers, plus why."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from contracts.topics import dlq
from services.kernel.kernel import Poison

ERROR_CODE = "x-error-code"
ERROR = "x-error"
ATTEMPTS = "x-attempts"
ORIGINAL_TOPIC = "x-original-topic"
ORIGINAL_PARTITION = "x-original-partition"
ORIGINAL_OFFSET = "x-original-offset"
CONSUMER = "x-consumer"
OUR_HEADERS = (
    ERROR_CODE,
    ERROR,
    ATTEMPTS,
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    CONSUMER,
)


class KafkaDeadLetters:
    """Dead-letters through a Kafka producer."""

    def __init__(self, service: str, producer: Any) -> None:
        self._service = service
        self._producer = producer

    async def park(self, poison: Sequence[Poison]) -> None:
        """Send every poison message to its .dlq and wait for the broker's acknowledgement."""
        futures = []
        for p in poison:
            r = p.record
            headers = [(k, v) for k, v in (r.headers or ()) if k not in OUR_HEADERS]
            headers += [
                (ERROR_CODE, p.code.encode()),
                (ERROR, p.error[:4000].encode("utf-8", "replace")),
                (ATTEMPTS, str(p.attempts).encode()),
                (ORIGINAL_TOPIC, r.topic.encode()),
                (ORIGINAL_PARTITION, str(r.partition).encode()),
                (ORIGINAL_OFFSET, str(r.offset).encode()),
                (CONSUMER, self._service.encode()),
            ]
            futures.append(
                await self._producer.send(dlq(r.topic), value=r.value, key=r.key, headers=headers)
            )
        await asyncio.gather(*futures)
