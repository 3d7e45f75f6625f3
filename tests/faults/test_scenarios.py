"""Issue 5's scenarios against real Kafka and PostgreSQL, services as separate processes.

Each checks the end state against the ledger of what it produced (tests/faults/ledger.py),
not against the services' own counters. Sizes: tests/faults/scale.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from services.kernel.settings import Settings
from services.ops.reset import reset_group
from tests.conftest import Infra
from tests.faults import ledger
from tests.faults.bookings import bookings, business_with_clients
from tests.faults.conftest import Spawn
from tests.faults.replay import replay_in_order
from tests.faults.scale import Outcome, size
from tests.support import events
from tests.support.flow import Platform
from tests.support.kafka import Reader, body, of_business, produce

pytestmark = [pytest.mark.infra, pytest.mark.timeout(size(900, 3600))]
PLENTY = 100_000


Message = tuple[str, bytes | dict[str, Any], bytes | None]


def _messages(evs: list[dict[str, Any]]) -> list[Message]:
    return [(e["event_type"], e, e["data"]["client_id"].encode()) for e in evs]


async def _settled(platform: Platform, w: Any, wait_s: float = 240) -> list[str]:
    handled = await ledger.wait_handled(platform.engine, ledger.produced_ids(w), wait_s)
    assert handled == len(ledger.produced_ids(w)), (
        f"{handled} of {len(ledger.produced_ids(w))} handled"
    )
    await asyncio.sleep(1)  # let the relays publish what the last batches wrote
    return await ledger.problems(platform.engine, w)


async def test_1_a_duplicate_storm_has_one_outcome_per_booking(
    platform: Platform, spawn: Spawn
) -> None:
    started = time.monotonic()
    n = size(1_000, 10_000)
    business, clients, _setup = await business_with_clients(platform, 40, PLENTY)
    w = bookings(business, clients, n, seed=1)
    created = [b.created for b in w.bookings]
    resent = created[::5]  # 20% again, same event ids
    spawn()
    spawn()
    await produce(platform.bootstrap, _messages(created + resent))
    found = await _settled(platform, w)
    async with platform.engine.connect() as conn:
        deliveries = await conn.scalar(
            text("SELECT sum(deliveries) FROM redemption.inbox WHERE event_id = ANY(:ids)"),
            {"ids": [uuid.UUID(e["event_id"]) for e in created]},
        )
    assert found == []
    assert deliveries == len(created) + len(resent)
    Outcome(
        "1 duplicate storm",
        f"{n} bookings + {len(resent)} resent, 2 processes",
        f"{n} outcomes, 0 double redemptions, {len(resent)} duplicates recognised",
        started,
    ).record()


async def test_2_crashes_between_commit_and_offset_commit_double_nothing(
    real_infra: Infra, platform: Platform, spawn: Spawn
) -> None:
    started = time.monotonic()
    crashes = size(3, 200)
    business, clients, _setup = await business_with_clients(platform, 20, PLENTY)
    w = bookings(business, clients, crashes * 10, seed=2)
    for i in range(crashes):
        chunk = w.bookings[i * 10 : (i + 1) * 10]
        marker = chunk[0].booking_id
        once = real_infra.workdir / f"crash-{business}-{i}"
        process = spawn(
            PACKAGES_FAULT_CRASH_MARKER=f'"{marker}"', PACKAGES_FAULT_CRASH_ONCE_FILE=str(once)
        )
        await produce(platform.bootstrap, _messages([b.created for b in chunk]))
        assert process.wait_exit(90) == -signal.SIGKILL, process.log_tail()
    spawn()
    assert await _settled(platform, w) == []
    Outcome(
        "2 crash window",
        f"{crashes} SIGKILLs after commit, before offset commit",
        "0 double effects; outbox outcomes = bookings",
        started,
    ).record()


async def _replay_in_order(
    real_infra: Infra, w: Any, setup: list[dict[str, Any]]
) -> dict[str, int]:
    """Sessions used per client after the same events in order on a clean database."""
    return await replay_in_order(real_infra.postgres.url, setup + w.all_events(), w.business_id)


async def test_3_a_consumer_killed_every_two_seconds_ends_as_an_in_order_replay(
    real_infra: Infra, platform: Platform, spawn: Spawn
) -> None:
    started = time.monotonic()
    n = size(600, 10_000)
    business, clients, setup = await business_with_clients(platform, 30, PLENTY)
    w = bookings(business, clients, n, seed=3, edit_share=0.3, end_share=0.3)
    process = spawn()
    feeding = asyncio.create_task(_trickle(platform.bootstrap, w.all_events(), seconds=size(6, 40)))
    ids = ledger.produced_ids(w)
    handled, kills = 0, 0
    while handled < len(ids) and kills < 500:
        # Each process gets to consume (joining its group takes a rebalance) and then runs for
        # 2 s before it is killed: killing it sooner would only ever kill it mid-join.
        handled = await _progress(platform, ids, beyond=handled)
        await asyncio.sleep(2)
        process.stop(signal.SIGKILL)
        kills += 1
        process = spawn()
        handled = await ledger.wait_handled(platform.engine, ids, timeout=0)
    await feeding
    assert await _settled(platform, w) == []
    in_order = await _replay_in_order(real_infra, w, setup)
    async with platform.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT p.client_id, s.sessions_used FROM records.package_record p"
                " JOIN records.record_service s USING (record_id) WHERE p.business_id = :b"
            ),
            {"b": business},
        )
        used = {str(r[0]): int(r[1]) for r in rows}
    assert used == in_order
    Outcome(
        "3 kill loop",
        f"{len(ledger.produced_ids(w))} mixed events; SIGKILL after each 2 s of consuming",
        f"{kills} kill-restarts until all applied; end state = in-order replay",
        started,
    ).record()


async def _progress(platform: Platform, ids: list[str], beyond: int) -> int:
    """Wait (up to 30 s) until more than `beyond` of the events are handled; how many are."""
    deadline = time.monotonic() + 30
    handled = beyond
    while handled <= beyond and handled < len(ids) and time.monotonic() < deadline:
        handled = await ledger.wait_handled(platform.engine, ids, timeout=0)
        await asyncio.sleep(0.2)
    return handled


async def _trickle(bootstrap: str, evs: list[dict[str, Any]], seconds: float) -> None:
    """Produce the events spread over `seconds`, in order."""
    chunks = max(1, int(seconds * 5))
    step = max(1, len(evs) // chunks)
    for i in range(0, len(evs), step):
        await produce(bootstrap, _messages(evs[i : i + step]))
        await asyncio.sleep(0.2)


async def test_4_scaling_one_three_one_loses_and_doubles_nothing(
    platform: Platform, spawn: Spawn
) -> None:
    started = time.monotonic()
    n = size(2_000, 20_000)
    business, clients, _setup = await business_with_clients(platform, 50, PLENTY)
    w = bookings(business, clients, n, seed=4, edit_share=0.1, end_share=0.1)
    evs = w.all_events()
    first = spawn()
    third = len(evs) // 3
    await _trickle(platform.bootstrap, evs[:third], seconds=size(3, 10))
    extra = [spawn(), spawn()]
    await _trickle(platform.bootstrap, evs[third : 2 * third], seconds=size(4, 15))
    for p in extra:
        p.stop()
    await _trickle(platform.bootstrap, evs[2 * third :], seconds=size(3, 10))
    assert await _settled(platform, w) == []
    assert first.alive(), first.log_tail()
    Outcome(
        "4 rebalance churn",
        f"{len(evs)} events, processes 1 -> 3 -> 1",
        "0 lost, 0 doubled, no crash loop",
        started,
    ).record()


async def test_5_a_broker_restart_mid_stream_loses_nothing(
    real_infra: Infra, platform: Platform, spawn: Spawn
) -> None:
    if not real_infra.kafka.restartable:
        pytest.skip("needs the Kafka broker this session started")
    started = time.monotonic()
    n = size(600, 5_000)
    business, clients, _setup = await business_with_clients(platform, 30, PLENTY)
    w = bookings(business, clients, n, seed=5, end_share=0.1)
    evs = w.all_events()
    process = spawn()
    await platform.send(*evs[:10])  # consuming before the broker goes
    await produce(platform.bootstrap, _messages(evs[10 : len(evs) // 2]))
    real_infra.kafka.restart()
    await produce(platform.bootstrap, _messages(evs[len(evs) // 2 :]))
    handled = await ledger.wait_handled(platform.engine, ledger.produced_ids(w), 180)
    assert handled == len(evs), process.log_tail(60)
    assert await _settled(platform, w) == []
    Outcome(
        "5 broker restart",
        f"{len(evs)} events, broker stopped and started mid-stream",
        "every event applied exactly once, no manual action",
        started,
    ).record()


async def test_6_killed_connections_and_a_database_outage_half_apply_nothing(
    real_infra: Infra, platform: Platform, spawn: Spawn
) -> None:
    if not real_infra.postgres.restartable:
        pytest.skip("needs the PostgreSQL this session started")
    started = time.monotonic()
    n = size(800, 10_000)
    outage = size(5, 30)
    business, clients, _setup = await business_with_clients(platform, 30, PLENTY)
    w = bookings(business, clients, n, seed=6, end_share=0.2)
    evs = w.all_events()
    spawn()
    async with Reader(
        platform.bootstrap, ["booking.created.dlq", "booking.status_changed.dlq"]
    ) as dlq:
        killer = asyncio.create_task(_terminate_backends(platform, seconds=size(4, 20)))
        await _trickle(platform.bootstrap, evs[: len(evs) // 2], seconds=size(4, 20))
        killed = await killer
        real_infra.postgres.stop()
        await produce(platform.bootstrap, _messages(evs[len(evs) // 2 :]))
        await asyncio.sleep(outage)
        real_infra.postgres.start()
        await platform.engine.dispose()
        assert await _settled(platform, w) == []
        dead = await dlq.until(of_business(business), 1, timeout=2)
    assert dead == []
    Outcome(
        "6 database faults",
        f"{len(evs)} events; backends killed, then {outage} s down",
        f"{killed} connections killed; nothing half-applied, nothing dead-lettered",
        started,
    ).record()


async def _terminate_backends(platform: Platform, seconds: float) -> int:
    """Kill the services' connections mid-transaction, again and again; how many were killed."""
    killed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with platform.engine.connect() as conn:
            killed += int(
                await conn.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = 'packages' AND state = 'idle in transaction'"
                        " AND pid <> pg_backend_pid()"
                    )
                )
                or 0
            )
            await conn.commit()
        await asyncio.sleep(0.05)
    return killed


