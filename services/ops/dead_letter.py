"""A record of a `<topic>.dlq` read back: the original message and why it was parked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from contracts.topics import DLQ_SUFFIX
from services.kernel import dead_letters as headers


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message: where it sits, what it was and what went wrong."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    original_headers: tuple[tuple[str, bytes], ...]
    error_code: str
    error: str
    attempts: int | None
    original_topic: str
    original_partition: int | None
    original_offset: int | None
    event_id: str | None
    event_type: str | None

    @classmethod
    def of(cls, record: Any) -> DeadLetter:
        """Read a DLQ record (aiokafka's ConsumerRecord)."""
        ours = {
            k: v.decode("utf-8", "replace")
            for k, v in record.headers or ()
            if k in headers.OUR_HEADERS
        }
        event_id, event_type = _identity(record.value)
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            original_headers=tuple(
                (k, v) for k, v in record.headers or () if k not in headers.OUR_HEADERS
            ),
            error_code=ours.get(headers.ERROR_CODE, "unknown"),
            error=ours.get(headers.ERROR, ""),
            attempts=_int(ours.get(headers.ATTEMPTS)),
            # A letter parked by hand may lack the header: its DLQ names where it came from.
            original_topic=ours.get(headers.ORIGINAL_TOPIC)
            or record.topic.removesuffix(DLQ_SUFFIX),
            original_partition=_int(ours.get(headers.ORIGINAL_PARTITION)),
            original_offset=_int(ours.get(headers.ORIGINAL_OFFSET)),
            event_id=event_id,
            event_type=event_type,
        )

    @property
    def origin(self) -> str:
        """Where the message was first read, as `topic[partition]@offset`."""
        partition = "?" if self.original_partition is None else self.original_partition
        offset = "?" if self.original_offset is None else self.original_offset
        return f"{self.original_topic}[{partition}]@{offset}"

    @property
    def place(self) -> str:
        """Where the letter sits, as `topic[partition]@offset`."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _identity(value: bytes | None) -> tuple[str | None, str | None]:
    """The event_id and event_type of a JSON value; an undecodable value has neither."""
    try:
        document = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    event_id, event_type = document.get("event_id"), document.get("event_type")
    return (
        event_id if isinstance(event_id, str) else None,
        event_type if isinstance(event_type, str) else None,
    )
