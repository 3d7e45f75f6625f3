"""Hostile payloads through the topics: refused or dead-lettered, memory bounded, consumer alive."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import psutil
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from contracts.codec import MAX_MESSAGE_BYTES
from contracts.topics import dlq
from services.kernel.dead_letters import (
    ERROR,
    ERROR_CODE,
    ORIGINAL_OFFSET,
    ORIGINAL_TOPIC,
    VALUE_OMITTED,
)
from services.ops.topics import DLQ_MAX_MESSAGE_BYTES
from tests.conftest import Infra
from tests.support import events
from tests.support.flow import SERVICE_OF, Platform
from tests.support.kafka import Reader
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.infra

Event = dict[str, Any]
RSS_LIMIT = 300 * 1024 * 1024
# A record batch of one record costs its value plus at most this much (header, lengths, key).
BATCH_OVERHEAD = 128


async def _send_raw(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Send (value, key) pairs as they are, tombstones included, in order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, max_request_size=4 * MAX_MESSAGE_BYTES
    )
    await producer.start()
    try:
        for value, key in messages:
            await (await producer.send(topic, value, key=key))
    finally:
        await producer.stop()


async def _max_message_bytes(bootstrap: str, topic: str) -> int:
    """The largest record batch the broker takes on `topic`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [resource] = response.resources
    return next(int(entry[1]) for entry in resource[4] if entry[0] == "max.message.bytes")


@dataclass
class Memory:
    """The highest resident memory a process and its children reached while watched."""

    process: psutil.Process
    peak: int = 0

    def sample(self) -> None:
        """Take one reading."""
        tree = [self.process, *self.process.children(recursive=True)]
        self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))


@contextlib.asynccontextmanager
async def _watching(service: ServiceProcess) -> AsyncIterator[Memory]:
    """Sample the service's memory every 50 ms while the block runs."""
    assert service.proc is not None
    memory = Memory(psutil.Process(service.proc.pid))
    memory.sample()

    async def watch() -> None:
        while True:
            memory.sample()
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        yield memory
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        memory.sample()


def _unique_key() -> bytes:
    """A key of this test's own: the poison and the good message after it share a partition."""
    return f"hostile-{uuid.uuid4().hex}".encode()


def _good_after(topic: str, business: str) -> Event:
    """A well-formed event for the same topic, sent right after the poison."""
    if topic.startswith("booking."):
        return events.booking(business, "bk-after-the-storm")
    if topic == "invoice.published":
        return events.invoice(
            business, lines=[{"line_id": "l1", "type": "product", "sku": "argan-oil-50ml"}]
        )
    return events.package(business)  # no plan yet: it waits for one, and that is an outcome


async def _poison_then_good(
    platform: Platform,
    services: dict[str, ServiceProcess],
    topic: str,
    poison: bytes | None,
) -> tuple[Any, tuple[str, str | None], Memory]:
    """Send poison and a good event on one partition; the letter, the good one's fate, memory."""
    business, key = events.new_business(), _unique_key()
    good = _good_after(topic, business)
    service = services[SERVICE_OF[topic]]
    async with _watching(service) as memory, Reader(platform.bootstrap, [dlq(topic)]) as reader:
        await _send_raw(platform.bootstrap, topic, [(poison, key), (orjson.dumps(good), key)])
        fate = await platform.handled(good)
        letters = await reader.until(lambda r: r.key == key, 1, timeout=60)
    assert len(letters) == 1, service.log_tail()
    assert service.alive(), service.log_tail()
    return letters[0], fate, memory


# -- poison: dead-lettered with a clear reason, the partition moves on ----------------------------


def _booking(**data: Any) -> Event:
    booking = events.booking(events.new_business(), "bk-midnight-massage", client_id="cli-zoé")
    booking["data"].update(data)
    return booking


def _nested(levels: int) -> dict[str, Any]:
    deepest: dict[str, Any] = {}
    for _ in range(levels):
        deepest = {"again": deepest}
    return deepest


def _package_named(name: str) -> bytes:
    package = events.package(events.new_business())
    package["data"]["name"] = name
    return orjson.dumps(package)


@dataclass(frozen=True)
class Hostile:
    """A message no service can take, and the letter it must become."""

    topic: str
    value: Callable[[], bytes | None]
    code: str
    error: str


