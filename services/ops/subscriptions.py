"""Which inbound topics each service's consumer group reads (its group is named as it is)."""

from __future__ import annotations

from contracts import topics

# Mirrors the `@service.subscriber(...)` topics of services/<name>/app.py; a system test checks
# the two agree, so that an operator tool never misses a topic a service reads.
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "catalog": (
        topics.BUSINESS_PLAN_CHANGED,
        topics.BUSINESS_SETTINGS_CHANGED,
        topics.PACKAGE_CREATED,
        topics.PACKAGE_UPDATED,
        topics.PACKAGE_DISABLED,
        topics.PACKAGE_ENABLED,
    ),
    "invoicing": (topics.INVOICE_PUBLISHED, topics.INVOICE_PAID, topics.INVOICE_VOIDED),
    "records": (topics.PACKAGE_ASSIGNED, topics.RECORD_EDIT_REQUESTED),
    "redemption": (
        topics.BOOKING_CREATED,
        topics.BOOKING_UPDATED,
        topics.BOOKING_STATUS_CHANGED,
    ),
}

SERVICES: tuple[str, ...] = tuple(SUBSCRIPTIONS)
