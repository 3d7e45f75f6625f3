"""The fault scenarios run their own redemption processes; the shared one sits them out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Infra
from tests.support.flow import Platform
from tests.support.processes import ServiceProcess

Spawn = Callable[..., ServiceProcess]


@pytest.fixture
def platform(real_infra: Infra, services: dict[str, ServiceProcess], engine: Any) -> Platform:
    return Platform(real_infra.bootstrap, engine)


@pytest.fixture
def spawn(real_infra: Infra, services: dict[str, ServiceProcess]) -> Iterator[Spawn]:
    """Start redemption processes with extra settings; the shared one is back afterwards."""
    services["redemption"].stop()
    started: list[ServiceProcess] = []

    def start(**settings: str) -> ServiceProcess:
        process = ServiceProcess("redemption", real_infra.env(**settings), real_infra.workdir)
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()
    services["redemption"] = ServiceProcess(
        "redemption", real_infra.env(), real_infra.workdir
    ).start()
