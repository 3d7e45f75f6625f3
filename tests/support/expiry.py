"""Two records-service processes' expiry timers, driven by a clock set days ahead."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from services.kernel.service import Service
from services.kernel.settings import Settings
from services.kernel.timers import run_once
from services.records import handlers
from services.records.tables import kernel
from tests.conftest import Infra


async def expire_with_two_processes(infra: Infra, days_ahead: int) -> int:
    """Run both processes' expiry rounds at once until neither finds work; total expired."""
    settings = Settings(kafka_bootstrap_servers=infra.bootstrap, database_url=infra.postgres.url)
    handle = handlers.Records(settings.early_event_wait_s).handle_batch
    processes = [Service("records", kernel, handle, settings=settings) for _ in "ab"]
    for p in processes:
        await p.start()
    later = datetime.now(UTC) + timedelta(days=days_ahead)
    total = 0
    try:
        while True:
            done = await asyncio.gather(
                *(run_once(p, "expiry", handlers.expire_due, later) for p in processes)
            )
            total += sum(done)
            if not any(done):
                break
    finally:
        for p in processes:
            await p.stop()
    return total