HOSTILE = {
    "JSON nested ten thousand deep": Hostile(
        "booking.created",
        lambda: orjson.dumps(_booking(notes=[])).replace(b"[]", b"[" * 10_000 + b"]" * 10_000),
        "too_deep",
        "depth limit exceeded",
    ),
    "JSON nested just past our limit": Hostile(
        "booking.created",
        lambda: orjson.dumps(_booking(notes=_nested(40))),
        "too_deep",
        "JSON nested deeper than 32 levels",
    ),
    "an id of two hundred characters": Hostile(
        "booking.created",
        lambda: orjson.dumps(_booking(booking_id="bk-" + "7" * 197)),
        "invalid",
        "data.booking_id: String should have at most 64 characters",
    ),
    "a package name of a hundred thousand characters": Hostile(
        "package.created",
        lambda: _package_named("Relax " * 20_000),
        "invalid",
        "data.name: String should have at most 200 characters",
    ),
    "a version past what a 32-bit column holds": Hostile(
        "booking.created",
        lambda: orjson.dumps(_booking(version=2**40)),
        "invalid",
        "data.version: Input should be less than or equal to 2147483647",
    ),
    "a negative price (the schema's bound, not a rule)": Hostile(
        "booking.created",
        lambda: orjson.dumps(_booking(price={"amount": "-60.00", "currency": "EUR"})),
        "invalid",
        "data.price.amount: Value error, must not be negative",
    ),
    "a package line selling no records": Hostile(
        "invoice.published",
        lambda: orjson.dumps(
            events.invoice(events.new_business(), lines=[events.package_line("l1", quantity=0)])
        ),
        "invalid",
        "data.lines.0.package.quantity: Input should be greater than or equal to 1",
    ),
    "latin-1 bytes": Hostile(
        "booking.created",
        lambda: orjson.dumps(_booking()).decode().encode("latin-1"),
        "not_json",
        "invalid unicode code point",
    ),
    "UTF-16 with a byte order mark": Hostile(
        "booking.created",
        lambda: orjson.dumps(_booking()).decode().encode("utf-16"),
        "not_json",
        "expected value at line 1 column 1",
    ),
    "invalid UTF-8": Hostile(
        "invoice.published",
        lambda: orjson.dumps(events.invoice(events.new_business(), "cli-zoé")).replace(
            "é".encode(), b"\xc3\x28"
        ),
        "not_json",
        "Invalid JSON",
    ),
    "a JSON array of events instead of one": Hostile(
        "booking.created",
        lambda: orjson.dumps([_booking(), _booking()]),
        "not_an_object",
        "the message must be a JSON object",
    ),
    "an empty value (tombstone)": Hostile(
        "invoice.published", lambda: None, "empty", "the message has no value"
    ),
}


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_hostile_message_is_dead_lettered_and_the_next_one_applies(
    platform: Platform, services: dict[str, ServiceProcess], case: Hostile
) -> None:
    poison = case.value()
    letter, fate, memory = await _poison_then_good(platform, services, case.topic, poison)
    headers = dict(letter.headers)
    assert headers[ERROR_CODE].decode() == case.code
    assert case.error in headers[ERROR].decode()
    assert headers[ORIGINAL_TOPIC].decode() == case.topic
    assert int(headers[ORIGINAL_OFFSET]) >= 0
    assert letter.value == poison, "the original bytes, untouched"
    assert fate[0] in ("applied", "deferred")
    assert memory.peak < RSS_LIMIT, f"{memory.peak / 2**20:.0f} MiB"


async def test_a_message_at_the_broker_s_size_limit_is_dead_lettered_whole(
    platform: Platform, services: dict[str, ServiceProcess]
) -> None:
    limit = await _max_message_bytes(platform.bootstrap, "invoice.published")
    # The invoice's PDF sent instead of its event, as large as the broker takes: its letter is
    # that plus our headers, so the DLQ must take more than the topic does.
    size = limit - BATCH_OVERHEAD - len(_unique_key())
    pdf = (b"%PDF-1.7\n" + b"stream\x00\xff\xfe" * size)[:size]
    assert size > 1_000_000
    letter, fate, memory = await _poison_then_good(platform, services, "invoice.published", pdf)
    headers = dict(letter.headers)
    assert headers[ERROR_CODE] == b"not_json"
    if (
        await _max_message_bytes(platform.bootstrap, dlq("invoice.published"))
        >= DLQ_MAX_MESSAGE_BYTES
    ):
        assert letter.value == pdf  # the DLQ as `packages topics` makes it
    else:
        # A DLQ made by other means, at the broker's default: the letter comes without its value.
        assert (letter.value, headers[VALUE_OMITTED]) == (None, str(size).encode())
    assert fate == ("applied", None)
    assert memory.peak < RSS_LIMIT, f"{memory.peak / 2**20:.0f} MiB"


