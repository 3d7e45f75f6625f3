"""Topic names and which contract model each carries."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from contracts import inbound, outbound

BUSINESS_PLAN_CHANGED = "business.plan_changed"
BUSINESS_SETTINGS_CHANGED = "business.settings_changed"
PACKAGE_CREATED = "package.created"
PACKAGE_UPDATED = "package.updated"
PACKAGE_DISABLED = "package.disabled"
PACKAGE_ENABLED = "package.enabled"
PACKAGE_ASSIGNED = "package.assigned"
INVOICE_PUBLISHED = "invoice.published"
INVOICE_PAID = "invoice.paid"
INVOICE_VOIDED = "invoice.voided"
RECORD_EDIT_REQUESTED = "package_record.edit_requested"
BOOKING_CREATED = "booking.created"
BOOKING_UPDATED = "booking.updated"
BOOKING_STATUS_CHANGED = "booking.status_changed"

RECORD_CREATED = "package_record.created"
RECORD_UPDATED = "package_record.updated"
RECORD_PAID = "package_record.paid"
RECORD_CANCELLED = "package_record.cancelled"
RECORD_EXPIRED = "package_record.expired"
RECORD_LOW_BALANCE = "package_record.low_balance"
RECORD_EXPIRING_SOON = "package_record.expiring_soon"
PACKAGE_APPLIED = "booking.package_applied"
PACKAGE_REMOVED = "booking.package_removed"
PACKAGE_NOT_APPLIED = "booking.package_not_applied"
PACKAGE_REPRICED = "booking.package_repriced"
PACKAGE_FORFEITED = "booking.package_forfeited"
MESSAGE_REJECTED = "message.rejected"

DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True, slots=True)
class Inbound:
    """An inbound topic: its data model, its key and whether an actor is required."""

    model: type[BaseModel]
    key: str
    actor_required: bool = False


INBOUND: dict[str, Inbound] = {
    BUSINESS_PLAN_CHANGED: Inbound(inbound.PlanChanged, "business_id"),
    BUSINESS_SETTINGS_CHANGED: Inbound(inbound.SettingsChanged, "business_id", actor_required=True),
    PACKAGE_CREATED: Inbound(inbound.PackageDefined, "package_id", actor_required=True),
    PACKAGE_UPDATED: Inbound(inbound.PackageDefined, "package_id", actor_required=True),
    PACKAGE_DISABLED: Inbound(inbound.PackageStatusChanged, "package_id", actor_required=True),
    PACKAGE_ENABLED: Inbound(inbound.PackageStatusChanged, "package_id", actor_required=True),
    PACKAGE_ASSIGNED: Inbound(inbound.PackageAssigned, "client_id", actor_required=True),
    INVOICE_PUBLISHED: Inbound(inbound.InvoicePublished, "client_id"),
    INVOICE_PAID: Inbound(inbound.InvoiceChanged, "client_id"),
    INVOICE_VOIDED: Inbound(inbound.InvoiceChanged, "client_id"),
    RECORD_EDIT_REQUESTED: Inbound(inbound.RecordEditRequested, "client_id", actor_required=True),
    BOOKING_CREATED: Inbound(inbound.BookingSnapshot, "client_id"),
    BOOKING_UPDATED: Inbound(inbound.BookingSnapshot, "client_id"),
    BOOKING_STATUS_CHANGED: Inbound(inbound.BookingStatusChanged, "client_id"),
}

OUTBOUND: dict[str, type[BaseModel]] = {
    RECORD_CREATED: outbound.RecordState,
    RECORD_UPDATED: outbound.RecordState,
    RECORD_PAID: outbound.RecordState,
    RECORD_CANCELLED: outbound.RecordState,
    RECORD_EXPIRED: outbound.RecordState,
    RECORD_LOW_BALANCE: outbound.RecordLowBalance,
    RECORD_EXPIRING_SOON: outbound.RecordExpiringSoon,
    PACKAGE_APPLIED: outbound.PackageApplied,
    PACKAGE_REMOVED: outbound.PackageRemoved,
    PACKAGE_NOT_APPLIED: outbound.PackageNotApplied,
    PACKAGE_REPRICED: outbound.PackageRepriced,
    PACKAGE_FORFEITED: outbound.PackageForfeited,
    MESSAGE_REJECTED: outbound.MessageRejected,
}


def key_of(topic: str) -> str:
    """The field whose value keys a topic's messages: the id CONTRACT.md names for the topic.

    What we publish is keyed by its client, and a refusal by its business.
    """
    if topic in INBOUND:
        return INBOUND[topic].key
    return "business_id" if topic == MESSAGE_REJECTED else "client_id"


def dlq(topic: str) -> str:
    """The dead-letter topic of an inbound topic."""
    return topic + DLQ_SUFFIX


def partitions(topic: str, default: int = 6) -> int:
    """Partition count a topic is created with: booking traffic is the largest."""
    return default if topic.startswith("booking.") else max(3, default // 2)


ALL_TOPICS: tuple[str, ...] = (*INBOUND, *(dlq(t) for t in INBOUND), *OUTBOUND)
