"""The platform's events, as it publishes them: we consume them as they are."""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    Tag,
)

from contracts.base import (
    BookingId,
    ClientId,
    DecimalString,
    Frozen,
    Id,
    InvoiceId,
    Money,
    PackageId,
    PercentString,
    RecordId,
    ServiceId,
)

# Counters are stored in 32-bit columns: a larger one is bad input, refused before any work.
INT32_MAX = 2**31 - 1
Version = Annotated[StrictInt, Field(le=INT32_MAX, description="+1 on every change of that entity")]


class PlanChanged(Frozen):
    """`business.plan_changed`: the business's subscription plan."""

    plan: Literal["free", "starter", "pro", "enterprise"] = Field(
        description="Only pro and enterprise may manage packages"
    )


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _iana_zone(name: str) -> str:
    """An IANA time zone name the zone database knows, such as "Europe/Berlin"."""
    if name not in _zones():
        raise ValueError("must be an IANA time zone name such as Europe/Berlin")
    return name


TimeZoneName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_iana_zone),
    Field(examples=["Europe/Berlin"]),
]


class SettingsChanged(Frozen):
    """`business.settings_changed`: the business's time zone, policies and notice lead time."""

    time_zone: TimeZoneName = Field(description="Days of records, appointments and reports")
    no_show: Literal["restore", "forfeit"] = Field(
        description="Whether a no-show gives the session back"
    )
    late_cancel_hours: Annotated[StrictInt, Field(ge=0, le=720)] | None = Field(
        description="A cancellation less than this many hours before the appointment keeps the "
        "session; null for never"
    )
    expiring_soon_days: Annotated[StrictInt, Field(ge=0, le=90)] = Field(
        description="Days before expiry to notify; 0 for no notice"
    )
    version: Version


class PackageService(Frozen):
    """A service a package includes, with its session count."""

    service_id: ServiceId
    sessions: Annotated[StrictInt, Field(ge=1)] | None = Field(
        description="Sessions included, at least 1; null for unlimited"
    )


class PercentDiscount(Frozen):
    """A percentage off the booked service's price."""

    type: Literal["percent"]
    value: PercentString = Field(description='A decimal string from "0" to "100"')


class AmountDiscount(Frozen):
    """A fixed amount off the booked service's price."""

    type: Literal["amount"]
    value: Money


Discount = Annotated[PercentDiscount | AmountDiscount, Field(discriminator="type")]


class NeverExpires(Frozen):
    """Records of the package never expire."""

    type: Literal["never"]


class ValidForDays(Frozen):
    """Records expire N days after their creation."""

    type: Literal["days"]
    days: StrictInt


class ValidUntil(Frozen):
    """Records expire at the end of a fixed date."""

    type: Literal["until"]
    date: dt.date = Field(description="The last valid day (YYYY-MM-DD)")


Validity = Annotated[NeverExpires | ValidForDays | ValidUntil, Field(discriminator="type")]


class PackageDefined(Frozen):
    """`package.created` and `package.updated`: the whole package after the change."""

    package_id: PackageId
    name: Annotated[str, Field(min_length=1, max_length=200)]
    price: Money = Field(description="What the client pays for the package")
    services: list[PackageService] = Field(max_length=500)
    discount: Discount
    validity: Validity
    status: Literal["active", "disabled"]
    version: Version


class PackageStatusChanged(Frozen):
    """`package.disabled` and `package.enabled`."""

    package_id: PackageId
    version: Version


class PackageLine(Frozen):
    """An invoice line selling `quantity` records of a package."""

    line_id: Id
    type: Literal["package"]
    package_id: PackageId
    quantity: StrictInt = Field(ge=1, description="How many records the line sells")
    unit_price: Money


class RecordLine(Frozen):
    """An invoice line adding an existing unpaid record, to be paid."""

    line_id: Id
    type: Literal["package_record"]
    package_record_id: RecordId


class OtherLine(Frozen):
    """Any other line (service, product, ...): not ours, ignored."""

    line_id: Id | None = None
    type: str


def _line_kind(line: Any) -> str:
    kind = line.get("type") if isinstance(line, dict) else getattr(line, "type", None)
    return kind if kind in ("package", "package_record") else "other"


InvoiceLine = Annotated[
    Annotated[PackageLine, Tag("package")]
    | Annotated[RecordLine, Tag("package_record")]
    | Annotated[OtherLine, Tag("other")],
    Discriminator(_line_kind),
]


class InvoicePublished(Frozen):
    """`invoice.published`."""

    invoice_id: InvoiceId
    client_id: ClientId
    paid: StrictBool
    lines: list[InvoiceLine] = Field(max_length=10_000)


class InvoiceChanged(Frozen):
    """`invoice.paid` and `invoice.voided`."""

    invoice_id: InvoiceId
    client_id: ClientId


class PackageAssigned(Frozen):
    """`package.assigned`: a record given without invoicing (unpaid)."""

    assignment_id: Id
    package_id: PackageId
    client_id: ClientId


class SessionsTotal(Frozen):
    """A new session total for one service of a record."""

    service_id: ServiceId
    sessions_total: StrictInt | None = Field(le=INT32_MAX, description="null for unlimited")


class RecordChanges(Frozen):
    """What a business user changes on a record; absent fields stay as they are."""

    expires_on: dt.date | None = Field(None, description="New expiry; null for never")
    sessions: list[SessionsTotal] | None = Field(None, max_length=500)
    status: Literal["cancelled", "active"] | None = None
    frozen_until: dt.date | None = Field(
        None,
        description="Frozen from the request's day through this date; null: unfrozen now",
    )


class RecordEditRequested(Frozen):
    """`package_record.edit_requested`."""

    request_id: Id
    package_record_id: RecordId
    client_id: ClientId
    changes: RecordChanges


BookingStatus = Literal["pending", "confirmed", "completed", "no_show", "cancelled"]


class BookingSnapshot(Frozen):
    """`booking.created` and `booking.updated`: the whole booking."""

    booking_id: BookingId
    client_id: ClientId
    service_id: ServiceId
    starts_at: AwareDatetime
    status: BookingStatus
    price: Money
    source: Literal["calendar", "widget", "api"]
    package_record_id: RecordId | None = Field(
        None, description="Record chosen in the Packages field"
    )
    use_package: StrictBool = True
    version: Version


class BookingStatusChanged(Frozen):
    """`booking.status_changed`."""

    booking_id: BookingId
    client_id: ClientId
    status: BookingStatus
    previous_status: BookingStatus | None = None
    version: Version


__all__ = [
    "AmountDiscount",
    "BookingSnapshot",
    "BookingStatus",
    "BookingStatusChanged",
    "DecimalString",
    "Discount",
    "InvoiceChanged",
    "InvoiceLine",
    "InvoicePublished",
    "NeverExpires",
    "OtherLine",
    "PackageAssigned",
    "PackageDefined",
    "PackageLine",
    "PackageService",
    "PackageStatusChanged",
    "PercentDiscount",
    "PlanChanged",
    "RecordChanges",
    "RecordEditRequested",
    "RecordLine",
    "SessionsTotal",
    "SettingsChanged",
    "ValidForDays",
    "ValidUntil",
    "Validity",
]
