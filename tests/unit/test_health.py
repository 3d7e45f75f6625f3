"""A worker's health answers: live while the loop runs, ready only when every check passes."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.kernel.http import health_app
from services.kernel.settings import Settings
from services.kernel.watch import Membership, Watch
from services.redemption.tables import kernel


async def _get(watch: Watch, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=health_app(watch))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        return await client.get(path)


async def test_not_ready_names_each_failing_check_with_503() -> None:
    watch = Watch("redemption", Settings(), kernel)
    watch.membership()
    live = await _get(watch, "/health/live")
    ready = await _get(watch, "/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json() == {
        "postgres": "not connected yet",
        "consumer": "not joined its group yet",
        "relay": "relay loop not running",
    }


async def test_metrics_are_prometheus_text() -> None:
    watch = Watch("redemption", Settings(), kernel)
    await _get(watch, "/health/ready")  # sets packages_ready
    response = await _get(watch, "/metrics")
    assert response.status_code == 200
    families = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"packages_ready", "process_cpu_seconds"} <= families


async def test_a_consumer_rejoining_its_group_stays_ready_within_the_bound() -> None:
    member = Membership()
    assert member.check(bound_s=60) == "not joined its group yet"
    await member.on_partitions_assigned(set())
    assert member.check(bound_s=60) == "ok"
    await member.on_partitions_revoked(set())
    assert member.check(bound_s=60) == "ok"
    member.rebalancing_since = time.monotonic() - 61
    assert member.check(bound_s=60) == "rejoining its group for 61 s"
    await member.on_partitions_assigned(set())
    assert member.check(bound_s=60) == "ok"
