"""The redemption service's tables (schema `redemption`)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    func,
    text,
)

from services.kernel.db import metadata as make_metadata
from services.kernel.tables import kernel_tables

metadata = make_metadata("redemption")
kernel = kernel_tables(metadata)

booking = Table(
    "booking",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("booking_id", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("service_id", String(64), comment="null until the booking itself has arrived"),
    Column("starts_at", DateTime(timezone=True)),
    Column("status", String(16), nullable=False),
    # Unconstrained numeric keeps the scale it was given: "60.00" reads back as 60.00.
    Column("price_amount", Numeric),
    Column("currency", String(3)),
    Column("use_package", Boolean, nullable=False, server_default="true"),
    Column("chosen_record_id", String(64)),
    Column("snapshot_version", Integer, nullable=False, server_default="0"),
    Column("status_version", Integer, nullable=False, server_default="0"),
    Column(
        "released",
        Boolean,
        nullable=False,
        server_default="false",
        comment="Cancelled or no-show once: never redeems again",
    ),
    Column("matched_on", Text, comment="The inputs the last matching ran on (JSON list)"),
    Column(
        "awaits_package",
        Boolean,
        nullable=False,
        server_default="false",
        comment="Asked for a package and holds none: matched again when a record becomes usable",
    ),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

Index(
    "ix_booking_awaiting",
    booking.c.business_id,
    booking.c.client_id,
    postgresql_where=booking.c.awaits_package,
)

redemption = Table(
    "redemption",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("business_id", String(64), nullable=False),
    Column("booking_id", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("service_id", String(64), nullable=False),
    Column("price_before", Numeric, nullable=False),
    Column("price_after", Numeric, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("redeemed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column(
        "removed",
        Boolean,
        nullable=False,
        server_default="false",
        comment="Set with the restoration row, in the same transaction",
    ),
    CheckConstraint(
        "price_after >= 0 AND price_after <= price_before", name="price_after_in_range"
    ),
)
# A booking holds at most one redemption at a time: the one without a restoration.
Index(
    "uq_redemption_held",
    redemption.c.business_id,
    redemption.c.booking_id,
    unique=True,
    postgresql_where=text("NOT removed"),
)

restoration = Table(
    "restoration",
    metadata,
    Column(
        "redemption_id",
        BigInteger,
        ForeignKey(redemption.c.id),
        primary_key=True,
        comment="At most one per redemption, and only for one that exists",
    ),
    Column("reason", String(32), nullable=False),
    Column("session_restored", Boolean, nullable=False),
    Column("removed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
