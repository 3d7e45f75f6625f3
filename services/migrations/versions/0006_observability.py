"""trace context on outbox rows; a BRIN index to prune the inbox by time

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 14:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

SCHEMAS = ("catalog", "invoicing", "records", "redemption")


def upgrade() -> None:
    for schema in SCHEMAS:
        op.add_column(
            'outbox',
            sa.Column(
                'traceparent',
                sa.String(length=55),
                nullable=True,
                comment='W3C trace context the relay sends on',
            ),
            schema=schema,
        )
        op.add_column(
            'outbox', sa.Column('tracestate', sa.String(length=512), nullable=True), schema=schema
        )
        op.create_index(
            'ix_inbox_handled_at',
            'inbox',
            ['handled_at'],
            unique=False,
            schema=schema,
            postgresql_using='brin',
        )


def downgrade() -> None:
    for schema in SCHEMAS:
        op.drop_index('ix_inbox_handled_at', table_name='inbox', schema=schema)
        op.drop_column('outbox', 'tracestate', schema=schema)
        op.drop_column('outbox', 'traceparent', schema=schema)
