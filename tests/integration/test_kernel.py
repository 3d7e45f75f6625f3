"""The kernel's decisions on a real PostgreSQL: dedupe, one transaction, poison, transient retry."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaError
from sqlalchemy import Column, MetaData, String, Table, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.base import Envelope
from contracts.outbound import MessageRejected
from contracts.topics import MESSAGE_REJECTED
from services.kernel.db import NAMING_CONVENTION, make_engine
from services.kernel.kernel import BatchLocks, Kernel, Poison
from services.kernel.relay import Relay
from services.kernel.settings import Settings
from services.kernel.tables import kernel_tables
from services.kernel.unit_of_work import UnitOfWork
from tests.support import events, schemas

SCHEMA = "kernel_test"
metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)
tables = kernel_tables(metadata)
plan_seen = Table(
    "plan_seen",
    metadata,
    Column("business_id", String(64), primary_key=True),
    Column("plan", String(16)),
)


@dataclass
class Record:
    """A consumer record as aiokafka hands it over."""

    value: bytes | None
    offset: int
    topic: str = "business.plan_changed"
    partition: int = 0
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class DeadLetters:
    """Keeps what the kernel parks."""

    parked: list[Poison] = field(default_factory=list)

    async def park(self, poison: Sequence[Poison]) -> None:
        self.parked.extend(poison)


class TransientError(Exception):
    """Looks like a serialization failure to the kernel."""

    sqlstate = "40001"


@dataclass
class Handler:
    """Notes each plan; raises for poison businesses or, a few times, transiently."""

    poison: set[str] = field(default_factory=set)
    transient_failures: int = 0
    calls: int = 0

    async def __call__(self, uow: UnitOfWork, envelopes: Sequence[Envelope[Any]]) -> None:
        self.calls += 1
        for e in envelopes:
            await uow.conn.execute(
                insert(plan_seen).values(business_id=e.business_id, plan=e.data.plan)
            )
            if e.business_id in self.poison:
                raise RuntimeError(f"cannot handle {e.business_id}")
            if e.data.plan == "free":
                uow.reject(e, "free_plan", "free plans are refused here")
        if self.transient_failures:
            self.transient_failures -= 1
            raise TransientError("could not serialize access")


@pytest.fixture(scope="module")
async def db(engine: AsyncEngine) -> AsyncEngine:
    return await schemas.recreate(engine, metadata)


def _plan(business: str, plan: str = "pro", event_id: str | None = None) -> bytes:
    return orjson.dumps(
        events.envelope("business.plan_changed", business, {"plan": plan}, event_id=event_id)
    )


def _kernel(db: AsyncEngine, handler: Handler, dead: DeadLetters) -> Kernel:
    return Kernel("kernel-test", db, tables, handler, dead, max_attempts=2, max_backoff_s=0.05)


async def _seen(db: AsyncEngine, businesses: list[str]) -> int:
    async with db.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(plan_seen)
                .where(plan_seen.c.business_id.in_(businesses))
            )
            or 0
        )


async def _outbox(db: AsyncEngine, event_id: str) -> list[Any]:
    async with db.connect() as conn:
        result = await conn.execute(
            select(tables.outbox).where(tables.outbox.c.causation_id == uuid.UUID(event_id))
        )
        return list(result.all())


async def test_a_redelivered_event_applies_once(db: AsyncEngine) -> None:
    business = events.new_business()
    event_id = str(uuid.uuid4())
    handler, dead = Handler(), DeadLetters()
    kernel = _kernel(db, handler, dead)
    await kernel.handle(
        [
            Record(_plan(business, event_id=event_id), 1),
            Record(_plan(business, event_id=event_id), 2),
        ]
    )
    await kernel.handle([Record(_plan(business, event_id=event_id), 1)])
    assert await _seen(db, [business]) == 1
    assert handler.calls == 1
    assert not dead.parked


@dataclass
class Seen:
    """Notes the businesses of the events it is handed, batch by batch."""

    batches: list[list[str]] = field(default_factory=list)

    async def __call__(self, uow: UnitOfWork, envelopes: Sequence[Envelope[Any]]) -> None:
        self.batches.append([e.business_id for e in envelopes])


@pytest.mark.parametrize("locking", [True, False], ids=["with lock keys", "without"])
async def test_a_batch_of_new_and_redelivered_events_hands_over_only_the_new_in_order(
    db: AsyncEngine, locking: bool
) -> None:
    old, new = [events.new_business() for _ in range(3)], [events.new_business() for _ in range(3)]
    ids = {b: str(uuid.uuid4()) for b in old + new}
    locks = BatchLocks(2, lambda envelopes: [e.business_id for e in envelopes]) if locking else None
    seen = Seen()
    kernel = Kernel("kernel-test", db, tables, seen, DeadLetters(), locks=locks)
    await kernel.handle([Record(_plan(b, event_id=ids[b]), i) for i, b in enumerate(old)])
    mixed = [new[0], old[0], new[1], old[1], old[2], new[2]]
    await kernel.handle([Record(_plan(b, event_id=ids[b]), 10 + i) for i, b in enumerate(mixed)])
    await kernel.handle([Record(_plan(b, event_id=ids[b]), 20 + i) for i, b in enumerate(old)])
    assert seen.batches == [old, new]


async def test_a_poison_message_does_not_sink_the_good_ones(db: AsyncEngine) -> None:
    good = [events.new_business() for _ in range(3)]
    bad = events.new_business()
    handler, dead = Handler(poison={bad}), DeadLetters()
    batch = [Record(_plan(b), n) for n, b in enumerate([good[0], bad, good[1], good[2]])]
    await _kernel(db, handler, dead).handle(batch)
    assert await _seen(db, good) == 3
    assert await _seen(db, [bad]) == 0  # its half-done work rolled back
    assert [(p.record.offset, p.code, p.attempts) for p in dead.parked] == [(1, "handler_error", 2)]
    assert "cannot handle" in dead.parked[0].error


async def test_a_poison_message_is_found_by_halving_the_batch(db: AsyncEngine) -> None:
    good = [events.new_business() for _ in range(63)]
    bad = events.new_business()
    businesses = [*good[:40], bad, *good[40:]]
    handler, dead = Handler(poison={bad}), DeadLetters()
    await _kernel(db, handler, dead).handle([Record(_plan(b), n) for n, b in enumerate(businesses)])
    assert await _seen(db, good) == 63
    assert [p.record.offset for p in dead.parked] == [40]
    # 1 for the batch, 2 per halving down to the poison (6 halvings of 64), 1 more attempt:
    # one message at a time would have taken 65.
    assert handler.calls == 1 + 2 * 6 + 1


async def test_undecodable_records_are_parked_and_the_rest_applies(db: AsyncEngine) -> None:
    good = events.new_business()
    dead = DeadLetters()
    await _kernel(db, Handler(), dead).handle([Record(b"\x00garbage", 7), Record(_plan(good), 8)])
    assert await _seen(db, [good]) == 1
    assert [(p.record.offset, p.code) for p in dead.parked] == [(7, "not_json")]


async def test_a_transient_failure_is_retried_not_dead_lettered(db: AsyncEngine) -> None:
    business = events.new_business()
    handler, dead = Handler(transient_failures=3), DeadLetters()
    await _kernel(db, handler, dead).handle([Record(_plan(business), 1)])
    assert await _seen(db, [business]) == 1
    assert handler.calls == 4
    assert not dead.parked


async def test_a_rejection_is_recorded_and_published_through_the_outbox(db: AsyncEngine) -> None:
    business = events.new_business()
    event_id = str(uuid.uuid4())
    await _kernel(db, Handler(), DeadLetters()).handle(
        [Record(_plan(business, "free", event_id), 1)]
    )
    rows = await _outbox(db, event_id)
    assert [r.topic for r in rows] == ["message.rejected"]
    published = orjson.loads(rows[0].payload)
    assert published["causation_id"] == event_id
    assert MessageRejected.model_validate(published["data"]).reason == "free_plan"
    async with db.connect() as conn:
        outcome = (
            await conn.execute(
                select(tables.inbox.c.outcome, tables.inbox.c.reason).where(
                    tables.inbox.c.event_id == uuid.UUID(event_id)
                )
            )
        ).one()
    assert tuple(outcome) == ("rejected", "free_plan")


async def test_no_outbound_event_exists_for_a_change_that_rolled_back(db: AsyncEngine) -> None:
    bad = events.new_business()
    event_id = str(uuid.uuid4())
    handler = Handler(poison={bad})

    async def reject_then_fail(uow: UnitOfWork, envelopes: Sequence[Envelope[Any]]) -> None:
        uow.reject(envelopes[0], "about_to_fail", "then raises")
        await handler(uow, envelopes)

    kernel = Kernel("kernel-test", db, tables, reject_then_fail, DeadLetters(), max_attempts=1)
    await kernel.handle([Record(_plan(bad, event_id=event_id), 1)])
    assert await _outbox(db, event_id) == []


class Batch:
    """What aiokafka's BatchBuilder is to the relay."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.headers: list[list[tuple[str, bytes]]] = []

    def append(
        self,
        *,
        key: bytes | None,
        value: bytes,
        timestamp: None,
        headers: list[tuple[str, bytes]] = [],  # noqa: B006 - aiokafka's own signature
    ) -> object:
        self.values.append(value)
        self.headers.append(headers)
        return object()


