"""Fault-injection hooks for the crash tests; inert unless their settings are given."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path

from services.kernel.kernel import RawRecord


def crash_after_commit(
    records: Sequence[RawRecord], marker: str | None, once_file: Path | None
) -> None:
    """SIGKILL this process between the database commit and the offset commit, once per file."""
    if not marker or once_file is None:
        return
    needle = marker.encode()
    if not any(r.value and needle in r.value for r in records):
        return
    try:
        once_file.touch(exist_ok=False)
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
