"""What the system tests share: the platform that sends events and waits for their fate, and the
read API as the platform calls it, with a token its issuer really signed."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Infra
from tests.support.api import Issuer, read_api
from tests.support.flow import Platform
from tests.support.processes import ServiceProcess


@pytest.fixture
def platform(real_infra: Infra, services: dict[str, ServiceProcess], engine: Any) -> Platform:
    """The platform, with the four services running."""
    return Platform(real_infra.bootstrap, engine)


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    """The platform's token issuer, with keys made for this test run."""
    with tempfile.TemporaryDirectory(prefix="packages-issuer-") as directory:
        yield Issuer(Path(directory))


@pytest.fixture
async def api(real_infra: Infra, issuer: Issuer) -> AsyncIterator[httpx.AsyncClient]:
    """The read API, called by a platform-wide service."""
    settings = issuer.settings(database_url=real_infra.postgres.url)
    async with read_api(settings, issuer.token()) as client:
        yield client
