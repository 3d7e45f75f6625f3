"""The operator tools against the real pair: DLQ replay, a message's fate, resetting a group."""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.settings import Settings
from services.ops import reading
from services.ops.fate import Sighting, fate
from services.ops.position import MAX_METADATA_CHARS, Position
from services.ops.replay import GROUP, Selection, replay
from services.ops.reset import GroupActiveError, reset_group
from services.ops.subscriptions import SUBSCRIPTIONS
from tests.conftest import Infra
from tests.support import events
from tests.support.flow import Platform
from tests.support.kafka import Reader, keyed, produce
from tests.support.processes import ROOT, ServiceProcess

pytestmark = pytest.mark.infra
INVOICES = "invoice.published"
INVOICES_DLQ = "invoice.published.dlq"
FROM = r"from invoice\.published\[\d+\]@\d+"


def _settings(infra: Infra) -> Settings:
    return Settings(kafka_bootstrap_servers=infra.bootstrap, database_url=infra.postgres.url)


def _mine(*event_ids: str) -> Selection:
    return Selection(event_ids=frozenset(event_ids))


async def _fate_until(
    settings: Settings,
    event_id: str,
    done: Callable[[list[Sighting]], bool],
) -> list[Sighting]:
    deadline = time.monotonic() + 60
    while True:
        seen = await fate(settings, event_id)
        if done(seen) or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.5)


async def _park(
    bootstrap: str,
    event: dict[str, Any],
    key: bytes,
    *,
    code: str,
    error: str,
    partition: int,
    offset: int,
    extra: list[tuple[str, bytes]],
) -> None:
    """Put a message into invoice.published.dlq as the kernel parks it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(
            INVOICES_DLQ,
            orjson.dumps(event),
            key=key,
            headers=[
                *extra,
                ("x-error-code", code.encode()),
                ("x-error", error.encode()),
                ("x-attempts", b"3"),
                ("x-original-topic", INVOICES.encode()),
                ("x-original-partition", str(partition).encode()),
                ("x-original-offset", str(offset).encode()),
                ("x-consumer", b"invoicing"),
            ],
        )
    finally:
        await producer.stop()


async def _ends(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    tps = await reading.partitions(Settings(kafka_bootstrap_servers=bootstrap), [topic])
    kafka = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await kafka.start()
    try:
        ends: dict[TopicPartition, int] = await kafka.end_offsets(tps)
        return ends
    finally:
        await kafka.stop()


async def _committed(bootstrap: str, group: str) -> dict[TopicPartition, tuple[int, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: (o.offset, o.metadata) for tp, o in found.items()}


async def _lag(bootstrap: str, group: str, topics: tuple[str, ...]) -> int:
    committed = await _committed(bootstrap, group)
    lag = 0
    for topic in topics:
        for tp, end in (await _ends(bootstrap, topic)).items():
            lag += end - max(committed.get(tp, (0, ""))[0], 0)
    return lag


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(sql), params) or 0)


async def _packages(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run the `packages` console script; its exit code and output."""
    script = Path(sys.executable).with_name("packages")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "services.cli"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def test_the_tools_know_every_topic_each_service_reads() -> None:
    for service, topics in SUBSCRIPTIONS.items():
        app = importlib.import_module(f"services.{service}.app")
        read = {t for s in app.service.broker.subscribers for t in s.topic_names}
        assert read == set(topics), service


def test_a_replay_position_keeps_the_letters_a_filter_passed_over() -> None:
    position = Position()
    for offset in range(10):
        position.examined(offset, taken=offset % 3 == 0)
    committed = Position.parse(*position.commit())
    assert committed.offset == 10
    assert committed.pending == {1, 2, 4, 5, 7, 8}
    assert committed.start() == 1
    assert committed.replayed(3)
    assert not committed.replayed(4)
    assert not committed.replayed(10)


def test_a_replay_position_forgets_what_the_log_no_longer_holds() -> None:
    trimmed = Position(offset=100, pending={5, 60, 70})
    assert trimmed.fit(50, 120) == 60  # retention deleted offset 5
    assert trimmed.pending == {60, 70}
    assert trimmed.replayed(80)
    made_anew = Position(offset=100, pending={60})
    assert made_anew.fit(0, 3) is None  # the topic starts its offsets again
    assert not made_anew.replayed(2)
    assert Position(offset=40).fit(50, 120) == 50


