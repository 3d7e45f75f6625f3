"""What unit tests share."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def no_packages_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets counts: PACKAGES_ variables of the test run are put aside."""
    for name in [n for n in os.environ if n.startswith("PACKAGES_")]:
        monkeypatch.delenv(name)
