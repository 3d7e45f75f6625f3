"""Real Kafka and PostgreSQL for the whole session: started here, or given by the environment."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy import infra
from deploy.postgres_local import choose_pg_binaries
from services.bootstrap import create_topics, migrate
from services.kernel.db import make_engine
from services.kernel.settings import Settings
from tests.support.processes import ServiceProcess

SERVICES = ("catalog", "invoicing", "records", "redemption")


@dataclass
class Infra:
    """The running pair and how to control them."""

    kafka: infra.KafkaService
    postgres: infra.PostgresService
    workdir: Path

    @property
    def bootstrap(self) -> str:
        """Kafka's bootstrap servers."""
        return self.kafka.bootstrap_servers

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a service process runs with."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DATABASE_URL": self.postgres.url,
            "PACKAGES_SWEEP_INTERVAL_S": "0.2",
            "PACKAGES_RELAY_POLL_INTERVAL_S": "0.2",
            "PACKAGES_RETRY_MAX_BACKOFF_S": "1",
            "PACKAGES_EARLY_EVENT_WAIT_S": "8",
            "PACKAGES_WATCH_INTERVAL_S": "1",
            **extra,
        }


def pytest_report_header() -> str:
    """Say once which PostgreSQL the run uses, and for local binaries which and why."""
    if os.environ.get("DATABASE_URL"):
        return "PostgreSQL: DATABASE_URL"
    if infra.docker_available():
        return "PostgreSQL: a testcontainers container"
    try:
        return str(choose_pg_binaries(announce=False))
    except infra.InfraError as exc:
        return f"PostgreSQL: {exc}"


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """Where this session's servers keep their data and the services their logs.

    Not under pytest's own temporary folder: each pytest session resets that folder's
    permissions, which would shut the unprivileged PostgreSQL out of a concurrent session's data.
    """
    path = Path(tempfile.mkdtemp(prefix="packages-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def real_postgres(workdir: Path) -> Iterator[infra.PostgresService]:
    """A migrated PostgreSQL; never skipped when it fails to start."""
    with infra.postgres(workdir) as postgres:
        os.environ["DATABASE_URL"] = postgres.url
        migrate(postgres.url)
        yield postgres


@pytest.fixture(scope="session")
def real_infra(workdir: Path, real_postgres: infra.PostgresService) -> Iterator[Infra]:
    """Kafka with every topic, and the PostgreSQL above."""
    with infra.kafka(workdir) as kafka:
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
        asyncio.run(create_topics(Settings(**kafka.topic_settings())))
        yield Infra(kafka, real_postgres, workdir)


@pytest.fixture(scope="session")
def services(real_infra: Infra) -> Iterator[dict[str, ServiceProcess]]:
    """The four services running as separate processes, as in production."""
    running = {
        name: ServiceProcess(name, real_infra.env(), real_infra.workdir).start()
        for name in SERVICES
    }
    yield running
    for process in running.values():
        process.stop()


@pytest.fixture(scope="session")
async def engine(real_postgres: infra.PostgresService) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database."""
    eng = make_engine(Settings(database_url=real_postgres.url), pool_size=4)
    yield eng
    await eng.dispose()
