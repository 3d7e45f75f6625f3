"""The naive peer's tables (schema `bench_naive`), mapped as the guides map them."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import ForeignKey, MetaData, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "bench_naive"


class Base(DeclarativeBase):
    """The naive peer's tables."""

    metadata = MetaData(schema=SCHEMA)


class Record(Base):
    """A client's package record."""

    __tablename__ = "record"
    record_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    business_id: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    discount_percent: Mapped[Decimal] = mapped_column(Numeric)
    expires_on: Mapped[date | None]
    seq: Mapped[int]


class RecordService(Base):
    """A service of a record and its balance."""

    __tablename__ = "record_service"
    record_id: Mapped[str] = mapped_column(ForeignKey(Record.record_id), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sessions_total: Mapped[int | None]
    sessions_used: Mapped[int]


class Booking(Base):
    """A booking as last seen."""

    __tablename__ = "booking"
    business_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    booking_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    service_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    price: Mapped[Decimal] = mapped_column(Numeric)
    version: Mapped[int]


class Redemption(Base):
    """A session a booking took from a record."""

    __tablename__ = "redemption"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    business_id: Mapped[str] = mapped_column(String(64))
    booking_id: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(ForeignKey(Record.record_id))
    service_id: Mapped[str] = mapped_column(String(64))
    price_before: Mapped[Decimal] = mapped_column(Numeric)
    price_after: Mapped[Decimal] = mapped_column(Numeric)
    currency: Mapped[str] = mapped_column(String(3))
    removed: Mapped[bool] = mapped_column(default=False)