def test_a_replay_position_too_scattered_to_list_goes_back_to_what_it_cannot_list() -> None:
    position = Position()
    for offset in range(0, 20_000, 2):
        position.examined(offset, taken=False)
        position.examined(offset + 1, taken=True)
    offset, metadata = position.commit()
    assert len(metadata) <= MAX_METADATA_CHARS
    back = Position.parse(offset, metadata)
    assert 0 < offset < 20_000
    assert back.pending == set(range(0, offset, 2))  # everything at or after offset is read again


async def test_fate_reports_a_poison_invoice_as_dead_lettered_with_its_error_and_origin(
    real_infra: Infra, services: dict[str, ServiceProcess]
) -> None:
    settings = _settings(real_infra)
    poison = events.invoice(events.new_business(), invoice_id="inv-no-client")
    del poison["data"]["client_id"]
    await produce(real_infra.bootstrap, [(INVOICES, poison, b"cli-ana")])
    seen = await _fate_until(settings, poison["event_id"], bool)
    assert len(seen) == 1, services["invoicing"].log_tail()
    assert re.fullmatch(
        r"invoice\.published\.dlq: dead-lettered invalid — data\.client_id: Field required"
        rf" \(attempts 1, {FROM}\)",
        str(seen[0]),
    ), seen


async def test_replaying_an_invoice_that_is_still_broken_sends_it_back_to_the_dlq(
    real_infra: Infra, services: dict[str, ServiceProcess]
) -> None:
    settings = _settings(real_infra)
    broken = events.invoice(
        events.new_business(), lines=[{**events.package_line("l1"), "quantity": "2"}]
    )
    await produce(real_infra.bootstrap, [keyed(INVOICES, broken)])
    first = await _fate_until(settings, broken["event_id"], bool)
    assert [s.place for s in first] == [INVOICES_DLQ], services["invoicing"].log_tail()
    assert "data.lines.0.package.quantity: Input should be a valid integer" in first[0].what

    report = await replay(settings, INVOICES, _mine(broken["event_id"]))

    assert report.replayed == 1
    again = await _fate_until(settings, broken["event_id"], lambda s: len(s) == 2)
    assert [s.place for s in again] == [INVOICES_DLQ, INVOICES_DLQ]
    origins = [re.search(FROM, s.what) for s in again]
    assert all(origins)
    assert len({o.group() for o in origins if o}) == 2  # read twice from invoice.published


async def test_a_replay_applies_a_dead_lettered_invoice_exactly_once(
    real_infra: Infra, services: dict[str, ServiceProcess], engine: AsyncEngine
) -> None:
    settings = _settings(real_infra)
    platform = Platform(real_infra.bootstrap, engine)
    business = events.new_business()
    await platform.send(events.plan(business), events.package(business))
    invoice = events.invoice(business)  # two Relax 10: two records
    key = f"cli-{uuid.uuid4().hex}".encode()
    trace = ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    # As if parked while invoicing had a bug, since fixed: the message itself is fine.
    await _park(
        real_infra.bootstrap,
        invoice,
        key,
        code="handler_error",
        error="RuntimeError: a bug since fixed",
        partition=2,
        offset=41,
        extra=[trace],
    )

    async with Reader(real_infra.bootstrap, [INVOICES]) as reader:
        report = await replay(settings, INVOICES, _mine(invoice["event_id"]))
        sent = await reader.until(lambda r: r.key == key, 1, timeout=30)

    assert report.replayed == 1
    assert [(r.partition, r.value, list(r.headers)) for r in sent] == [
        (2, orjson.dumps(invoice), [trace])
    ]
    assert await platform.handled(invoice) == ("applied", None)
    assert len(await platform.records(business)) == 2
    seen = [str(s) for s in await fate(settings, invoice["event_id"])]
    assert len(seen) == 2
    assert re.fullmatch(
        r"invoicing: applied \(delivered once; invoice\.published\[2\]@\d+, .+\)", seen[0]
    )
    assert seen[1] == (
        "invoice.published.dlq: dead-lettered handler_error — RuntimeError: a bug since fixed"
        " (attempts 3, from invoice.published[2]@41)"
    )

    second = await replay(settings, INVOICES, _mine(invoice["event_id"]))
    assert second.replayed == 0

    forced = await replay(settings, INVOICES, _mine(invoice["event_id"]), from_start=True)
    assert forced.replayed == 1
    seen_again = await _fate_until(
        settings, invoice["event_id"], lambda s: any("delivered 2 times" in str(x) for x in s)
    )
    assert "invoicing: applied (delivered 2 times: 1 duplicate skipped;" in str(seen_again[0])
    assert len(await platform.records(business)) == 2


