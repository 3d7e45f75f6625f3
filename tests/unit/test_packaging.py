"""What ships: a wheel of contracts and services only, from locks that match pyproject."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins(lock: Path) -> dict[str, str]:
    """Package name -> pinned version, from a lock file's `name==version` lines."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(" ", 1)[0].split(";", 1)[0].split("==")
            pins[canonicalize_name(name)] = version
    return pins


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel built from a copy of the sources (a build leaves files in its tree)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("contracts", "services", "deploy", "bench"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        check=True,
        timeout=300,
    )  # fmt: skip
    [built] = out.glob("packages-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_contracts_and_services_only(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}

    assert tops == {"contracts", "services", "packages-0.1.0.dist-info"}


def test_the_wheel_carries_the_migrations_and_the_license(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())

    assert "services/migrations/alembic.ini" in names
    assert "services/migrations/versions/0001_initial.py" in names
    assert any(n.startswith("packages-0.1.0.dist-info/") and n.endswith("LICENSE") for n in names)
    metadata = wheel.read("packages-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    entry_points = wheel.read("packages-0.1.0.dist-info/entry_points.txt").decode()
    assert "packages = services.cli:app" in entry_points


@pytest.mark.parametrize(
    ("lock", "groups"),
    [("requirements.lock", ("runtime",)), ("requirements-dev.lock", ("runtime", "dev"))],
)
def test_the_locks_pin_every_dependency_within_its_range(
    lock: str, groups: tuple[str, ...]
) -> None:
    pins = _pins(ROOT / lock)
    project = PYPROJECT["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    if "dev" in groups:
        wanted += [Requirement(r) for r in project["optional-dependencies"]["dev"]]

    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {lock}: run scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name} {pins[name]}, outside {requirement.specifier}: run scripts/lock"
        )


def test_runtime_and_development_run_the_same_versions() -> None:
    runtime, development = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-dev.lock")

    assert {n: v for n, v in runtime.items() if development.get(n) != v} == {}


def test_no_unused_dependency_is_declared() -> None:
    declared = {
        canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]
    }

    assert not declared & {"tenacity", "tqdm"}
