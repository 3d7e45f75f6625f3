"""Rows sent as one jsonb parameter come back as the values they were, in their order."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.rows import Columns, pack, unpack

COLUMNS: Columns = (
    ("name", "text"),
    ("amount", "numeric"),
    ("n", "bigint"),
    ("flag", "boolean"),
    ("id", "uuid"),
    ("day", "date"),
    ("at", "timestamptz"),
    ("doc", "jsonb"),
)

ROWS: list[tuple[object, ...]] = [
    (
        "Ünïcode \"quoted\" 'single' \\ back / slash 🧖",
        Decimal("12345678901234.5678"),
        2**62,
        True,
        uuid.UUID("7d1b7a7e-0000-4000-8000-000000000001"),
        date(2026, 2, 28),
        datetime(2026, 11, 26, 3, 4, 5, 678901, tzinfo=UTC),
        {"kind": "staff", "id": "s-1", "nested": [1, None, "x"]},
    ),
    (None, None, None, None, None, None, None, None),
    ("", Decimal("-0.10"), -1, False, uuid.UUID(int=0), date(1999, 12, 31), None, []),
]


async def test_every_field_comes_back_exactly_and_none_is_sql_null(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        result = await conn.execute(text(unpack(COLUMNS)), {"rows": pack(ROWS)})
        back = [tuple(row) for row in result]
        nulls = (
            await conn.execute(
                text(f"SELECT count(*) FROM ({unpack(COLUMNS)}) AS v WHERE v.doc IS NULL"),
                {"rows": pack(ROWS)},
            )
        ).scalar_one()

    assert back == ROWS
    assert nulls == 1  # a None document is SQL NULL, not JSON null


async def test_a_thousand_rows_keep_their_order(engine: AsyncEngine) -> None:
    rows = [(f"r{i}", i) for i in range(1000)]
    async with engine.connect() as conn:
        result = await conn.execute(
            text(unpack((("name", "text"), ("n", "int")))), {"rows": pack(iter(rows))}
        )
        assert [tuple(row) for row in result] == rows


def test_a_value_json_cannot_carry_exactly_is_refused() -> None:
    with pytest.raises(TypeError, match="bytes"):
        pack([(b"raw bytes",)])


async def test_a_small_batch_joins_a_table_through_its_index(engine: AsyncEngine) -> None:
    # A batch is planned as a few rows: looking each up beats scanning a table of thousands.
    keys = (("id", "int"),)
    async with engine.connect() as conn:
        await conn.execute(text("CREATE TEMP TABLE item (id int PRIMARY KEY, name text)"))
        await conn.execute(
            text("INSERT INTO item SELECT i, 'item ' || i FROM generate_series(1, 5000) AS i")
        )
        await conn.execute(text("ANALYZE item"))
        plan = "\n".join(
            row[0]
            for row in await conn.execute(
                text(f"EXPLAIN SELECT item.* FROM ({unpack(keys)}) AS k JOIN item USING (id)"),
                {"rows": pack([(i,) for i in range(1, 20)])},
            )
        )
        await conn.rollback()

    assert "Index Scan using item_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan
