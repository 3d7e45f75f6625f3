"""The records service's tables (schema `records`)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from services.kernel.db import metadata as make_metadata
from services.kernel.tables import kernel_tables

metadata = make_metadata("records")
kernel = kernel_tables(metadata)

package_record = Table(
    "package_record",
    metadata,
    Column("record_id", String(64), primary_key=True),
    Column("seq", BigInteger, Identity(), nullable=False, comment="Creation order"),
    Column("business_id", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("package_id", String(64), nullable=False),
    Column("origin", JSONB, nullable=False),
    Column("invoice_id", String(64)),
    Column("line_id", String(64)),
    Column("unit", Integer),
    Column("assignment_id", String(64)),
    Column("attached_invoice_id", String(64), comment="Invoice an unpaid record was added to"),
    Column("paid", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("expires_on", Date),
    Column(
        "expiry_by_hand",
        Boolean,
        nullable=False,
        server_default="false",
        comment="The business set the expiry: a new package validity leaves it",
    ),
    Column("discount", JSONB, nullable=False),
    Column("created_on", Date, nullable=False),
    Column(
        "expiry_noticed_on",
        Date,
        comment="The expiry an expiring-soon notice was sent for: once per record and expiry",
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("business_id", "invoice_id", "line_id", "unit"),
    UniqueConstraint("business_id", "assignment_id"),
    Column("frozen_from", Date, comment="The first frozen day, while frozen"),
    Column("frozen_until", Date, comment="The last frozen day, while frozen"),
    CheckConstraint(
        "status IN ('active', 'exhausted', 'frozen', 'expired', 'cancelled')", name="status"
    ),
)
Index("ix_package_record_client", package_record.c.business_id, package_record.c.client_id)
Index("ix_package_record_package", package_record.c.business_id, package_record.c.package_id)
Index(
    "ix_package_record_expiry",
    package_record.c.expires_on,
    postgresql_where=package_record.c.status.in_(["active", "exhausted"]),
)

record_service = Table(
    "record_service",
    metadata,
    Column("record_id", String(64), ForeignKey(package_record.c.record_id), primary_key=True),
    Column("service_id", String(64), primary_key=True),
    Column("sessions_total", Integer, comment="null for unlimited"),
    Column("sessions_used", Integer, nullable=False, server_default="0"),
    CheckConstraint("sessions_used >= 0", name="used_not_negative"),
    CheckConstraint(
        "sessions_total IS NULL OR sessions_used <= sessions_total", name="used_within_total"
    ),
)

record_event = Table(
    "record_event",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("record_id", String(64), ForeignKey(package_record.c.record_id), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", JSONB),
    Column("booking_id", String(64)),
    Column("detail", JSONB),
)
Index("ix_record_event_record", record_event.c.record_id, record_event.c.id)

usable_change = Table(
    "usable_change",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("client_id", String(64), primary_key=True),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="Clients a record of which appeared or became usable, until redemption looks again",
)

waiting_event = Table(
    "waiting_event",
    metadata,
    Column("seq", BigInteger, Identity(), primary_key=True, comment="Arrival order"),
    Column("business_id", String(64), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("topic", String(64), nullable=False),
    Column("envelope", JSONB, nullable=False),
    Column("package_id", String(64), comment="An assignment waits for its package"),
    Column("record_id", String(64), comment="An edit waits for its record"),
    Column("wait_until", DateTime(timezone=True), nullable=False),
    UniqueConstraint("business_id", "event_id"),
    CheckConstraint("(package_id IS NULL) <> (record_id IS NULL)", name="one_dependency"),
    comment="Assignments and edits that arrived before the package or record they name",
)
Index(
    "ix_waiting_event_record",
    waiting_event.c.business_id,
    waiting_event.c.record_id,
    postgresql_where=waiting_event.c.record_id.isnot(None),
)