async def test_7_a_hot_record_is_redeemed_exactly_its_sessions(
    platform: Platform, spawn: Spawn
) -> None:
    started = time.monotonic()
    business, [client], _setup = await business_with_clients(platform, 1, 100)
    w = bookings(business, [client], 1_000, seed=7)
    spawn()
    spawn()
    # Keys spread the client's bookings over partitions, so both processes compete for it.
    created = [b.created for b in w.bookings]
    await produce(
        platform.bootstrap,
        [(e["event_type"], e, f"k{n % 12}".encode()) for n, e in enumerate(created)],
    )
    assert await ledger.wait_handled(platform.engine, ledger.produced_ids(w)) == len(created)
    async with platform.engine.connect() as conn:
        redeemed = await conn.scalar(
            text("SELECT count(*) FROM redemption.redemption WHERE business_id = :b"),
            {"b": business},
        )
        used = await conn.scalar(
            text(
                "SELECT sum(s.sessions_used) FROM records.record_service s"
                " JOIN records.package_record p USING (record_id) WHERE p.business_id = :b"
            ),
            {"b": business},
        )
        rows = await conn.execute(
            text(
                "SELECT topic, count(*) AS n FROM redemption.outbox"
                " WHERE causation_id = ANY(:ids) GROUP BY topic"
            ),
            {"ids": [uuid.UUID(e["event_id"]) for e in created]},
        )
        outcomes: dict[str, int] = {r.topic: r.n for r in rows}
    assert (redeemed, used) == (100, 100)
    assert outcomes["booking.package_applied"] == 100
    assert outcomes["booking.package_not_applied"] == 900
    Outcome(
        "7 hot record",
        "1 record of 100 sessions, 1000 bookings over 12 keys, 2 processes",
        f"{redeemed} redemptions, {used} sessions used, 900 not applied",
        started,
    ).record()


