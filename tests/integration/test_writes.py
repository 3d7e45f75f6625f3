"""Independent writes sent as one statement land as if sent one by one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kernel.rows import Columns, insert_rows, unpack
from services.kernel.writes import Writes

ITEM: Columns = (("id", "int"), ("name", "text"))
NOTE: Columns = (("item_id", "int"), ("body", "text"))
INSERT_ITEMS = insert_rows("pg_temp.item", ITEM)
INSERT_NOTES = insert_rows("pg_temp.note", NOTE)
RENAME = text(
    f"UPDATE pg_temp.item i SET name = v.name FROM ({unpack(ITEM)}) AS v WHERE i.id = v.id"
)


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as c:
        await c.execute(text("CREATE TEMP TABLE item (id int PRIMARY KEY, name text)"))
        await c.execute(
            text("CREATE TEMP TABLE note (item_id int NOT NULL REFERENCES item (id), body text)")
        )
        await c.execute(text("INSERT INTO item VALUES (1, 'one')"))
        yield c
        await c.rollback()


async def _all(conn: AsyncConnection, query: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await conn.execute(text(query))]


async def test_every_write_lands_in_one_statement(conn: AsyncConnection) -> None:
    writes = Writes()
    writes.add(INSERT_ITEMS, [(2, "two"), (3, "three")])
    writes.add(RENAME, [(1, "uno")], unmatched="no such item")
    # The notes name an item inserted by the same statement: its foreign key is checked after.
    writes.add(INSERT_NOTES, [(2, "new"), (1, "renamed")])
    writes.add(INSERT_NOTES, [])  # nothing to write is no part at all

    await writes.run(conn)

    assert await _all(conn, "SELECT id, name FROM item ORDER BY id") == [
        (1, "uno"),
        (2, "two"),
        (3, "three"),
    ]
    assert await _all(conn, "SELECT item_id, body FROM note ORDER BY item_id") == [
        (1, "renamed"),
        (2, "new"),
    ]


async def test_a_write_is_sent_once(conn: AsyncConnection) -> None:
    writes = Writes()
    writes.add(INSERT_ITEMS, [(2, "two")])
    await writes.run(conn)
    await writes.run(conn)  # nothing left: no duplicate key

    assert await _all(conn, "SELECT count(*) FROM item") == [(2,)]


@pytest.mark.parametrize("alone", [True, False], ids=["alone", "with others"])
async def test_a_row_that_changes_nothing_fails_the_writes(
    conn: AsyncConnection, alone: bool
) -> None:
    writes = Writes()
    if not alone:
        writes.add(INSERT_ITEMS, [(2, "two")])
    writes.add(RENAME, [(1, "uno"), (9, "nine")], unmatched="an item is missing")

    with pytest.raises(LookupError, match="an item is missing"):
        await writes.run(conn)


async def test_an_unchecked_write_may_change_nothing(conn: AsyncConnection) -> None:
    writes = Writes()
    writes.add(INSERT_ITEMS, [(2, "two")])
    writes.add(RENAME, [(9, "nine")])

    await writes.run(conn)

    assert await _all(conn, "SELECT id, name FROM item ORDER BY id") == [(1, "one"), (2, "two")]
