"""The local infrastructure starters fail with messages that say what to install."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from deploy import postgres_local
from deploy.infra import PostgresService, docker_available
from deploy.kafka_local import InfraError, LocalKafka, ensure_kafka_jars
from deploy.postgres_local import find_pg_bin_dir


def _fake_java(bin_dir: Path, version: str) -> None:
    """Put a `java` on bin_dir that reports version the way OpenJDK does (on stderr)."""
    bin_dir.mkdir(exist_ok=True)
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2022-01-18' >&2\n")
    java.chmod(0o755)


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make PATH a single empty directory (and JAVA_HOME unset); return that directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return bin_dir


def test_missing_java_says_install_java_17(empty_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InfraError) as caught:
        ensure_kafka_jars(tmp_path / "cache")

    message = str(caught.value)
    assert message.startswith("Java 17+ is required to run the local Kafka broker")
    assert "apt-get install openjdk-17-jre-headless" in message


def test_missing_java_stops_a_broker_start_before_anything_runs(
    empty_path: Path, tmp_path: Path
) -> None:
    broker = LocalKafka(tmp_path / "kafka", cache_dir=tmp_path / "cache")

    with pytest.raises(InfraError, match="Java 17\\+ is required"):
        broker.start()
    assert not (tmp_path / "kafka").exists()


def test_old_java_is_reported_with_its_version(empty_path: Path, tmp_path: Path) -> None:
    _fake_java(empty_path, "11.0.2")

    with pytest.raises(InfraError, match=r"Java 17\+ is required.*version 11"):
        ensure_kafka_jars(tmp_path / "cache")


def test_missing_maven_says_install_maven(empty_path: Path, tmp_path: Path) -> None:
    _fake_java(empty_path, "17.0.2")

    with pytest.raises(InfraError) as caught:
        ensure_kafka_jars(tmp_path / "cache")

    message = str(caught.value)
    assert "Maven is required" in message
    assert "apt-get install maven" in message


def test_java_home_is_preferred_over_path(
    empty_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_java(empty_path, "11.0.2")
    (tmp_path / "jdk17").mkdir()
    _fake_java(tmp_path / "jdk17" / "bin", "17.0.2")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk17"))

    # Java 17 from JAVA_HOME passes, so the next thing missing is Maven.
    with pytest.raises(InfraError, match="Maven is required"):
        ensure_kafka_jars(tmp_path / "cache")


def test_missing_postgres_binaries_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACKAGES_PG_BIN_DIR", str(tmp_path / "nowhere"))

    with pytest.raises(InfraError, match="PostgreSQL server binaries are required"):
        find_pg_bin_dir()


def test_no_docker_daemon_is_detected_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    started = time.monotonic()

    assert docker_available() is False
    assert time.monotonic() - started < 5


def test_postgres_service_gives_a_plain_dsn_for_asyncpg() -> None:
    service = PostgresService(
        origin="env", server=None, url="postgresql+asyncpg://u:p@db:5432/packages"
    )

    assert service.dsn == "postgresql://u:p@db:5432/packages"
    assert not service.restartable
    with pytest.raises(InfraError, match="cannot be stopped"):
        service.stop()


def test_the_chosen_postgres_binaries_are_said_once_with_why_the_others_were_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken, working = tmp_path / "bundled" / "bin", tmp_path / "debian" / "bin"
    for bin_dir, body in (
        (broken, "echo 'postgres: cannot enter /home/alice/.venv' >&2; exit 1"),
        (working, "echo 'postgres (PostgreSQL) 17.6'"),
    ):
        bin_dir.mkdir(parents=True)
        (bin_dir / "postgres").write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / "postgres").chmod(0o755)
    monkeypatch.setattr(postgres_local, "_candidate_bin_dirs", lambda: [broken, working])
    monkeypatch.setattr(postgres_local, "_service_account", lambda: None)

    first = postgres_local.choose_pg_binaries()
    again = postgres_local.choose_pg_binaries()

    assert first is again
    assert first.bin_dir == working
    assert f"not {broken}: postgres: cannot enter /home/alice/.venv" in first.reason
    assert capsys.readouterr().err.count("PostgreSQL binaries:") == 1
