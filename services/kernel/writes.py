"""A transaction's independent writes, sent as one statement of data-modifying CTEs.

Each write is a statement that reads its rows from `:rows` (see `rows.insert_rows`). However
many there are, they cost one round trip: `WITH w0 AS (...), w1 AS (...) SELECT ...`.

The parts of one statement all run on the snapshot it started with, and none sees the rows
another writes. Only writes that do not depend on each other may share it: one that needs
another's rows (to update them, or because a unique index must see them gone first) runs
before it, on its own. Foreign keys are fine: they are checked when the statement ends.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kernel.rows import pack

_ROWS = re.compile(r"(?<![:\w]):rows\b")


@dataclass(frozen=True, slots=True)
class _Write:
    statement: TextClause
    rows: str
    # Where every row must touch exactly one row: the error when one does not.
    unmatched: str | None
    count: int


@dataclass
class Writes:
    """Writes gathered during a transaction and sent together by `run`."""

    _parts: list[_Write] = field(default_factory=list)

    def add(
        self,
        statement: TextClause,
        rows: Sequence[Sequence[Any]],
        *,
        unmatched: str | None = None,
    ) -> None:
        """Queue `statement` for these rows (nothing for none).

        With `unmatched`, each row must change exactly one row, or `run` raises LookupError
        with that message.
        """
        if rows:
            self._parts.append(_Write(statement, pack(rows), unmatched, len(rows)))

    async def run(self, conn: AsyncConnection) -> None:
        """Send what was queued, in one statement, and forget it."""
        parts, self._parts = self._parts, []
        if not parts:
            return
        statement = _combined(tuple((p.statement, p.unmatched is not None) for p in parts))
        params = {f"rows{i}": p.rows for i, p in enumerate(parts)}
        counts = (await conn.execute(statement, params)).one()
        # The statement returns the count of each checked part, in order (or 1, for none).
        checked = [p for p in parts if p.unmatched is not None]
        for part, count in zip(checked, counts[: len(checked)], strict=True):
            if count != part.count:
                raise LookupError(part.unmatched)


@functools.lru_cache(maxsize=64)
def _combined(parts: tuple[tuple[TextClause, bool], ...]) -> TextClause:
    """One statement of these parts, each counting the rows it changed if asked to."""
    ctes = []
    counted = []
    for i, (statement, count) in enumerate(parts):
        sql = _ROWS.sub(f":rows{i}", statement.text)
        if count:
            sql += " RETURNING 1"
            counted.append(f"(SELECT count(*) FROM w{i})")
        ctes.append(f"w{i} AS ({sql})")
    return text(f"WITH {', '.join(ctes)} SELECT {', '.join(counted) or '1'}")
