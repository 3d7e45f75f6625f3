"""One transaction of a handler: its connection, and the events and outcomes it records."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import Actor, Envelope
from contracts.outbound import MessageRejected
from contracts.topics import MESSAGE_REJECTED


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An outbound event waiting for its transaction to commit."""

    event_id: uuid.UUID
    topic: str
    key: str | None
    payload: bytes
    causation_id: uuid.UUID | None
    traceparent: str | None = None
    tracestate: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a message ended, where it did not simply apply."""

    outcome: str  # rejected | ignored | deferred
    reason: str
    detail: str


@dataclass
class UnitOfWork:
    """What a handler gets: a connection inside the batch's transaction, and an outbox."""

    conn: AsyncConnection
    service: str
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    outbox: list[OutboxRow] = field(default_factory=list)
    outcomes: dict[uuid.UUID, Outcome] = field(default_factory=dict)
    # The trace context of each traced event: the events it causes carry it on.
    traces: dict[uuid.UUID, tuple[str, str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._occurred_at = self.now.isoformat().replace("+00:00", "Z")

    def publish(
        self,
        topic: str,
        key: str | None,
        data: BaseModel,
        *,
        business_id: str,
        cause: Envelope[Any] | None = None,
        actor: Actor | None = None,
    ) -> None:
        """Queue an outbound event: it leaves only if this transaction commits."""
        # The data goes through pydantic's own JSON serialiser: one pass, no dict in between.
        self.publish_json(
            topic,
            key,
            data.__pydantic_serializer__.to_json(data),
            business_id=business_id,
            cause=cause,
            actor=actor,
        )

    def publish_json(
        self,
        topic: str,
        key: str | None,
        data: bytes,
        *,
        business_id: str,
        cause: Envelope[Any] | None = None,
        actor: Actor | None = None,
    ) -> None:
        """`publish` for data already serialised from trusted state (a contract model's JSON)."""
        event_id = uuid.uuid4()
        head = orjson.dumps(
            {
                "event_id": str(event_id),
                "event_type": topic,
                "occurred_at": self._occurred_at,
                "business_id": business_id,
                "actor": (actor.model_dump() if actor else None),
                "causation_id": str(cause.event_id) if cause else None,
            }
        )
        payload = head[:-1] + b',"data":' + data + b"}"
        trace = self.traces.get(cause.event_id) if cause and self.traces else None
        self.outbox.append(
            OutboxRow(
                event_id,
                topic,
                key,
                payload,
                cause.event_id if cause else None,
                *(trace or (None, None)),
            )
        )

    def reject(self, cause: Envelope[Any], reason: str, detail: str) -> None:
        """Refuse a well-formed message by a rule: `message.rejected` names the rule."""
        self.outcomes[cause.event_id] = Outcome("rejected", reason, detail)
        self.publish(
            MESSAGE_REJECTED,
            cause.business_id,
            MessageRejected(
                rejected_event_id=str(cause.event_id),
                rejected_event_type=cause.event_type,
                reason=reason,
                detail=detail,
            ),
            business_id=cause.business_id,
            cause=cause,
        )

    def ignore(self, cause: Envelope[Any], reason: str, detail: str = "") -> None:
        """Recognise a message that changes nothing (a stale version, say); not an error."""
        self.outcomes[cause.event_id] = Outcome("ignored", reason, detail)

    def defer(self, cause: Envelope[Any], reason: str, detail: str = "") -> None:
        """Keep a message that arrived before what it depends on, to apply it later."""
        self.outcomes[cause.event_id] = Outcome("deferred", reason, detail)