async def test_a_dry_run_sends_nothing_and_filters_pick_by_error_code_and_event_type(
    real_infra: Infra, services: dict[str, ServiceProcess]
) -> None:
    settings = _settings(real_infra)
    bootstrap = real_infra.bootstrap
    business = events.new_business()
    key = f"dry-{uuid.uuid4().hex}".encode()
    missing = events.invoice(business, invoice_id="inv-no-client")
    del missing["data"]["client_id"]
    buggy = events.invoice(business, invoice_id="inv-buggy")
    await produce(bootstrap, [(INVOICES, b"{not json", key), (INVOICES, missing, key)])
    await _park(
        bootstrap,
        buggy,
        key,
        code="handler_error",
        error="RuntimeError: boom",
        partition=0,
        offset=7,
        extra=[],
    )
    async with Reader(bootstrap, [INVOICES_DLQ]) as reader:
        letters = await reader.until(lambda r: r.key == key, 3, timeout=60)
    assert len(letters) == 3, services["invoicing"].log_tail()
    at = {dict(r.headers)["x-error-code"].decode(): (r.partition, r.offset) for r in letters}
    assert set(at) == {"not_json", "invalid", "handler_error"}
    position_before = await _committed(bootstrap, GROUP)
    invoices_before = await _ends(bootstrap, INVOICES)
    dlq_before = await _ends(bootstrap, INVOICES_DLQ)

    everything = await replay(settings, INVOICES, dry_run=True)
    invalid = await replay(settings, INVOICES, Selection(error_code="invalid"), dry_run=True)
    typed = await replay(settings, INVOICES, Selection(event_type=INVOICES), dry_run=True)
    one = await replay(settings, INVOICES, dry_run=True, limit=1)

    def taken(report: Any) -> set[tuple[int, int]]:
        return {(t.partition, t.offset) for t in report.taken}

    assert set(at.values()) <= taken(everything)
    assert everything.replayed == 0
    assert all(everything.by_code[code] >= 1 for code in at)
    assert sum(everything.by_code.values()) == len(everything.taken)
    assert taken(invalid) & set(at.values()) == {at["invalid"]}
    assert {t.error_code for t in invalid.taken} == {"invalid"}
    assert taken(typed) & set(at.values()) == {at["invalid"], at["handler_error"]}
    assert {t.event_type for t in typed.taken} == {INVOICES}  # undecodable values have none
    assert len(one.taken) == 1
    assert await _committed(bootstrap, GROUP) == position_before
    assert await _ends(bootstrap, INVOICES) == invoices_before
    assert await _ends(bootstrap, INVOICES_DLQ) == dlq_before

    both = frozenset({missing["event_id"], buggy["event_id"]})
    fixed = await replay(settings, INVOICES, Selection(error_code="handler_error", event_ids=both))
    assert [t.event_id for t in fixed.taken] == [buggy["event_id"]]
    assert fixed.skipped >= 2  # the undecodable one and the invalid one among them
    # What the filter passed over is still there for the next replay, with another filter.
    later = await replay(settings, INVOICES, _mine(missing["event_id"]))
    assert [t.event_id for t in later.taken] == [missing["event_id"]]
    assert (await replay(settings, INVOICES, _mine(buggy["event_id"]))).replayed == 0


