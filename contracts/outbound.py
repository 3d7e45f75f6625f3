"""What we publish: every change, after it is committed."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import Field

from contracts.base import (
    BookingId,
    ClientId,
    Frozen,
    Id,
    InvoiceId,
    Money,
    PackageId,
    RecordId,
    ServiceId,
)
from contracts.inbound import Discount

RecordStatus = Literal["active", "exhausted", "frozen", "expired", "cancelled"]


class InvoiceOrigin(Frozen):
    """The record was sold on an invoice line."""

    type: Literal["invoice"] = "invoice"
    invoice_id: InvoiceId
    line_id: Id


class AssignmentOrigin(Frozen):
    """The record was assigned without invoicing."""

    type: Literal["assignment"] = "assignment"
    assignment_id: Id


Origin = Annotated[InvoiceOrigin | AssignmentOrigin, Field(discriminator="type")]


class ServiceBalance(Frozen):
    """One service of a record and its balance."""

    service_id: ServiceId
    sessions_total: int | None = Field(description="null for unlimited")
    sessions_used: int
    sessions_remaining: int | None = Field(description="null for unlimited")


class RecordState(Frozen):
    """`package_record.created|updated|paid|cancelled|expired`: the record after the change."""

    package_record_id: RecordId
    client_id: ClientId
    package_id: PackageId
    origin: Origin
    paid: bool
    status: RecordStatus
    expires_on: date | None = Field(description="Last valid day; null for never")
    discount: Discount
    services: list[ServiceBalance]
    frozen_until: date | None = Field(None, description="Frozen through this date; null if not")


class RecordLowBalance(RecordState):
    """`package_record.low_balance`: a redemption left exactly one session of a service."""

    service_id: ServiceId = Field(description="The service with one session left")


class RecordExpiringSoon(RecordState):
    """`package_record.expiring_soon`: the record expires within the business's notice lead
    time while sessions remain; once per record and expiry date."""

    days_left: int = Field(description="Days from today to the last valid day")


class PackageApplied(Frozen):
    """`booking.package_applied`: a session of a record was redeemed for the booking."""

    booking_id: BookingId
    client_id: ClientId
    package_record_id: RecordId
    service_id: ServiceId
    price_before: Money
    price_after: Money
    sessions_remaining: int | None = Field(description="Left for the service; null for unlimited")


class PackageRepriced(Frozen):
    """`booking.package_repriced`: a held booking's price changed; the same record prices it."""

    booking_id: BookingId
    client_id: ClientId
    package_record_id: RecordId
    service_id: ServiceId
    price_before: Money
    price_after: Money


class PackageForfeited(Frozen):
    """`booking.package_forfeited`: a no-show or late cancellation kept its session by the
    business's policy; the booking keeps its redemption."""

    booking_id: BookingId
    client_id: ClientId
    package_record_id: RecordId
    reason: Literal["no_show", "late_cancel"]
    sessions_remaining: int | None = Field(description="Left for the service; null for unlimited")


RemovalReason = Literal[
    "booking_cancelled",
    "booking_no_show",
    "record_expired",
    "record_cancelled",
    "service_changed",
    "package_deselected",
]


class PackageRemoved(Frozen):
    """`booking.package_removed`: the booking no longer holds its record's session."""

    booking_id: BookingId
    client_id: ClientId
    package_record_id: RecordId
    reason: RemovalReason
    session_restored: bool
    sessions_remaining: int | None


NotAppliedReason = Literal["no_eligible_record", "record_not_found", "record_not_eligible"]


class PackageNotApplied(Frozen):
    """`booking.package_not_applied`: the booking asked for a package and got none."""

    booking_id: BookingId
    client_id: ClientId
    reason: NotAppliedReason
    package_record_id: RecordId | None = Field(
        None, description="The record that was asked for, if any"
    )


class MessageRejected(Frozen):
    """`message.rejected`: a well-formed message refused by a rule."""

    rejected_event_id: str
    rejected_event_type: str
    reason: str = Field(description="A stable code, e.g. not_entitled")
    detail: str = Field(description="Human text")


__all__ = [
    "AssignmentOrigin",
    "InvoiceOrigin",
    "MessageRejected",
    "NotAppliedReason",
    "Origin",
    "PackageApplied",
    "PackageForfeited",
    "PackageNotApplied",
    "PackageRemoved",
    "PackageRepriced",
    "RecordExpiringSoon",
    "RecordLowBalance",
    "RecordState",
    "RecordStatus",
    "RemovalReason",
    "ServiceBalance",
]