class Producer:
    """Records what it is asked to send, batch by batch, as futures that resolve at once.

    One partition per topic by default, so that the relay's order is the order of the outbox.
    """

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions
        self.sent: list[tuple[str, bytes]] = []
        self.headers: list[list[tuple[str, bytes]]] = []
        self.by_partition: dict[tuple[str, int], list[bytes]] = {}

    async def partitions_for(self, _topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        self.sent += [(topic, value) for value in batch.values]
        self.headers += batch.headers
        self.by_partition.setdefault((topic, partition), []).extend(batch.values)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_the_relay_publishes_in_commit_order_and_marks_rows_sent(db: AsyncEngine) -> None:
    businesses = [events.new_business() for _ in range(3)]
    ids = [str(uuid.uuid4()) for _ in businesses]
    await _kernel(db, Handler(), DeadLetters()).handle(
        [
            Record(_plan(b, "free", i), n)
            for n, (b, i) in enumerate(zip(businesses, ids, strict=True))
        ]
    )
    producer = Producer()
    relay = Relay("kernel-test", db, tables, producer)
    await relay.drain()
    causes = [orjson.loads(v)["causation_id"] for _, v in producer.sent]
    assert [c for c in causes if c in ids] == ids
    assert await relay.drain() == 0
    await relay.close()
    rows = [r for i in ids for r in await _outbox(db, i)]
    assert len(rows) == 3
    assert all(r.sent_at is not None for r in rows)


async def _commit_rejections(db: AsyncEngine, rows: list[tuple[str, str]]) -> None:
    """Commit a `message.rejected` to the outbox for each (key, rejected event id), in order."""
    async with db.begin() as conn:
        uow = UnitOfWork(conn, "kernel-test")
        for key, rejected in rows:
            uow.publish(
                MESSAGE_REJECTED,
                key,
                MessageRejected(
                    rejected_event_id=rejected,
                    rejected_event_type="business.plan_changed",
                    reason="test",
                    detail="",
                ),
                business_id="b-relay",
            )
        await _kernel(db, Handler(), DeadLetters()).write_outbox(uow)


async def test_the_relay_keeps_each_key_on_one_partition_in_outbox_order(
    db: AsyncEngine,
) -> None:
    keys = [f"cli-{n}" for n in range(8)]
    await _commit_rejections(db, [(key, f"{key}/{step}") for step in range(5) for key in keys])
    producer = Producer(partitions=3)
    relay = Relay("kernel-test", db, tables, producer)
    await relay.drain()
    await relay.close()

    partitions_of: dict[str, set[int]] = {}
    steps_of: dict[str, list[int]] = {}
    for (_topic, partition), values in producer.by_partition.items():
        for value in values:
            key, step = orjson.loads(value)["data"]["rejected_event_id"].split("/")
            partitions_of.setdefault(key, set()).add(partition)
            steps_of.setdefault(key, []).append(int(step))
    assert all(len(p) == 1 for p in partitions_of.values())  # a key keeps its partition
    assert len(set().union(*partitions_of.values())) > 1  # and keys are spread over several
    assert steps_of == {key: [0, 1, 2, 3, 4] for key in keys}  # in outbox order


async def _commit_a_plan(db: AsyncEngine) -> str:
    event_id = str(uuid.uuid4())
    await _kernel(db, Handler(), DeadLetters()).handle(
        [Record(_plan(events.new_business(), "free", event_id), 1)]
    )
    return event_id


def _causes(producer: Producer) -> set[str]:
    return {orjson.loads(v)["causation_id"] for _, v in producer.sent}


async def _until(done: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(500):
        if await done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in 5 s")


async def _published(producer: Producer, cause: str) -> bool:
    return cause in _causes(producer)


async def _sent(producer: Producer, n: int) -> bool:
    return len(producer.sent) >= n


async def _two_relays(
    db: AsyncEngine, poll_interval_s: float = 0.001
) -> tuple[Relay, Producer, Relay, Producer]:
    """Two processes' relays of one outbox; the first has drained it and holds its lock."""
    first, second = Producer(), Producer()
    holder = Relay("kernel-test", db, tables, first)
    await holder.drain()
    other = Relay("kernel-test", db, tables, second, poll_interval_s=poll_interval_s)
    return holder, first, other, second


async def test_one_relay_keeps_the_outbox_until_it_closes(db: AsyncEngine) -> None:
    holder, first, other, second = await _two_relays(db)

    waiting = await _commit_a_plan(db)
    assert await other.drain() == 0  # the lock is still the first relay's
    assert waiting not in _causes(second)

    await holder.close()
    await asyncio.sleep(0.01)  # its next look for the lock
    assert await other.drain() >= 1
    assert waiting in _causes(second)
    assert waiting not in _causes(first)
    await other.close()


@contextlib.asynccontextmanager
async def _holder_running(db: AsyncEngine) -> AsyncIterator[tuple[Producer, Relay, str]]:
    """A relay holding the outbox and running, next looking in a minute of its own accord;
    another process's relay, without the lock, whose process has just committed a plan."""
    first = Producer()
    holder = Relay("kernel-test", db, tables, first, poll_interval_s=60)
    other = Relay("kernel-test", db, tables, Producer(), poll_interval_s=60)
    await holder.drain()
    running = asyncio.create_task(holder.run())
    try:
        waiting = await _commit_a_plan(db)
        other.wake()
        yield first, other, waiting
    finally:
        holder.stop()
        await running
        await other.close()


async def test_a_relay_without_the_lock_wakes_the_one_holding_it(db: AsyncEngine) -> None:
    async with _holder_running(db) as (first, other, waiting):
        assert await other.drain() == 0
        await _until(lambda: _published(first, waiting))  # at once, not at the next poll


async def test_a_relay_that_could_not_tell_the_holder_tells_it_at_its_next_drain(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _holder_running(db) as (first, other, waiting):
        tell = other._tell_holder

        async def refused() -> None:
            raise ConnectionError("the database went away")

        monkeypatch.setattr(other, "_tell_holder", refused)
        with pytest.raises(ConnectionError):
            await other.drain()
        monkeypatch.setattr(other, "_tell_holder", tell)
        # Nothing new was committed since, yet the commit it could not tell of is still owed.
        assert await other.drain() == 0
        await _until(lambda: _published(first, waiting))


async def test_a_stopping_relay_publishes_what_is_committed_before_it_ends(
    db: AsyncEngine,
) -> None:
    producer = Producer()
    relay = Relay("kernel-test", db, tables, producer, poll_interval_s=60)
    waiting = await _commit_a_plan(db)
    relay.stop()  # before its loop ever ran a round

    await relay.run()

    assert waiting in _causes(producer)


async def test_a_relay_without_the_lock_looks_for_it_once_per_poll(db: AsyncEngine) -> None:
    holder, _, other, second = await _two_relays(db, poll_interval_s=60)
    assert await other.drain() == 0
    waiting = await _commit_a_plan(db)
    await holder.close()

    # Commits wake it far more often than it polls: it does not ask the server each time.
    assert await other.drain() == 0
    assert waiting not in _causes(second)
    await other.close()


async def test_a_relay_whose_session_ends_lets_another_take_the_outbox(db: AsyncEngine) -> None:
    holder, _, other, second = await _two_relays(db)
    async with db.connect() as conn:
        # The process is gone as far as the server can tell: its session ends, its lock too.
        ended = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                " WHERE locktype = 'advisory' AND objid::text::bigint = :k"
            ),
            {"k": holder._lock_key},
        )
    assert ended == 1

    waiting = await _commit_a_plan(db)
    assert await other.drain() >= 1
    assert waiting in _causes(second)
    with pytest.raises(Exception, match="connection"):
        await holder.drain()  # its connection is gone: it lets it go
    assert await holder.drain() == 0  # and finds the outbox taken
    await other.close()
    await holder.close()


async def test_every_copy_of_an_event_counts_as_a_delivery(db: AsyncEngine) -> None:
    business = events.new_business()
    event_id = str(uuid.uuid4())
    kernel = _kernel(db, Handler(), DeadLetters())
    copy = _plan(business, event_id=event_id)
    await kernel.handle([Record(copy, 1), Record(copy, 2)])
    await kernel.handle([Record(copy, 1)])
    async with db.connect() as conn:
        deliveries = await conn.scalar(
            select(tables.inbox.c.deliveries).where(tables.inbox.c.event_id == uuid.UUID(event_id))
        )
    assert deliveries == 3


@dataclass
class Turns:
    """Reads a business's plan, waits while `hold` is unset, then writes its own."""

    hold: asyncio.Event | None = None
    seen: list[str | None] = field(default_factory=list)
    has_read: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, uow: UnitOfWork, envelopes: Sequence[Envelope[Any]]) -> None:
        for e in envelopes:
            self.seen.append(
                await uow.conn.scalar(
                    select(plan_seen.c.plan).where(plan_seen.c.business_id == e.business_id)
                )
            )
            self.has_read.set()
            if self.hold is not None:
                await self.hold.wait()
            upsert = insert(plan_seen).values(business_id=e.business_id, plan=e.data.plan)
            await uow.conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=["business_id"], set_={"plan": upsert.excluded.plan}
                )
            )


