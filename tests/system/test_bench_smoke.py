"""The benchmark commands run end to end at a tiny size, so they cannot rot (no timing judged)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench.kafka import group_in_use
from services.kernel.settings import Settings
from tests.conftest import Infra

pytestmark = pytest.mark.infra
ROOT = Path(__file__).resolve().parents[2]
TINY = ["--events", "600", "--records", "30", "--businesses", "10", "--runs", "1"]
TINY += ["--naive-events", "100", "--latency-seconds", "1"]
TINY_INVOICES = ["--invoices", "200", "--businesses", "5", "--clients", "40", "--runs", "1"]


async def _run_bench(
    module: str, args: Sequence[str], groups: Sequence[str], real_infra: Infra, tmp_path: Path
) -> str:
    """Run `python -m <module>`; its markdown once it exited 0 (else the output's tail fails)."""
    env = {**os.environ, "DATABASE_URL": real_infra.postgres.url}
    # A benchmark recreates its topics and runs the services' groups itself: on a cluster where
    # the session's services run, it brings its own broker instead.
    options = Settings(kafka_bootstrap_servers=real_infra.bootstrap).kafka_options()
    if any([await group_in_use(options, group) for group in groups]):
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    else:
        env["KAFKA_BOOTSTRAP_SERVERS"] = real_infra.bootstrap
    out = tmp_path / "results.md"
    bench = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
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
    return out.read_text()


async def test_the_benchmark_runs_and_every_check_passes(real_infra: Infra, tmp_path: Path) -> None:
    table = await _run_bench("bench", TINY, ["redemption"], real_infra, tmp_path)
    for contender in ("limit", "naive", "ours-1", "ours-2"):
        assert f"run 1, {contender} checker: OK" in table, table
    assert "FAILED" not in table


async def test_the_invoice_benchmark_runs_and_every_check_passes(
    real_infra: Infra, tmp_path: Path
) -> None:
    text = await _run_bench(
        "bench.invoices", TINY_INVOICES, ["invoicing", "records"], real_infra, tmp_path
    )
    assert "run 1, invoices checker: OK (200 events checked)" in text, text
    assert "| 200 |" in text
    assert "FAILED" not in text
