"""The catalog service: `faststream run services.catalog.app:app`."""

from __future__ import annotations

from faststream.kafka.annotations import KafkaMessage

from contracts import topics
from services.catalog import handlers
from services.catalog.tables import kernel
from services.kernel.service import Service
from services.kernel.settings import load_settings
from services.kernel.timers import periodic

settings = load_settings()
service = Service(
    "catalog",
    kernel,
    handlers.Catalog(settings.early_event_wait_s).handle_batch,
    settings=settings,
    timers=[periodic("waiting-for-plan", handlers.expire_waiting)],
    publishes=[topics.RECORD_UPDATED, topics.MESSAGE_REJECTED],
)
app = service.app


@service.subscriber(
    topics.BUSINESS_PLAN_CHANGED,
    topics.BUSINESS_SETTINGS_CHANGED,
    topics.PACKAGE_CREATED,
    topics.PACKAGE_UPDATED,
    topics.PACKAGE_DISABLED,
    topics.PACKAGE_ENABLED,
)
async def on_catalog_event(message: KafkaMessage) -> None:
    """Plans, settings and packages."""
    await service.handle(message)
