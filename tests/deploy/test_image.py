"""The image definition: multi-stage, slim, locked, unprivileged, healthy; its roles exist."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from typer.testing import CliRunner

from services import cli
from services.ops.subscriptions import SERVICES
from tests.deploy.tools import ROOT, render

CONTAINERFILE = ROOT / "Containerfile"


@pytest.fixture(scope="module")
def instructions() -> list[dict[str, Any]]:
    parser = DockerfileParser(fileobj=io.StringIO(CONTAINERFILE.read_text()))
    return [dict(i) for i in parser.structure]


def _all(instructions: list[dict[str, Any]], name: str) -> list[str]:
    return [i["value"] for i in instructions if i["instruction"] == name]


def _roles() -> set[tuple[str, ...]]:
    """Every command line the compose file and the chart give the image."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    given = {tuple(s["command"]) for s in compose.values() if "build" in s}  # our image
    pods = [m["spec"]["template"]["spec"] for m in render() if m["kind"] in ("Deployment", "Job")]
    given |= {tuple(c["args"]) for pod in pods for c in pod["containers"]}
    return given


def test_the_build_has_stages_on_a_slim_python(instructions: list[dict[str, Any]]) -> None:
    stages = _all(instructions, "FROM")
    base = next(i["value"] for i in instructions if i["instruction"] == "ARG")

    assert len(stages) >= 2
    assert "slim" in base
    assert any("COPY --from=build" in i["content"] for i in instructions)


def test_it_installs_the_lock_checked_by_hash(instructions: list[dict[str, Any]]) -> None:
    runs = " ".join(_all(instructions, "RUN"))

    assert "--require-hashes" in runs
    assert "-r /src/requirements.lock" in runs
    assert "install --no-deps /src" in runs


def test_it_runs_as_a_user_without_privileges(instructions: list[dict[str, Any]]) -> None:
    [user] = _all(instructions, "USER")

    assert user.split(":")[0] not in ("root", "0")


def test_its_health_check_asks_the_worker_health_endpoint(
    instructions: list[dict[str, Any]],
) -> None:
    [check] = _all(instructions, "HEALTHCHECK")

    assert "/health/live" in check
    assert "PACKAGES_HTTP_PORT" in check
    assert json.loads(_all(instructions, "ENTRYPOINT")[0]) == ["packages"]
    assert _all(instructions, "STOPSIGNAL") == ["SIGTERM"]


def test_the_build_context_leaves_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()

    assert ignored[ignored.index("*") :][:1] == ["*"]  # everything out, then what the build copies
    assert "!.venv" not in ignored


def test_every_role_given_to_the_image_is_a_packages_command() -> None:
    roles = _roles()

    assert {("worker", s) for s in SERVICES} | {("api",), ("migrate",), ("topics",)} <= roles
    runner = CliRunner()
    for role in roles:
        result = runner.invoke(cli.app, [*role[:1], "--help"])
        assert result.exit_code == 0, (role, result.output)
        if role[0] == "worker":
            assert role[1] in cli.SERVICES
