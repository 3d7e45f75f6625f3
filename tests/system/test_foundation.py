"""The foundation, end to end through Kafka: the slice, duplicates, crashes, poison, outages."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.records.tables import package_record
from tests.conftest import Infra
from tests.support import events
from tests.support.api import Issuer, read_api
from tests.support.kafka import Reader, body, keyed, of_business, produce
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.infra
CREATED = "package_record.created"


async def _count_records(engine: AsyncEngine, business_id: str) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(package_record)
                .where(package_record.c.business_id == business_id)
            )
            or 0
        )


async def _sell_two(
    bootstrap: str, business_id: str, invoice: dict[str, Any], times: int = 1
) -> None:
    await produce(
        bootstrap,
        [
            keyed("business.plan_changed", events.plan(business_id), "business_id"),
            keyed("package.created", events.package(business_id), "package_id"),
        ],
    )
    await asyncio.sleep(0.5)  # the catalog and invoicing consume different topics, in any order
    await produce(bootstrap, [keyed("invoice.published", invoice)] * times)


async def test_an_invoice_for_two_packages_creates_two_records_seen_by_the_read_api(
    real_infra: Infra, services: dict[str, ServiceProcess], engine: AsyncEngine, issuer: Issuer
) -> None:
    business = events.new_business()
    invoice = events.invoice(business)
    async with Reader(real_infra.bootstrap, [CREATED]) as reader:
        await _sell_two(real_infra.bootstrap, business, invoice)
        created = await reader.until(of_business(business), 2, timeout=60)
    assert len(created) == 2, services["invoicing"].log_tail()
    for record in created:
        event = body(record)
        assert event["causation_id"] == invoice["event_id"]
        assert event["data"]["client_id"] == "cli-ana"
        assert event["data"]["services"] == [
            {
                "service_id": "svc-massage-60",
                "sessions_total": 10,
                "sessions_used": 0,
                "sessions_remaining": 10,
            }
        ]
    settings = issuer.settings(database_url=real_infra.postgres.url)
    async with read_api(settings, issuer.token([business])) as client:
        answer = await client.get(f"/v1/businesses/{business}/clients/cli-ana/package-records")
        assert answer.status_code == 200
        listed = answer.json()
        assert sorted(r["package_record_id"] for r in listed) == sorted(
            body(r)["data"]["package_record_id"] for r in created
        )
        assert all(r["services"][0]["sessions_remaining"] == 10 for r in listed)
        other = await client.get(
            f"/v1/businesses/{events.new_business()}/clients/cli-ana/package-records"
        )
        assert other.status_code == 404, "the token names this business only"


async def test_an_invoice_delivered_three_times_still_makes_two_records(
    real_infra: Infra, services: dict[str, ServiceProcess], engine: AsyncEngine
) -> None:
    business = events.new_business()
    invoice = events.invoice(business)
    async with Reader(real_infra.bootstrap, [CREATED]) as reader:
        await _sell_two(real_infra.bootstrap, business, invoice, times=3)
        created = await reader.until(of_business(business), 2, timeout=60, settle=3)
    assert len(created) == 2
    assert await _count_records(engine, business) == 2


async def test_a_crash_between_database_commit_and_offset_commit_doubles_nothing(
    real_infra: Infra, services: dict[str, ServiceProcess], engine: AsyncEngine
) -> None:
    business = events.new_business()
    marker = f"crash-{uuid.uuid4().hex}"
    invoice = events.invoice(business, invoice_id=marker)
    once = real_infra.workdir / f"{marker}.crashed"
    crashing = ServiceProcess(
        "invoicing",
        real_infra.env(
            PACKAGES_FAULT_CRASH_MARKER=marker, PACKAGES_FAULT_CRASH_ONCE_FILE=str(once)
        ),
        real_infra.workdir,
    )
    services["invoicing"].stop()
    crashing.start()
    try:
        async with Reader(real_infra.bootstrap, [CREATED]) as reader:
            await _sell_two(real_infra.bootstrap, business, invoice)
            assert crashing.wait_exit(90) == -9, crashing.log_tail()
            assert once.exists()
            assert await _count_records(engine, business) == 2  # the transaction did commit
            restarted = services["invoicing"] = ServiceProcess(
                "invoicing", real_infra.env(), real_infra.workdir
            ).start()
            created = await reader.until(of_business(business), 2, timeout=60, settle=5)
        assert len(created) == 2, restarted.log_tail()
        assert await _count_records(engine, business) == 2
    finally:
        crashing.stop()


async def test_malformed_messages_go_to_the_dlq_and_the_partition_moves_on(
    real_infra: Infra, services: dict[str, ServiceProcess], engine: AsyncEngine
) -> None:
    business = events.new_business()
    missing_client = events.invoice(business, invoice_id="inv-bad")
    del missing_client["data"]["client_id"]
    good = events.invoice(business, invoice_id="inv-good")
    key = b"same-partition"
    async with Reader(real_infra.bootstrap, ["invoice.published.dlq", CREATED]) as reader:
        await produce(
            real_infra.bootstrap,
            [
                keyed("business.plan_changed", events.plan(business), "business_id"),
                keyed("package.created", events.package(business), "package_id"),
            ],
        )
        await asyncio.sleep(0.5)
        await produce(
            real_infra.bootstrap,
            [
                ("invoice.published", b"{not json at all", key),
                ("invoice.published", missing_client, key),
                ("invoice.published", good, key),
            ],
        )

        def mine(r: Any) -> bool:
            if r.topic.endswith(".dlq"):
                return bool(r.key == key)
            return of_business(business)(r)

        seen = await reader.until(mine, 4, timeout=60, settle=1)
    dead = [r for r in seen if r.topic == "invoice.published.dlq"]
    created = [r for r in seen if r.topic == CREATED]
    assert len(created) == 2
    assert [r.value for r in dead][:1] == [b"{not json at all"]
    headers = [dict(r.headers) for r in dead]
    assert headers[0]["x-error-code"] == b"not_json"
    assert headers[1]["x-error-code"] == b"invalid"
    assert b"data.client_id" in headers[1]["x-error"]
    for h in headers:
        assert h["x-original-topic"] == b"invoice.published"
        assert int(h["x-original-offset"]) >= 0
        assert int(h["x-attempts"]) >= 1


async def test_messages_that_arrive_while_postgres_is_down_apply_when_it_returns(
    real_infra: Infra, services: dict[str, ServiceProcess], engine: AsyncEngine
) -> None:
    if not real_infra.postgres.restartable:
        pytest.skip("needs a PostgreSQL this session started (unset DATABASE_URL)")
    business = events.new_business()
    await _sell_two(real_infra.bootstrap, business, events.invoice(business, invoice_id="inv-0"))
    async with Reader(real_infra.bootstrap, [CREATED, "invoice.published.dlq"]) as reader:
        real_infra.postgres.stop()
        try:
            await produce(
                real_infra.bootstrap,
                [
                    keyed("invoice.published", events.invoice(business, invoice_id=f"inv-{n}"))
                    for n in range(1, 4)
                ],
            )
            await asyncio.sleep(4)
        finally:
            real_infra.postgres.start()
        seen = await reader.until(of_business(business), 8, timeout=90, settle=2)
    created = [body(r) for r in seen if r.topic == CREATED]
    # The relay may publish a row again if the database left before it marked it sent: the
    # copy carries the same event_id, which is what consumers deduplicate on.
    assert len({e["event_id"] for e in created}) == 8
    assert len({e["data"]["package_record_id"] for e in created}) == 8
    assert not [r for r in seen if r.topic.endswith(".dlq")]
    await engine.dispose()  # its pooled connections died with the server
    assert await _count_records(engine, business) == 8
