"""A process's logs: one JSON object a line (the default) or plain text for a terminal.

Each line names its service and, where known, the event (`event_id`, `business_id`, topic,
partition, offset) and the trace (`trace_id`). Message bodies and secrets are never logged.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

from services.kernel import tracing

TEXT_FORMAT = "%(asctime)s %(levelname)s %(service)s %(name)s %(message)s"


class _Context(logging.Filter):
    """Adds the service's name and the current trace id to every record."""

    def __init__(self, service: str, *, traced: bool) -> None:
        super().__init__()
        self._service = service
        self._traced = traced

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        if self._traced and not hasattr(record, "trace_id"):
            trace_id = tracing.current_trace_id()
            if trace_id is not None:
                record.trace_id = trace_id
        return True


def configure(
    service: str,
    fmt: Literal["json", "text"],
    level: str,
    *,
    traced: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Send every logger's records to stderr in `fmt`; `traced` adds the current trace id."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_Context(service, traced=traced))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
