"""Fault-injection hooks for the fault suite; inert unless their settings are given."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from contracts.base import Envelope
from services.kernel.kernel import BatchHandler, RawRecord
from services.kernel.unit_of_work import UnitOfWork


def _die_once(once_file: Path) -> None:
    """SIGKILL this process unless `once_file` says it already did."""
    try:
        once_file.touch(exist_ok=False)
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def crash_after_commit(
    records: Sequence[RawRecord], marker: str | None, once_file: Path | None
) -> None:
    """SIGKILL this process between the database commit and the offset commit, once per file."""
    if not marker or once_file is None:
        return
    needle = marker.encode()
    if any(r.value and needle in r.value for r in records):
        _die_once(once_file)


def crash_after_publish(once_file: Path | None) -> Callable[[], None]:
    """A relay hook: SIGKILL after publishing a round and before marking it sent, once."""
    return (lambda: _die_once(once_file)) if once_file is not None else (lambda: None)


def failing_for(handler: BatchHandler, event_id: str | None) -> BatchHandler:
    """The handler, made to raise whenever its batch holds the event `event_id` (a bug)."""
    if not event_id:
        return handler

    async def handle(uow: UnitOfWork, events: Sequence[Envelope[Any]]) -> None:
        if any(str(e.event_id) == event_id for e in events):
            raise RuntimeError(f"injected failure for event {event_id}")
        await handler(uow, events)

    return handle
