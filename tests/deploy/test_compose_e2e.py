"""Where a Docker daemon answers: the image builds and the compose system comes up healthy.

Marked `docker`: scripts/test leaves it out, saying so, when no daemon answers (this project's
own machines have none); it never skips itself.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from services.ops.subscriptions import SERVICES
from tests.deploy.tools import ROOT

pytestmark = pytest.mark.docker


def _compose(project: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PACKAGES_IMAGE": f"packages:{project}",
        "PACKAGES_API_PUBLISH": "127.0.0.1:",
    }
    return subprocess.run(
        ["docker", "compose", "--project-name", project, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_image_builds_and_the_whole_system_comes_up_healthy() -> None:
    project = f"packages-e2e-{uuid.uuid4().hex[:8]}"
    try:
        up = _compose(project, "up", "--build", "--detach", "--wait", "--wait-timeout", "300")
        assert up.returncode == 0, up.stdout + up.stderr
        states = _compose(project, "ps", "--all", "--format", "{{.Service}} {{.State}} {{.Health}}")
        seen = dict(line.split(" ", 1) for line in states.stdout.splitlines())
        for name in (*SERVICES, "api"):
            assert seen[name] == "running healthy", seen
        check = _compose(project, "run", "--rm", "--no-deps", "topics", "topics", "--check")
        assert (check.returncode, check.stdout.strip()) == (0, "no drift"), check.stderr
        ready = _compose(
            project, "exec", "api", "python", "-c",
            "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/health/ready').status)",
        )  # fmt: skip
        assert ready.stdout.strip() == "200", ready.stderr
    finally:
        _compose(project, "down", "--volumes", "--remove-orphans", "--rmi", "local", timeout=300)
