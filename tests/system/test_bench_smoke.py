"""The benchmark command runs end to end at a tiny size, so it cannot rot (no timing is judged)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from bench.kafka import group_in_use
from services.kernel.settings import Settings
from tests.conftest import Infra

pytestmark = pytest.mark.infra
ROOT = Path(__file__).resolve().parents[2]
TINY = ["--events", "600", "--records", "30", "--businesses", "10", "--runs", "1"]
TINY += ["--naive-events", "100", "--latency-seconds", "1"]


async def test_the_benchmark_runs_and_every_check_passes(real_infra: Infra, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": real_infra.postgres.url}
    # The benchmark recreates the booking topics and runs the redemption group itself: on a
    # cluster where the session's redemption service runs, it brings its own broker instead.
    options = Settings(kafka_bootstrap_servers=real_infra.bootstrap).kafka_options()
    if await group_in_use(options, "redemption"):
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    else:
        env["KAFKA_BOOTSTRAP_SERVERS"] = real_infra.bootstrap
    out = tmp_path / "latest.md"
    bench = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench",
        *TINY,
        "--workdir",
        str(tmp_path / "work"),
        "--out",
        str(out),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(bench.communicate(), timeout=240)
    tail = "\n".join(output.decode(errors="replace").splitlines()[-40:])
    assert bench.returncode == 0, tail
    table = out.read_text()
    for contender in ("limit", "naive", "ours-1", "ours-2"):
        assert f"run 1, {contender} checker: OK" in table, table
    assert "FAILED" not in table
