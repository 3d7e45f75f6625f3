"""The inbox and outbox every service keeps in its own schema."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID


@dataclass(frozen=True)
class KernelTables:
    """A service's inbox (what it has handled) and outbox (what it must publish)."""

    inbox: Table
    outbox: Table


def kernel_tables(metadata: MetaData) -> KernelTables:
    """Declare the inbox and outbox in `metadata`'s schema."""
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(64), primary_key=True),
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("event_type", String(128), nullable=False),
        Column("kafka_partition", Integer, nullable=False),
        Column("kafka_offset", BigInteger, nullable=False),
        Column("outcome", String(16), nullable=False, server_default="applied"),
        Column(
            "deliveries",
            Integer,
            nullable=False,
            server_default="1",
            comment="Times it arrived; every one after the first was a duplicate",
        ),
        Column("reason", String(64)),
        Column("detail", Text),
        Column("handled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("topic", String(128), nullable=False),
        Column("key", String(128)),
        Column("payload", LargeBinary, nullable=False),
        Column("causation_id", UUID(as_uuid=True)),
        Column("traceparent", String(55), comment="W3C trace context the relay sends on"),
        Column("tracestate", String(512)),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True)),
    )
    # Pruning finds old inbox rows by time; a BRIN index costs the inserts almost nothing.
    Index("ix_inbox_handled_at", inbox.c.handled_at, postgresql_using="brin")
    Index(
        "ix_outbox_unsent",
        outbox.c.id,
        postgresql_where=text("sent_at IS NULL"),
    )
    return KernelTables(inbox=inbox, outbox=outbox)
