"""The redemption service: `faststream run services.redemption.app:app`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from faststream.kafka.annotations import KafkaMessage

from contracts import topics
from services.kernel.service import Service
from services.redemption import handlers
from services.redemption.tables import kernel

Subscriber = Callable[[KafkaMessage], Awaitable[None]]

service = Service("redemption", kernel, handlers.handle_batch)
app = service.app
_subscriber = cast(
    "Callable[[Subscriber], Subscriber]",
    service.subscriber(
        topics.BOOKING_CREATED, topics.BOOKING_UPDATED, topics.BOOKING_STATUS_CHANGED
    ),
)


@_subscriber
async def on_booking_event(message: KafkaMessage) -> None:
    """Bookings created, edited and changing status."""
    await service.handle(message)
