"""A worker's log lines: one JSON object each, with its service, event and trace; or text."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from services.kernel import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_json_line_names_time_level_service_logger_and_the_event(
    captured: io.StringIO,
) -> None:
    logs.configure("redemption", "json", "INFO", stream=captured)
    logging.getLogger("services.kernel.kernel").warning(
        "dead-lettering %s",
        "booking.created[2]@7",
        extra={
            "event_id": "e-1",
            "business_id": "b-1",
            "topic": "booking.created",
            "partition": 2,
            "offset": 7,
        },
    )
    [line] = captured.getvalue().splitlines()
    record = orjson.loads(line)
    assert record.pop("time").endswith("+00:00")
    assert record == {
        "level": "WARNING",
        "service": "redemption",
        "logger": "services.kernel.kernel",
        "message": "dead-lettering booking.created[2]@7",
        "event_id": "e-1",
        "business_id": "b-1",
        "topic": "booking.created",
        "partition": 2,
        "offset": 7,
    }


def test_a_traced_line_carries_the_trace_id(captured: io.StringIO) -> None:
    logs.configure("records", "json", "INFO", traced=True, stream=captured)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("x").info("inside")
    logging.getLogger("x").info("outside")
    inside, outside = (orjson.loads(line) for line in captured.getvalue().splitlines())
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in outside


def test_text_is_one_readable_line(captured: io.StringIO) -> None:
    logs.configure("catalog", "text", "INFO", stream=captured)
    logging.getLogger("services.kernel.relay").info("relayed %d", 3)
    line = captured.getvalue().strip()
    assert line.endswith(" INFO catalog services.kernel.relay relayed 3")


def test_the_read_api_process_logs_json_lines_uvicorn_s_own_among_them() -> None:
    script = (
        "import logging; from services.http import app as module; module.app; "
        "logging.getLogger('uvicorn.error').info('Started server process')"
    )
    env = {
        **os.environ,
        "PACKAGES_API_AUTH": "disabled",
        "PACKAGES_LOG_FORMAT": "json",
        "PACKAGES_LOG_LEVEL": "INFO",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    started = [line for line in lines if line["message"] == "Started server process"]
    assert started
    assert (started[0]["logger"], started[0]["service"], started[0]["level"]) == (
        "uvicorn.error",
        "api",
        "INFO",
    )