async def test_8_status_changes_before_their_bookings_end_as_in_order(
    platform: Platform, spawn: Spawn
) -> None:
    started = time.monotonic()
    n = size(300, 1_000)
    business, clients, _setup = await business_with_clients(platform, 20, PLENTY)
    w = bookings(business, clients, n, seed=8, end_share=1.0)
    spawn()
    early = [b.events[-1] for b in w.bookings]
    await produce(platform.bootstrap, _messages(early))
    await ledger.wait_handled(platform.engine, [e["event_id"] for e in early])
    await produce(platform.bootstrap, _messages([b.created for b in w.bookings]))
    assert await _settled(platform, w) == []
    async with platform.engine.connect() as conn:
        restorations = await conn.scalar(
            text(
                "SELECT count(*) FROM redemption.restoration t JOIN redemption.redemption r"
                " ON r.id = t.redemption_id WHERE r.business_id = :b"
            ),
            {"b": business},
        )
    assert restorations == 0
    Outcome(
        "8 out of order",
        f"{n} bookings, each cancel/no-show before its creation",
        "end state = in order; 0 restorations without a redemption",
        started,
    ).record()


async def test_9_poison_is_parked_quickly_and_the_rest_flows(
    platform: Platform, spawn: Spawn
) -> None:
    started = time.monotonic()
    n = size(1_000, 10_000)
    business, clients, _setup = await business_with_clients(platform, 40, PLENTY)
    w = bookings(business, clients, n, seed=9)
    created = [b.created for b in w.bookings]
    victim = created[n // 2]
    spawn(PACKAGES_FAULT_FAIL_EVENT_ID=victim["event_id"])
    await platform.send(created[0])  # the process has joined its group and consumes
    schema_violation = events.booking(business, "bk-bad", client_id=clients[0])
    del schema_violation["data"]["service_id"]
    key = clients[0].encode()
    poison: list[Message] = [
        ("booking.created", b"\xff\x00 not json", key),
        ("booking.created", schema_violation, key),
    ]
    async with Reader(platform.bootstrap, ["booking.created.dlq"]) as dlq:
        await produce(
            platform.bootstrap,
            [*_messages(created[1 : n // 2]), *poison, *_messages(created[n // 2 :])],
        )
        sent = time.monotonic()
        parked = await dlq.until(
            lambda r: r.value in (b"\xff\x00 not json",) or business.encode() in (r.value or b""),
            3,
            timeout=60,
        )
        within = time.monotonic() - sent
    codes = sorted(dict(r.headers)["x-error-code"].decode() for r in parked)
    assert codes == ["handler_error", "invalid", "not_json"]
    for r in parked:
        headers = dict(r.headers)
        assert headers["x-original-topic"] == b"booking.created"
        assert int(headers["x-attempts"]) >= 1
        assert headers["x-error"]
    assert within < 10
    victim_booking = w.bookings[n // 2]
    w.bookings.remove(victim_booking)  # parked, so it never applies
    assert await _settled(platform, w) == []
    assert await ledger.wait_no_lag(platform.bootstrap, "redemption") == 0
    Outcome(
        "9 poison",
        f"3 poison among {n} good",
        f"all parked in {within:.1f} s with headers; every good one applied; lag 0",
        started,
    ).record()


async def test_10_a_relay_crash_after_publishing_repeats_only_same_ids(
    real_infra: Infra, platform: Platform, spawn: Spawn
) -> None:
    started = time.monotonic()
    n = size(200, 2_000)
    business, clients, _setup = await business_with_clients(platform, 20, PLENTY)
    w = bookings(business, clients, n, seed=10)
    once = real_infra.workdir / f"relay-crash-{business}"
    async with Reader(platform.bootstrap, ["booking.package_applied"]) as reader:
        crashing = spawn(PACKAGES_FAULT_RELAY_CRASH_ONCE_FILE=str(once))
        await produce(platform.bootstrap, _messages([b.created for b in w.bookings]))
        assert crashing.wait_exit(90) == -signal.SIGKILL, crashing.log_tail()
        spawn()
        # Copies of what the crash repeated do not count towards the n outcomes awaited.
        seen = await reader.until(
            of_business(business),
            n,
            timeout=120,
            settle=3,
            distinct=lambda r: body(r)["event_id"],
        )
    ids = [body(r)["event_id"] for r in seen]
    assert len(set(ids)) == n  # one event per booking, whatever was published twice
    assert len(ids) > len(set(ids))  # the crash did repeat some: with their same ids
    assert {body(r)["data"]["booking_id"] for r in seen} == {b.booking_id for b in w.bookings}
    assert await _settled(platform, w) == []
    Outcome(
        "10 relay crash",
        f"{n} bookings; SIGKILL between publish and mark-sent",
        f"{len(ids) - len(set(ids))} events repeated, all with their first event_id",
        started,
    ).record()


async def test_11_a_group_reset_to_earliest_changes_nothing(
    platform: Platform, spawn: Spawn
) -> None:
    started = time.monotonic()
    n = size(300, 3_000)
    business, clients, _setup = await business_with_clients(platform, 20, PLENTY)
    w = bookings(business, clients, n, seed=11, edit_share=0.2, end_share=0.2)
    process = spawn()
    await produce(platform.bootstrap, _messages(w.all_events()))
    assert await _settled(platform, w) == []
    before = await _snapshot(platform, business, ledger.produced_ids(w))
    process.stop()
    await reset_group(Settings(), "redemption", "earliest")
    spawn()
    await asyncio.sleep(2)
    assert await ledger.wait_no_lag(platform.bootstrap, "redemption", timeout=120) == 0
    assert await _snapshot(platform, business, ledger.produced_ids(w)) == before
    assert await ledger.problems(platform.engine, w) == []
    Outcome(
        "11 replay",
        f"{len(ledger.produced_ids(w))} events re-read from the earliest offset",
        "nothing changed (inbox); DLQ replay: tests/system/test_ops.py",
        started,
    ).record()


async def _snapshot(platform: Platform, business: str, ids: list[str]) -> Any:
    """Redemptions, outbound events and sessions used of a business."""
    async with platform.engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM redemption.redemption WHERE business_id = :b),"
                    " (SELECT count(*) FROM redemption.outbox WHERE causation_id = ANY(:ids)),"
                    " (SELECT sum(s.sessions_used) FROM records.record_service s"
                    "   JOIN records.package_record p USING (record_id) WHERE p.business_id = :b)"
                ),
                {"b": business, "ids": [uuid.UUID(i) for i in ids]},
            )
        ).one()
