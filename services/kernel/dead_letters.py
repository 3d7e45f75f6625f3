"""Parks poison in `<topic>.dlq`: the original bytes, key and headers, plus why."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError

from contracts.topics import dlq
from services.kernel.kernel import Poison

ERROR_CODE = "x-error-code"
ERROR = "x-error"
ATTEMPTS = "x-attempts"
ORIGINAL_TOPIC = "x-original-topic"
ORIGINAL_PARTITION = "x-original-partition"
ORIGINAL_OFFSET = "x-original-offset"
CONSUMER = "x-consumer"
VALUE_OMITTED = "x-value-omitted"
OUR_HEADERS = (
    ERROR_CODE,
    ERROR,
    ATTEMPTS,
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    CONSUMER,
    VALUE_OMITTED,
)
log = logging.getLogger(__name__)


class KafkaDeadLetters:
    """Dead-letters through a Kafka producer."""

    def __init__(self, service: str, producer: Any) -> None:
        self._service = service
        self._producer = producer

    async def park(self, poison: Sequence[Poison]) -> None:
        """Send every poison message to its .dlq and wait for the broker's acknowledgement."""
        futures = [await self._send(p, p.record.value) for p in poison]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for p, outcome in zip(poison, outcomes, strict=True):
            if isinstance(outcome, MessageSizeTooLargeError):
                # The DLQ takes less than the message's own topic did: park the letter without
                # its value rather than lose it; the headers say where the original still is.
                log.warning(
                    "%s[%d]@%d is too large for its DLQ: parked without its value",
                    p.record.topic,
                    p.record.partition,
                    p.record.offset,
                )
                await (await self._send(p, None))
            elif isinstance(outcome, BaseException):
                raise outcome

    async def _send(self, p: Poison, value: bytes | None) -> Any:
        """Queue one letter; the future the broker's acknowledgement completes."""
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
        if value is None and r.value is not None:
            headers.append((VALUE_OMITTED, str(len(r.value)).encode()))
        try:
            return await self._producer.send(dlq(r.topic), value=value, key=r.key, headers=headers)
        except MessageSizeTooLargeError as exc:
            # Refused before sending (larger than the producer's request limit): the same case.
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
            return future
