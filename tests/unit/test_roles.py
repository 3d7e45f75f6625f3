"""One image, a command per role (`packages worker|api|migrate|topics`); the topics declared."""

from __future__ import annotations

import json
import sys

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from contracts.topics import ALL_TOPICS, BOOKING_CREATED, INVOICE_PUBLISHED, dlq
from services import cli
from services.kernel.settings import Settings
from services.ops.topics import DLQ_MAX_MESSAGE_BYTES, declared

ROLES = ("worker", "api", "migrate", "topics")
runner = CliRunner()


@pytest.fixture
def became(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """What a role would have replaced the process with."""
    seen: list[list[str]] = []
    monkeypatch.setattr(cli, "_become", seen.append)
    return seen


@pytest.mark.parametrize("role", ROLES)
def test_every_role_is_a_packages_command(role: str) -> None:
    result = runner.invoke(cli.app, [role, "--help"])

    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("service", cli.SERVICES)
def test_a_worker_runs_its_service_as_faststream_runs_it(
    service: str, became: list[list[str]]
) -> None:
    result = runner.invoke(cli.app, ["worker", service])

    assert result.exit_code == 0, result.output
    assert became == [[sys.executable, "-m", "faststream", "run", f"services.{service}.app:app"]]


def test_a_worker_of_no_known_service_is_refused(became: list[list[str]]) -> None:
    result = runner.invoke(cli.app, ["worker", "billing"])

    assert result.exit_code == 2
    assert became == []


def test_the_api_listens_where_the_health_check_looks(became: list[list[str]]) -> None:
    result = runner.invoke(cli.app, ["api"], env={"PACKAGES_HTTP_PORT": "9000"})

    assert result.exit_code == 0, result.output
    [argv] = became
    assert argv[1:4] == ["-m", "uvicorn", "services.http.app:app"]
    assert argv[argv.index("--port") + 1] == "9000"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_topics_are_declared_for_production_by_default() -> None:
    specs = {s.name: s for s in declared(Settings())}

    assert set(specs) == set(ALL_TOPICS)
    assert all(s.replication_factor == 3 for s in specs.values())
    assert all(s.configs["min.insync.replicas"] == "2" for s in specs.values())
    assert specs[BOOKING_CREATED].partitions > specs[INVOICE_PUBLISHED].partitions
    letters = specs[dlq(INVOICE_PUBLISHED)].configs
    assert letters["max.message.bytes"] == str(DLQ_MAX_MESSAGE_BYTES)
    assert int(letters["retention.ms"]) > int(specs[INVOICE_PUBLISHED].configs["retention.ms"])
    assert "max.message.bytes" not in specs[INVOICE_PUBLISHED].configs


def test_a_single_local_broker_gets_one_replica_and_one_in_sync() -> None:
    [spec] = declared(Settings(topic_replication_factor=1), names=[BOOKING_CREATED])

    assert (spec.replication_factor, spec.configs["min.insync.replicas"]) == (1, "1")


def test_more_in_sync_replicas_than_replicas_is_refused() -> None:
    with pytest.raises(ValidationError, match="no write could ever succeed"):
        Settings(topic_replication_factor=2, topic_min_insync_replicas=3)


def test_topics_json_prints_the_declaration_without_a_cluster() -> None:
    result = runner.invoke(
        cli.app, ["topics", "--json"], env={"KAFKA_BOOTSTRAP_SERVERS": "nowhere.invalid:9092"}
    )

    assert result.exit_code == 0, result.output
    printed = {t["name"]: t for t in json.loads(result.output)}
    assert printed[BOOKING_CREATED]["replication_factor"] == 3
    assert set(printed) == set(ALL_TOPICS)
