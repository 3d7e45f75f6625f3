"""The invoicing service's tables (schema `invoicing`)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from services.kernel.db import metadata as make_metadata
from services.kernel.tables import kernel_tables

metadata = make_metadata("invoicing")
kernel = kernel_tables(metadata)

invoice = Table(
    "invoice",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("invoice_id", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("published", Boolean, nullable=False, server_default="false"),
    Column("paid", Boolean, nullable=False, server_default="false"),
    Column("voided", Boolean, nullable=False, server_default="false"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

pending_line = Table(
    "pending_line",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("invoice_id", String(64), primary_key=True),
    Column("line_id", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("package_id", String(64), comment="A package line waits for its package"),
    Column("quantity", Integer),
    Column("record_id", String(64), comment="A record line waits for its record"),
    Column("cause", JSONB, nullable=False, comment="The invoice.published envelope, without lines"),
    Column("wait_until", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False, server_default=text("'waiting'")),
    CheckConstraint("(package_id IS NULL) <> (record_id IS NULL)", name="one_dependency"),
)
