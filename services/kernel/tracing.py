"""W3C trace context across Kafka hops, with the OpenTelemetry SDK set up by `OTEL_*` alone.

With no `OTEL_*` variable asking for traces the SDK is never installed and the kernel gets no
tracer: it then starts no span and reads no header, so tracing costs nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_HEADERS = (TRACEPARENT, TRACESTATE)
_PROPAGATOR = TraceContextTextMapPropagator()
log = logging.getLogger(__name__)

# A span's context as it travels: the `traceparent` header and, if any, `tracestate`.
Carrier = tuple[str, str | None]


def wanted() -> bool:
    """True when the standard variables ask for tracing: an exporter or an OTLP endpoint.

    `OTEL_TRACES_EXPORTER=none` traces without exporting: the context still travels.
    """
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(
        env.get(name)
        for name in (
            "OTEL_TRACES_EXPORTER",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        )
    )


def configure(service: str) -> Tracer | None:
    """Install the SDK as `OTEL_*` says (exporter, endpoint, sampler, resource); None if unasked.

    `OTEL_TRACES_EXPORTER` is `otlp` (the default, over HTTP) or `console`; the sampler
    (`OTEL_TRACES_SAMPLER`), the endpoint and `OTEL_SERVICE_NAME` are read by the SDK itself;
    the service's name is the default service name.
    """
    if not wanted():
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(attributes))
    exporters: list[SpanExporter] = []
    for name in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        match name.strip().lower():
            case "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                exporters.append(OTLPSpanExporter())
            case "console":
                exporters.append(ConsoleSpanExporter())
            case "none":
                pass
            case other:
                log.warning("OTEL_TRACES_EXPORTER names an unknown exporter %r: ignored", other)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    except ImportError:  # the instrumentation is optional: spans of our own still go
        pass
    else:
        AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    return trace.get_tracer("packages.kernel")


def extract(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    """The context an inbound message's headers carry: a span's parent. Without one, or with a
    malformed one, an empty context: the message starts a trace of its own."""
    carrier = {
        k: v.decode("latin-1") for k, v in (headers or ()) if k in _HEADERS and v is not None
    }
    return _PROPAGATOR.extract(carrier) if TRACEPARENT in carrier else Context()


def carrier_of(span: Span) -> Carrier | None:
    """What to write on outbound messages so that they continue `span`'s trace."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    parent = carrier.get(TRACEPARENT)
    return (parent, carrier.get(TRACESTATE)) if parent else None


def headers_of(traceparent: str | None, tracestate: str | None) -> list[tuple[str, bytes]]:
    """Kafka headers carrying a stored context."""
    if not traceparent:
        return []
    headers = [(TRACEPARENT, traceparent.encode())]
    if tracestate:
        headers.append((TRACESTATE, tracestate.encode()))
    return headers


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), for the logs; None outside a span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
