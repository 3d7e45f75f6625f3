"""The redemption service: `faststream run services.redemption.app:app`."""

from __future__ import annotations

from faststream.kafka.annotations import KafkaMessage

from contracts import topics
from services.kernel.service import Service
from services.kernel.settings import load_settings
from services.kernel.timers import periodic
from services.redemption import handlers
from services.redemption.tables import kernel

service = Service(
    "redemption",
    kernel,
    handlers.handle_batch,
    locks=handlers.BOOKING_LOCKS,
    settings=load_settings(),
    timers=[periodic("rematch", handlers.rematch_waiting)],
    publishes=[
        topics.PACKAGE_APPLIED,
        topics.PACKAGE_REMOVED,
        topics.PACKAGE_NOT_APPLIED,
        topics.PACKAGE_REPRICED,
        topics.PACKAGE_FORFEITED,
        topics.RECORD_UPDATED,
        topics.RECORD_LOW_BALANCE,
        topics.MESSAGE_REJECTED,
    ],
)
app = service.app


@service.subscriber(topics.BOOKING_CREATED, topics.BOOKING_UPDATED, topics.BOOKING_STATUS_CHANGED)
async def on_booking_event(message: KafkaMessage) -> None:
    """Bookings created, edited and changing status."""
    await service.handle(message)