@pytest.mark.parametrize("locking", [True, False], ids=["with lock keys", "without"])
async def test_batches_sharing_a_lock_key_take_turns(db: AsyncEngine, locking: bool) -> None:
    business = events.new_business()
    hold = asyncio.Event()
    first, second = Turns(hold), Turns()

    def by_business(envelopes: Sequence[Envelope[Any]]) -> list[str]:
        return [e.business_id for e in envelopes]

    def kernel(handler: Turns) -> Kernel:
        locks = BatchLocks(1, by_business) if locking else None
        return Kernel("kernel-test", db, tables, handler, DeadLetters(), locks=locks)

    holding = asyncio.create_task(kernel(first).handle([Record(_plan(business, "pro"), 1)]))
    await first.has_read.wait()
    waiting = asyncio.create_task(kernel(second).handle([Record(_plan(business, "enterprise"), 2)]))
    await asyncio.sleep(0.3)
    # With the keys, the second batch's handler waits for the first batch to commit, and then
    # reads what it wrote; without them, it runs at once and reads nothing.
    assert second.seen == ([] if locking else [None])
    hold.set()
    await asyncio.gather(holding, waiting)
    assert second.seen == (["pro"] if locking else [None])


async def test_a_batch_meeting_a_killed_connection_runs_again_on_a_fresh_one(
    db: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # The services' engine does not ping a connection as it leaves the pool.
    url = db.url.render_as_string(hide_password=False)
    engine = make_engine(Settings(database_url=url), pool_size=1, pre_ping=False)
    try:
        handler = Handler()
        kernel = Kernel("kernel-test", engine, tables, handler, DeadLetters(), max_backoff_s=0.05)
        first, second = events.new_business(), events.new_business()
        await kernel.handle([Record(_plan(first), 1)])
        async with engine.connect() as conn:
            pooled = await conn.scalar(text("SELECT pg_backend_pid()"))
        async with db.connect() as admin:
            assert await admin.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": pooled})

        dead = DeadLetters()
        kernel = Kernel("kernel-test", engine, tables, handler, dead, max_backoff_s=0.05)
        await kernel.handle([Record(_plan(second), 2)])

        assert not dead.parked
        assert await _seen(db, [first, second]) == 2
        assert "transient failure, retrying" in caplog.text  # it did meet the killed one
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT pg_backend_pid()")) != pooled
    finally:
        await engine.dispose()


class HeldProducer(Producer):
    """A producer whose deliveries are acknowledged only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[asyncio.Future[None]] = []

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        await super().send_batch(batch, topic, partition=partition)
        held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(held)
        return held


async def _unsent(db: AsyncEngine, prefix: str) -> list[str]:
    """The rejected event ids, starting with `prefix`, of outbox rows not yet marked sent."""
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT convert_from(payload, 'UTF8')::jsonb->'data'->>'rejected_event_id' AS r"
                " FROM kernel_test.outbox WHERE sent_at IS NULL ORDER BY id"
            )
        )
        return [r.r for r in rows if r.r.startswith(prefix)]


async def _drain_leftovers(db: AsyncEngine) -> None:
    """Publish what earlier tests left in the outbox, and let its lock go."""
    relay = Relay("kernel-test", db, tables, Producer())
    await relay.drain()
    await relay.close()


async def _draining_in_rounds_of_two(
    db: AsyncEngine, prefix: str
) -> tuple[Relay, HeldProducer, asyncio.Task[int]]:
    """Six rows of one key committed, a relay draining them in rounds of two as the test
    acknowledges them."""
    await _drain_leftovers(db)
    await _commit_rejections(db, [("one-key", f"{prefix}{step}") for step in range(6)])
    producer = HeldProducer()
    relay = Relay("kernel-test", db, tables, producer, batch=2)
    return relay, producer, asyncio.create_task(relay.drain())


async def test_a_relay_round_goes_only_once_the_one_before_is_acknowledged(
    db: AsyncEngine,
) -> None:
    relay, producer, draining = await _draining_in_rounds_of_two(db, "held/")

    async def unsent() -> list[str]:
        return await _unsent(db, "held/")

    await _until(lambda: _sent(producer, 2))
    await asyncio.sleep(0.2)
    assert len(producer.sent) == 2  # the next round waits for this one's acknowledgement
    producer.pending[0].set_result(None)
    await _until(lambda: _sent(producer, 4))

    async def first_round_marked() -> bool:
        return len(await unsent()) == 4

    # The first round is marked sent while the second is still in flight.
    await _until(first_round_marked)
    assert await unsent() == [f"held/{n}" for n in range(2, 6)]
    producer.pending[1].set_result(None)
    await _until(lambda: _sent(producer, 6))
    producer.pending[2].set_result(None)
    assert await draining == 6
    await relay.close()

    assert await unsent() == []
    steps = [orjson.loads(v)["data"]["rejected_event_id"] for _, v in producer.sent]
    assert steps == [f"held/{n}" for n in range(6)]


async def test_a_failed_acknowledgement_sends_nothing_after_it(db: AsyncEngine) -> None:
    relay, producer, draining = await _draining_in_rounds_of_two(db, "failing/")

    await _until(lambda: _sent(producer, 2))
    producer.pending[0].set_result(None)
    await _until(lambda: _sent(producer, 4))
    producer.pending[1].set_exception(KafkaError("the broker refused the batch"))
    with pytest.raises(KafkaError):
        await draining
    await relay.close()  # closed already, as the failure let the lock go

    # The third round never went, and only the acknowledged first round is marked sent: the
    # second goes again, before the third, when a relay next holds the outbox.
    assert len(producer.sent) == 4
    assert await _unsent(db, "failing/") == [f"failing/{n}" for n in range(2, 6)]
    again = Producer()
    retry = Relay("kernel-test", db, tables, again)
    assert await retry.drain() == 4
    await retry.close()
    steps = [orjson.loads(v)["data"]["rejected_event_id"] for _, v in again.sent]
    assert steps == [f"failing/{n}" for n in range(2, 6)]


class CommitsAsItSends(Producer):
    """Each send comes with a new row committed to the outbox, as under steady load."""

    def __init__(self, db: AsyncEngine) -> None:
        super().__init__()
        self.db = db

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        done = await super().send_batch(batch, topic, partition=partition)
        await _commit_rejections(self.db, [("busy", f"busy/{len(self.sent)}")])
        return done


async def test_a_drain_ends_after_a_short_round_under_steady_load(db: AsyncEngine) -> None:
    await _drain_leftovers(db)
    await _commit_rejections(db, [("busy", "busy/0")])
    relay = Relay("kernel-test", db, tables, CommitsAsItSends(db), batch=2)
    # The round found less than a batch, so the drain ends; what commits meanwhile wakes the
    # relay again in `run`, where a stop can be seen between drains.
    assert await asyncio.wait_for(relay.drain(), timeout=5) == 1
    await relay.close()
    await _drain_leftovers(db)