async def test_the_broker_refuses_a_message_above_our_decode_limit(real_infra: Infra) -> None:
    # So no consumer ever meets one here; decode's own limit (tests/unit/test_codec_limits.py)
    # guards brokers configured to take more.
    with pytest.raises(MessageSizeTooLargeError):
        await _send_raw(
            real_infra.bootstrap, "invoice.published", [(b"{" * (MAX_MESSAGE_BYTES + 1), b"big")]
        )


# -- well-formed but outsized: applied or refused by a rule, in bounded time ----------------------


def _ten_thousand_lines(assigned: list[str]) -> list[dict[str, Any]]:
    """Retail and treatments, a package line every hundred, the assigned records to be paid."""
    lines: list[dict[str, Any]] = []
    for n in range(10_000 - len(assigned)):
        if n % 100 == 0:
            package_id = "pkg-relax10" if n % 200 == 0 else "pkg-glow5"
            lines.append(events.package_line(f"p{n}", package_id))
        else:
            kind = "product" if n % 3 else "service"
            lines.append({"line_id": f"l{n}", "type": kind, "sku": f"sku-{n % 250}"})
    lines += [
        {"line_id": f"r{n}", "type": "package_record", "package_record_id": record_id}
        for n, record_id in enumerate(assigned)
    ]
    return lines


async def test_an_invoice_of_ten_thousand_lines_applies_in_bounded_time_and_memory(
    platform: Platform, services: dict[str, ServiceProcess]
) -> None:
    business = events.new_business()
    glow = [{"service_id": "svc-facial", "sessions": 5}]
    await platform.send(
        events.plan(business),
        events.package(business),
        events.package(business, "pkg-glow5", services=glow),
    )
    await platform.send(
        *[
            events.envelope(
                "package.assigned",
                business,
                {"assignment_id": f"asg-{n}", "package_id": "pkg-relax10", "client_id": "cli-ana"},
            )
            for n in range(10)
        ]
    )
    assigned = [r.record_id for r in await platform.records(business, "cli-ana")]
    huge = events.invoice(business, "cli-ana", "inv-wholesale", lines=_ten_thousand_lines(assigned))
    huge["data"]["paid"] = True
    assert len(orjson.dumps(huge)) < MAX_MESSAGE_BYTES
    after = events.invoice(business, "cli-ana", "inv-next-day", lines=[events.package_line("l1")])
    async with _watching(services["invoicing"]) as memory:
        started = time.monotonic()
        await platform.send(huge, after)
        elapsed = time.monotonic() - started
    assert await platform.outcome(huge) == ("applied", None)
    assert await platform.outcome(after) == ("applied", None)
    records = await platform.records(business, "cli-ana")
    assert len(records) == 10 + 100 + 1
    assert sum(r.paid for r in records) == 10 + 100
    assert elapsed < 60, f"{elapsed:.1f} s"
    assert memory.peak < RSS_LIMIT, f"{memory.peak / 2**20:.0f} MiB"
    assert services["invoicing"].alive()


async def test_a_line_selling_a_million_records_is_refused_not_attempted(
    platform: Platform, services: dict[str, ServiceProcess]
) -> None:
    business = events.new_business()
    await platform.send(events.plan(business), events.package(business))
    greedy = events.invoice(business, lines=[events.package_line("l1", quantity=1_000_000)])
    async with _watching(services["invoicing"]) as memory:
        await platform.send(greedy)
    assert await platform.outcome(greedy) == ("rejected", "invalid_quantity")
    assert await platform.records(business) == []
    assert memory.peak < RSS_LIMIT, f"{memory.peak / 2**20:.0f} MiB"


async def test_an_invoice_selling_over_a_thousand_records_in_all_is_refused_whole(
    platform: Platform, services: dict[str, ServiceProcess]
) -> None:
    business = events.new_business()
    await platform.send(events.plan(business), events.package(business))
    # Each line is allowed; together they would ask for 5,000 records in one transaction (and a
    # 1 MiB invoice of such lines for millions): one message must stay a bounded piece of work.
    wholesale = events.invoice(
        business, lines=[events.package_line(f"l{n}", quantity=1000) for n in range(5)]
    )
    started = time.monotonic()
    await platform.send(wholesale)
    assert time.monotonic() - started < 10
    assert await platform.outcome(wholesale) == ("rejected", "too_many_records")
    assert await platform.records(business) == []
    assert services["invoicing"].alive()
