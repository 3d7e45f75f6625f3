"""Every worker can be watched: health, Prometheus metrics that move, traces across Kafka hops."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.topics import dlq
from services.kernel.dead_letters import ORIGINAL_OFFSET
from services.kernel.tracing import TRACEPARENT
from tests.conftest import SERVICES, Infra
from tests.support import events, monitoring
from tests.support.flow import Platform
from tests.support.kafka import Reader, keyed, produce
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.infra
Labels = dict[str, str]


async def scrape(process: ServiceProcess) -> list[tuple[str, Labels, float]]:
    """Every sample of the worker's /metrics, parsed by prometheus-client's own parser."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{process.http_port}/metrics")
    response.raise_for_status()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    ]


async def figure(process: ServiceProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(
        value
        for sample, have, value in await scrape(process)
        if sample == name and labels.items() <= have.items()
    )


async def until(
    process: ServiceProcess,
    name: str,
    holds: Callable[[float], bool],
    timeout: float = 60,  # noqa: ASYNC109 - a deadline on a fact
    **labels: str,
) -> float:
    """Scrape until the metric's figure satisfies `holds`; that figure."""
    deadline = time.monotonic() + timeout
    while True:
        value = await figure(process, name, **labels)
        if holds(value):
            return value
        assert process.alive(), process.log_tail()
        assert time.monotonic() < deadline, f"{name}{labels} stayed at {value}"
        await asyncio.sleep(0.2)


async def health(process: ServiceProcess, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{process.http_port}{path}")


async def test_every_worker_is_live_ready_and_exports_its_metrics(
    services: dict[str, ServiceProcess],
) -> None:
    for name in SERVICES:
        process = services[name]
        deadline = time.monotonic() + 60
        while (ready := await _try(health, process, "/health/ready")) is None or (
            ready.status_code != 200
        ):
            assert time.monotonic() < deadline, ready.text if ready else process.log_tail()
            await asyncio.sleep(0.2)
        assert ready.json() == {"postgres": "ok", "consumer": "ok", "relay": "ok"}
        assert (await health(process, "/health/live")).json() == {"status": "ok"}
        expected = {
            "packages_consumer_lag",
            "packages_outbox_unsent",
            "packages_outbox_oldest_unsent_age_seconds",
            "packages_relay_holder",
            "packages_table_bytes",
            "packages_ready",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
        }
        # The first samples come within a sampling interval of the start.
        while missing := expected - {sample for sample, _, _ in await scrape(process)}:
            assert time.monotonic() < deadline, f"{name} lacks {missing}: {process.log_tail()}"
            await asyncio.sleep(0.2)
        assert await figure(process, "packages_ready", service=name) == 1
    # One process of each service runs: each holds its outbox.
    for name in SERVICES:
        await until(services[name], "packages_relay_holder", lambda v: v == 1, service=name)
    await until(services["catalog"], "packages_early_events_waiting", lambda v: v >= 0)


async def _try(call: Any, *args: Any) -> httpx.Response | None:
    try:
        response: httpx.Response = await call(*args)
    except httpx.TransportError:
        return None
    return response


async def test_lag_rises_while_the_consumer_is_held_and_falls_to_zero(
    real_infra: Infra, services: dict[str, ServiceProcess], engine: AsyncEngine
) -> None:
    redemption = services["redemption"]
    await until(redemption, "packages_consumer_lag", lambda v: v == 0, service="redemption")
    business = events.new_business()
    bookings = [events.booking(business, f"bk-lag-{i}") for i in range(40)]
    # The inbox's lock holds the consumer's next transaction: it fetches, and cannot commit.
    async with engine.connect() as held:
        await held.execute(text("LOCK TABLE redemption.inbox IN ACCESS EXCLUSIVE MODE"))
        await produce(real_infra.bootstrap, [keyed("booking.created", b) for b in bookings])
        await until(
            redemption,
            "packages_consumer_lag",
            lambda v: v >= len(bookings),
            service="redemption",
            topic="booking.created",
        )
        assert (await health(redemption, "/health/live")).status_code == 200
        await held.rollback()
    await until(redemption, "packages_consumer_lag", lambda v: v == 0, service="redemption")
    assert await figure(
        redemption, "packages_messages_total", service="redemption", outcome="applied"
    ) >= len(bookings)
    assert await figure(redemption, "packages_batch_size_count", service="redemption") > 0
    assert (
        await figure(redemption, "packages_batch_transaction_seconds_count", service="redemption")
        > 0
    )


async def test_an_unpublishable_outbox_row_shows_a_growing_age(
    services: dict[str, ServiceProcess], engine: AsyncEngine
) -> None:
    records = services["records"]
    stuck = uuid.uuid4()
    async with engine.begin() as conn:
        # Larger than any record batch the relay's producer builds: it can never be sent.
        await conn.execute(
            text(
                "INSERT INTO records.outbox (event_id, topic, key, payload)"
                " VALUES (:id, 'package_record.updated', 'stuck', :payload)"
            ),
            {"id": stuck, "payload": b"x" * (3 * 1024 * 1024)},
        )
    try:
        first = await until(records, "packages_outbox_oldest_unsent_age_seconds", lambda v: v >= 1)
        await until(records, "packages_outbox_oldest_unsent_age_seconds", lambda v: v > first + 1)
        assert await figure(records, "packages_outbox_unsent", service="records") >= 1
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM records.outbox WHERE event_id = :id"), {"id": stuck}
            )
    await until(records, "packages_outbox_oldest_unsent_age_seconds", lambda v: v == 0)
    await until(records, "packages_outbox_unsent", lambda v: v == 0)


async def test_a_poison_message_raises_the_dead_letter_counter_by_exactly_one(
    real_infra: Infra, services: dict[str, ServiceProcess]
) -> None:
    redemption = services["redemption"]
    labels = {"service": "redemption", "topic": "booking.created", "code": "not_json"}
    before = await figure(redemption, "packages_dead_letters_total", **labels)
    marker = f"poison-{uuid.uuid4()}".encode()
    async with Reader(real_infra.bootstrap, [dlq("booking.created")]) as reader:
        await produce(real_infra.bootstrap, [("booking.created", b"\xff" + marker, b"k")])
        [letter] = await reader.until(lambda r: r.value is not None and marker in r.value, 1)
    assert await figure(redemption, "packages_dead_letters_total", **labels) == before + 1
    # Its log line is one JSON object naming where the message was, never what it held.
    text_lines = redemption.log_path.read_text().splitlines()
    lines = [orjson.loads(line) for line in text_lines if line.startswith("{")]
    offset = int(dict(letter.headers)[ORIGINAL_OFFSET])
    [parked] = [
        line
        for line in lines
        if line.get("error_code") == "not_json" and line.get("offset") == offset
    ]
    assert parked["service"] == "redemption"
    assert parked["topic"] == "booking.created"
    assert {"time", "level", "logger", "message", "partition"} <= parked.keys()
    assert marker.decode() not in redemption.log_path.read_text()


async def test_an_event_ahead_of_what_it_needs_shows_as_waiting(
    platform: Platform, services: dict[str, ServiceProcess]
) -> None:
    business = events.new_business()
    records = services["records"]
    assigned = events.envelope(
        "package.assigned",
        business,
        {"assignment_id": "asg-1", "package_id": "pkg-relax10", "client_id": "cli-ana"},
    )
    await platform.send(events.plan(business), assigned)
    assert await platform.outcome(assigned) == ("deferred", "not_seen_yet")
    await until(records, "packages_early_events_waiting", lambda v: v >= 1, service="records")
    await platform.send(events.package(business))
    assert await platform.settled(assigned) == ("applied", "after_waiting")
    # The gauge follows the table: it counts what still waits, whatever other tests left.
    deadline = time.monotonic() + 30
    while True:
        [(kept,)] = await platform.rows(text("SELECT count(*) FROM records.waiting_event"))
        shown = await figure(records, "packages_early_events_waiting", service="records")
        if shown == kept:
            break
        assert time.monotonic() < deadline, (shown, kept)
        await asyncio.sleep(0.2)


async def test_every_metric_the_rules_and_the_dashboard_read_is_served(
    services: dict[str, ServiceProcess],
) -> None:
    """After the tests above (traffic, a dead letter): each queried series is on some worker."""
    served = {sample for name in SERVICES for sample, _, _ in await scrape(services[name])}
    assert monitoring.queried() <= served, monitoring.queried() - served


async def test_the_trace_context_crosses_the_outbox_to_the_outbound_event(
    real_infra: Infra, services: dict[str, ServiceProcess]
) -> None:
    """A traced redemption process: the inbound trace id leaves on the outbound event."""
    services["redemption"].stop()
    traced = ServiceProcess(
        "redemption", real_infra.env(OTEL_TRACES_EXPORTER="console"), real_infra.workdir
    ).start()
    try:
        business = events.new_business()
        trace_id = uuid.uuid4().hex
        parented = events.booking(business, "bk-traced")
        malformed = events.booking(business, "bk-malformed")
        bare = events.booking(business, "bk-bare")
        sent = {
            "bk-traced": [(TRACEPARENT, f"00-{trace_id}-{'ab' * 8}-01".encode())],
            "bk-malformed": [(TRACEPARENT, b"00-not-a-trace-01")],
            "bk-bare": [],
        }
        async with Reader(real_infra.bootstrap, ["booking.package_not_applied"]) as reader:
            await _produce_with_headers(
                real_infra.bootstrap,
                [(b, sent[b["data"]["booking_id"]]) for b in (parented, malformed, bare)],
            )
            found = await reader.until(
                lambda r: orjson.loads(r.value or b"{}")["data"]["booking_id"] in sent, 3
            )
        parents = {
            orjson.loads(r.value or b"{}")["data"]["booking_id"]: dict(r.headers)[TRACEPARENT]
            for r in found
        }
        assert parents["bk-traced"].decode().split("-")[1] == trace_id
        # Neither a malformed context nor none fails the message: each starts a trace of its own.
        new_traces = {parents[b].decode().split("-")[1] for b in ("bk-malformed", "bk-bare")}
        assert len(new_traces) == 2
        assert trace_id not in new_traces
        traced.stop()  # the SDK flushes its spans as the process ends
        printed = traced.log_path.read_text()
        # The console exporter's spans: the event's, in the inbound trace; its batch's; and
        # the asyncpg instrumentation's spans of the batch's statements.
        assert f'"trace_id": "0x{trace_id}"' in printed
        assert '"name": "redemption batch"' in printed
        assert '"db.system' in printed
    finally:
        traced.stop()
        services["redemption"].start()


async def _produce_with_headers(
    bootstrap: str, messages: list[tuple[dict[str, Any], list[tuple[str, bytes]]]]
) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for event, headers in messages:
            await producer.send_and_wait(
                "booking.created",
                orjson.dumps(event),
                key=event["data"]["client_id"].encode(),
                headers=headers,
            )
    finally:
        await producer.stop()
