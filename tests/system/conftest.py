"""What the system tests share: the platform that sends events and waits for their fate."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Infra
from tests.support.flow import Platform
from tests.support.processes import ServiceProcess


@pytest.fixture
def platform(real_infra: Infra, services: dict[str, ServiceProcess], engine: Any) -> Platform:
    """The platform, with the four services running."""
    return Platform(real_infra.bootstrap, engine)
