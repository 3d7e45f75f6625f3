"""How far replays have read a DLQ partition, and the letters a filter left behind there.

The replay group's committed offset says "read up to here"; the commit's metadata lists the
offsets below it that a filter passed over, so that a later replay with another filter still
finds them while the letters already replayed are never sent twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Kafka refuses commit metadata over `offset.metadata.max.bytes` (4096 by default).
MAX_METADATA_CHARS = 3500


@dataclass
class Position:
    """A DLQ partition's replay position: `offset` read so far, `pending` passed over below it."""

    offset: int | None = None
    pending: set[int] = field(default_factory=set)

    @classmethod
    def parse(cls, offset: int, metadata: str | None) -> Position:
        """Read a committed offset (-1 or less: none) and its metadata."""
        if offset < 0:
            return cls()
        return cls(offset, {o for o in _decode(metadata or "") if o < offset})

    def start(self) -> int | None:
        """Where the next replay reads from (None: the beginning)."""
        return min(self.pending) if self.pending else self.offset

    def fit(self, first: int, end: int) -> int | None:
        """Forget what the log no longer holds; where the next replay reads from (None: first).

        Retention deletes the oldest letters; a topic made anew starts its offsets again.
        """
        if self.offset is not None and self.offset > end:
            self.offset, self.pending = None, set()
        self.pending = {o for o in self.pending if o >= first}
        start = self.start()
        return None if start is None else max(start, first)

    def replayed(self, offset: int) -> bool:
        """The letter at `offset` was replayed by an earlier run."""
        return self.offset is not None and offset < self.offset and offset not in self.pending

    def examined(self, offset: int, *, taken: bool) -> None:
        """Note that the letter at `offset` was replayed (taken) or passed over."""
        if taken:
            self.pending.discard(offset)
        else:
            self.pending.add(offset)
        self.offset = max(self.offset or 0, offset + 1)

    def commit(self) -> tuple[int, str]:
        """The offset and metadata to commit.

        When the passed-over letters are too scattered to list, the offset goes back to the
        first one left out: those after it are read again, and any replayed among them are
        sent again, which each service's inbox recognises as a duplicate.
        """
        assert self.offset is not None
        ranges = _ranges(sorted(self.pending))
        text = ""
        for first, last in ranges:
            item = str(first) if first == last else f"{first}-{last}"
            longer = f"{text},{item}" if text else item
            if len(longer) > MAX_METADATA_CHARS:
                return first, text
            text = longer
        return self.offset, text


def _ranges(offsets: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for o in offsets:
        if ranges and ranges[-1][1] == o - 1:
            ranges[-1] = (ranges[-1][0], o)
        else:
            ranges.append((o, o))
    return ranges


def _decode(text: str) -> set[int]:
    found: set[int] = set()
    for item in filter(None, text.split(",")):
        first, _, last = item.partition("-")
        try:
            found.update(range(int(first), int(last or first) + 1))
        except ValueError:
            return set()  # not ours: replay from the committed offset as if nothing was left
    return found
