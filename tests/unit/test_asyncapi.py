"""Each service's AsyncAPI document in docs/asyncapi is what `faststream docs gen` makes now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("catalog", "invoicing", "records", "redemption")


def generate(service: str, out: Path) -> None:
    """Run `faststream docs gen` for a service with the default settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS",)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "faststream",
            "docs",
            "gen",
            f"services.{service}.app:app",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize("service", SERVICES)
def test_the_kept_asyncapi_document_is_current(service: str, tmp_path: Path) -> None:
    fresh = tmp_path / f"{service}.json"
    generate(service, fresh)
    kept = ROOT / "docs" / "asyncapi" / f"{service}.json"
    assert kept.exists(), f"run: python -m tests.unit.test_asyncapi to write {kept}"
    assert json.loads(kept.read_text()) == json.loads(fresh.read_text()), (
        f"{kept} is stale: run `python -m tests.unit.test_asyncapi` and commit it"
    )


def test_the_documents_describe_the_payloads() -> None:
    document = json.loads((ROOT / "docs" / "asyncapi" / "redemption.json").read_text())
    schemas = document["components"]["schemas"]
    assert "BookingSnapshot" in schemas
    assert "PackageApplied" in schemas
    assert schemas["BookingSnapshot"]["properties"]["booking_id"]["description"]


if __name__ == "__main__":
    for name in SERVICES:
        generate(name, ROOT / "docs" / "asyncapi" / f"{name}.json")
