"""The invoicing service: `faststream run services.invoicing.app:app`."""

from __future__ import annotations

from faststream.kafka.annotations import KafkaMessage

from contracts import topics
from services.invoicing.handlers import Invoicing, settle_waiting_lines
from services.invoicing.tables import kernel
from services.kernel.service import Service
from services.kernel.settings import load_settings
from services.kernel.timers import periodic

settings = load_settings()
service = Service(
    "invoicing",
    kernel,
    Invoicing(settings.early_event_wait_s).handle_batch,
    settings=settings,
    timers=[periodic("waiting-lines", settle_waiting_lines)],
    publishes=[
        topics.RECORD_CREATED,
        topics.RECORD_PAID,
        topics.RECORD_CANCELLED,
        topics.MESSAGE_REJECTED,
    ],
)
app = service.app


@service.subscriber(topics.INVOICE_PUBLISHED, topics.INVOICE_PAID, topics.INVOICE_VOIDED)
async def on_invoice_event(message: KafkaMessage) -> None:
    """Invoices published, paid and voided."""
    await service.handle(message)
