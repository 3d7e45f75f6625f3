"""Spans of batches and events, and the trace context kept in the outbox and sent on (SDK's
in-memory exporter, real PostgreSQL)."""

from __future__ import annotations

import uuid

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.kernel import Kernel
from services.kernel.relay import Relay
from services.kernel.tracing import TRACEPARENT, TRACESTATE
from tests.integration.test_kernel import (
    DeadLetters,
    Handler,
    Producer,
    Record,
    _outbox,
    _plan,
    db,  # noqa: F401 - the schema these tests share with the kernel's
    tables,
)
from tests.support import events

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _hex(number: int, digits: int) -> str:
    return format(number, f"0{digits}x")


def _by_message(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {
        str(s.attributes.get("messaging.kafka.offset")): s
        for s in finished
        if s.kind == SpanKind.CONSUMER and s.attributes
    }


async def test_an_event_s_span_continues_its_inbound_trace_and_its_outbound_events_carry_it(
    db: AsyncEngine,  # noqa: F811
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    kernel = Kernel(
        "kernel-test", db, tables, Handler(), DeadLetters(), tracer=provider.get_tracer("test")
    )
    traced, malformed, bare = (str(uuid.uuid4()) for _ in range(3))
    # The handler notes each business once: one business per event.
    business, second, third = (events.new_business() for _ in range(3))
    await kernel.handle(
        [
            Record(
                _plan(business, "free", traced),
                1,
                headers=[
                    (TRACEPARENT, f"00-{TRACE_ID}-{PARENT_ID}-01".encode()),
                    (TRACESTATE, b"vendor=on"),
                ],
            ),
            Record(_plan(second, "free", malformed), 2, headers=[(TRACEPARENT, b"00-zz-01")]),
            Record(_plan(third, "free", bare), 3),
            Record(
                b"{not json", 4, headers=[(TRACEPARENT, f"00-{TRACE_ID}-{PARENT_ID}-01".encode())]
            ),
        ]
    )
    finished = exporter.get_finished_spans()
    by_offset = _by_message(finished)
    batch = next(s for s in finished if s.name == "kernel-test batch")
    # The traced event's span is a child of the inbound context, linked to its batch's span.
    span = by_offset["1"]
    assert _hex(span.context.trace_id, 32) == TRACE_ID
    assert span.parent is not None
    assert _hex(span.parent.span_id, 16) == PARENT_ID
    assert [link.context.span_id for link in span.links] == [batch.context.span_id]
    assert span.attributes is not None
    assert span.attributes["messaging.message.id"] == traced
    # A malformed context is ignored, never a failure: like none, it starts a trace of its own.
    for offset in ("2", "3"):
        assert by_offset[offset].parent is None
        assert _hex(by_offset[offset].context.trace_id, 32) != TRACE_ID
    assert by_offset["2"].context.trace_id != by_offset["3"].context.trace_id
    assert by_offset["4"].status.status_code == StatusCode.ERROR
    # The outbox keeps the event span's context; the relay sends it on as headers.
    [row] = await _outbox(db, traced)
    assert row.traceparent == f"00-{TRACE_ID}-{_hex(span.context.span_id, 16)}-01"
    assert row.tracestate == "vendor=on"
    producer = Producer()
    relay = Relay("kernel-test", db, tables, producer)
    await relay.drain()
    await relay.close()
    sent = {
        orjson.loads(value)["causation_id"]: dict(headers)
        for (_, value), headers in zip(producer.sent, producer.headers, strict=True)
    }
    assert sent[traced] == {
        TRACEPARENT: row.traceparent.encode(),
        TRACESTATE: b"vendor=on",
    }
    assert sent[malformed][TRACEPARENT].decode().split("-")[1] != TRACE_ID


async def test_without_a_tracer_no_context_is_read_or_kept(db: AsyncEngine) -> None:  # noqa: F811
    kernel = Kernel("kernel-test", db, tables, Handler(), DeadLetters())
    event_id = str(uuid.uuid4())
    await kernel.handle(
        [
            Record(
                _plan(events.new_business(), "free", event_id),
                1,
                headers=[(TRACEPARENT, f"00-{TRACE_ID}-{PARENT_ID}-01".encode())],
            )
        ]
    )
    [row] = await _outbox(db, event_id)
    assert row.traceparent is None
    producer = Producer()
    relay = Relay("kernel-test", db, tables, producer)
    await relay.drain()
    await relay.close()
    assert all(TRACEPARENT not in dict(h) for h in producer.headers)
