"""The records service: `faststream run services.records.app:app`."""

from __future__ import annotations

from faststream.kafka.annotations import KafkaMessage

from contracts import topics
from services.kernel.service import Service
from services.kernel.settings import load_settings
from services.kernel.timers import periodic
from services.records import handlers
from services.records.tables import kernel

settings = load_settings()
service = Service(
    "records",
    kernel,
    handlers.Records(settings.early_event_wait_s).handle_batch,
    settings=settings,
    timers=[
        periodic("expiry", handlers.expire_due),
        periodic("waiting", handlers.settle_waiting),
        periodic("expiring-soon", handlers.notice_expiring),
        periodic("thaw", handlers.thaw_due),
    ],
    publishes=[
        topics.RECORD_CREATED,
        topics.RECORD_UPDATED,
        topics.RECORD_CANCELLED,
        topics.RECORD_EXPIRED,
        topics.RECORD_EXPIRING_SOON,
        topics.MESSAGE_REJECTED,
    ],
)
app = service.app


@service.subscriber(topics.PACKAGE_ASSIGNED, topics.RECORD_EDIT_REQUESTED)
async def on_record_event(message: KafkaMessage) -> None:
    """Assignments and edit requests."""
    await service.handle(message)