async def test_fate_tells_duplicates_rejections_and_what_it_never_saw(
    real_infra: Infra, services: dict[str, ServiceProcess], engine: AsyncEngine
) -> None:
    settings = _settings(real_infra)
    platform = Platform(real_infra.bootstrap, engine)
    business = events.new_business()
    await platform.send(events.plan(business), events.package(business))
    invoice = events.invoice(business)
    await platform.send(invoice)
    await platform.send(invoice, wait=False)  # the platform resends it

    seen = await _fate_until(settings, invoice["event_id"], lambda s: "delivered 2 times" in str(s))

    assert len(seen) == 1
    assert re.fullmatch(
        r"invoicing: applied \(delivered 2 times: 1 duplicate skipped;"
        r" invoice\.published\[\d+\]@\d+, handled \d{4}-\d\d-\d\dT[\d:]{8}\+00:00\)",
        str(seen[0]),
    ), seen
    starter = events.new_business()
    await platform.send(events.plan(starter, "starter"))
    refused = events.package(starter)
    await platform.send(refused)
    [rejected] = await fate(settings, refused["event_id"])
    assert str(rejected).startswith(
        "catalog: rejected not_entitled — plan starter does not include packages"
        " (delivered once; package.created["
    )
    assert await fate(settings, str(uuid.uuid4())) == []


async def test_the_commands_print_fates_plan_replays_and_refuse_to_reset_a_running_service(
    real_infra: Infra, services: dict[str, ServiceProcess]
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": real_infra.bootstrap, "DATABASE_URL": real_infra.postgres.url}
    poison = events.invoice(events.new_business())
    del poison["data"]["client_id"]
    await produce(real_infra.bootstrap, [(INVOICES, poison, b"cli-ana")])
    await _fate_until(_settings(real_infra), poison["event_id"], bool)

    code, out = await _packages("fate", poison["event_id"], env=env)
    assert code == 0, out
    assert "invoice.published.dlq: dead-lettered invalid — data.client_id: Field required" in out
    code, out = await _packages("fate", str(uuid.uuid4()), env=env)
    assert (code, out.strip().endswith(": not seen")) == (1, True), out
    code, out = await _packages(
        "dlq", "replay", INVOICES, "--event-id", poison["event_id"], "--dry-run", env=env
    )
    assert code == 0, out
    assert "would replay 1 of invoice.published.dlq to invoice.published (invalid 1)" in out
    assert poison["event_id"] in out
    code, out = await _packages("reset-group", "redemption", "--yes", env=env)
    assert code == 1, out
    assert "refused: consumer group redemption is" in out
    assert "stop every redemption process first" in out


async def test_a_reset_group_refuses_a_running_service_and_rereading_changes_nothing(
    real_infra: Infra, services: dict[str, ServiceProcess], engine: AsyncEngine
) -> None:
    settings = _settings(real_infra)
    platform = Platform(real_infra.bootstrap, engine)
    business = events.new_business()
    await platform.send(events.plan(business), events.package(business))
    invoice = events.invoice(business)
    await platform.send(invoice)
    with pytest.raises(GroupActiveError, match="stop every invoicing process first"):
        await reset_group(settings, "invoicing")

    # Lines waiting for their package settle on a timer: let them, so that nothing moves below.
    waiting = "SELECT count(*) FROM invoicing.pending_line WHERE state = 'waiting'"
    for _ in range(60):
        if not await _scalar(engine, waiting):
            break
        await asyncio.sleep(0.5)
    tables = ("invoicing.inbox", "invoicing.outbox", "records.package_record")
    deliveries = "SELECT deliveries FROM invoicing.inbox WHERE event_id = :id"
    before = [await _scalar(engine, f"SELECT count(*) FROM {t}") for t in tables]
    delivered = await _scalar(engine, deliveries, id=uuid.UUID(invoice["event_id"]))

    invoicing = services["invoicing"]
    invoicing.stop()
    try:
        deadline = time.monotonic() + 60  # a member that did not say goodbye times out
        while True:
            try:
                moves = await reset_group(settings, "invoicing")
                break
            except GroupActiveError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
    finally:
        invoicing.start()

    assert [m.topic for m in moves] == list(SUBSCRIPTIONS["invoicing"])
    assert next(m for m in moves if m.topic == INVOICES).behind_after >= 1
    deadline = time.monotonic() + 120
    while await _lag(real_infra.bootstrap, "invoicing", SUBSCRIPTIONS["invoicing"]):
        assert time.monotonic() < deadline, invoicing.log_tail()
        await asyncio.sleep(1)
    assert await _scalar(engine, deliveries, id=uuid.UUID(invoice["event_id"])) == delivered + 1
    assert [await _scalar(engine, f"SELECT count(*) FROM {t}") for t in tables] == before
    assert len(await platform.records(business)) == 2
