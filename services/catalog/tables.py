"""The catalog's tables (schema `catalog`)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, String, Table, func
from sqlalchemy.dialects.postgresql import JSONB

from services.kernel.db import metadata as make_metadata
from services.kernel.tables import kernel_tables

metadata = make_metadata("catalog")
kernel = kernel_tables(metadata)

business_plan = Table(
    "business_plan",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("changed_at", DateTime(timezone=True), primary_key=True),
    Column("plan", String(16), nullable=False),
    comment="Every plan change of a business: a package event is judged by the plan of its time",
)

package = Table(
    "package",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("package_id", String(64), primary_key=True),
    Column(
        "terms", JSONB, comment="The package as last defined; null until package.created arrives"
    ),
    Column("terms_version", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),
    Column("status_version", Integer, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

waiting_event = Table(
    "waiting_event",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("topic", String(64), nullable=False),
    Column("envelope", JSONB, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("wait_until", DateTime(timezone=True), nullable=False),
    comment="Package events of a business whose plan has not arrived yet",
)

business_settings = Table(
    "business_settings",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("time_zone", String(64), nullable=False),
    Column("no_show", String(16), nullable=False),
    Column("late_cancel_hours", Integer),
    Column("expiring_soon_days", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="A business's time zone, policies and notice lead time (UTC, restore, none, 7 "
    "until its first business.settings_changed)",
)
