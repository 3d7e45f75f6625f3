"""The pieces every message shares: ids, money, the actor and the envelope."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)

Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]
BusinessId = Annotated[
    Id, Field(description="The tenant: nothing of one business touches another's")
]
ClientId = Annotated[Id, Field(description="The platform's client id")]
PackageId = Annotated[Id, Field(description="The platform's package (template) id")]
RecordId = Annotated[Id, Field(description="A package record id")]
ServiceId = Annotated[Id, Field(description="The platform's service id")]
BookingId = Annotated[Id, Field(description="The platform's booking id")]
InvoiceId = Annotated[Id, Field(description="The platform's invoice id")]


_DECIMAL = re.compile(r"^-?\d{1,12}(\.\d{1,6})?$")
_AMOUNT = _DECIMAL.pattern.replace("^-?", "^")
_PERCENT = re.compile(r"^(100(\.0{1,6})?|\d{1,2}(\.\d{1,6})?)$")
_AS_TEXT = PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json")


def _text_schema(pattern: str, example: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "examples": [example]})


def _decimal_string(value: object) -> Decimal:
    """Money travels as a decimal string of at most 12 digits and 6 decimals; nothing else."""
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise ValueError('must be a decimal string such as "60.00" (12 digits, 6 decimals)')
    return Decimal(value)


def _amount_string(value: object) -> Decimal:
    """An amount of money: a decimal string, never below zero."""
    amount = _decimal_string(value)
    if amount.is_signed():  # "-0.00" too: no amount is written with a minus
        raise ValueError("must not be negative")
    return amount


def _percent_string(value: object) -> Decimal:
    """A percentage: a decimal string from "0" to "100"."""
    if isinstance(value, str) and _PERCENT.fullmatch(value):
        return Decimal(value)
    percent = _decimal_string(value)
    if not Decimal(0) <= percent <= Decimal(100) or percent.is_signed():
        raise ValueError('a percent must be between "0" and "100"')
    return percent


# Checked by a regular expression rather than pydantic's digit counting: it is on the hot path.
DecimalString = Annotated[
    Decimal,
    PlainValidator(_decimal_string, json_schema_input_type=str),
    _AS_TEXT,
    _text_schema(_DECIMAL.pattern, "60.00"),
]
AmountString = Annotated[
    Decimal,
    PlainValidator(_amount_string, json_schema_input_type=str),
    _AS_TEXT,
    _text_schema(_AMOUNT, "60.00"),
]
PercentString = Annotated[
    Decimal,
    PlainValidator(_percent_string, json_schema_input_type=str),
    _AS_TEXT,
    _text_schema(_PERCENT.pattern, "20"),
]


class Frozen(BaseModel):
    """Base of every contract model: immutable, unknown fields ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_max_length=4096)


class Money(Frozen):
    """An amount of one currency."""

    amount: AmountString = Field(
        description='Decimal string, never negative, e.g. "60.00"', examples=["60.00"]
    )
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = Field(
        description="ISO 4217 code", examples=["EUR"]
    )


Role = Literal["owner", "staff", "client", "system"]


class Actor(Frozen):
    """Who did it on the platform."""

    user_id: Id = Field(description="The platform's user id")
    role: Role = Field(description="The user's role in the business")


DataT = TypeVar("DataT", bound=BaseModel)


class Envelope(Frozen, Generic[DataT]):
    """The JSON object every Kafka value holds, inbound and outbound."""

    event_id: UUID = Field(
        description="Unique per event; a redelivery or resend carries the same id"
    )
    event_type: str = Field(description="Equal to the topic name")
    occurred_at: AwareDatetime = Field(description="When it happened at the source (RFC 3339)")
    business_id: BusinessId
    actor: Actor | None = Field(
        None, description="Required on package.* and package_record.* inbound events"
    )
    causation_id: UUID | None = Field(
        None, description="Outbound only: the event_id that caused it"
    )
    data: DataT
