"""compose.yaml: valid by the compose specification's schema, steps before workers, every role."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml

from services.ops.subscriptions import SERVICES
from tests.deploy.tools import ROOT, compose_schema

COMPOSE = ROOT / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_compose_file_is_valid_by_the_specification(compose: dict[str, Any]) -> None:
    schema = compose_schema()

    jsonschema.validators.validator_for(schema)(schema).validate(compose)


def test_the_schema_check_catches_a_misspelt_key(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    broken = {**compose, "services": {**compose["services"], "api": {"imagee": "packages"}}}

    with pytest.raises(jsonschema.ValidationError, match="imagee"):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)


def test_kafka_runs_in_kraft_mode_from_the_official_image(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]

    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "healthcheck" in kafka


def test_workers_start_after_migrate_and_topics_have_finished(compose: dict[str, Any]) -> None:
    services = compose["services"]

    for name in SERVICES:
        worker = services[name]
        assert worker["command"] == ["worker", name]
        assert worker["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "topics": {"condition": "service_completed_successfully"},
        }
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["api"]["command"] == ["api"]


def test_observability_is_an_optional_profile_scraping_every_worker(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    scrape = yaml.safe_load((ROOT / "deploy" / "observability" / "prometheus.yml").read_text())
    targets = {t for c in scrape["scrape_configs"][0]["static_configs"] for t in c["targets"]}

    assert (
        services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["observability"]
    )
    port = services["catalog"]["environment"]["PACKAGES_HTTP_PORT"]
    assert {f"{name}:{port}" for name in SERVICES} <= targets
    for mount in services["prometheus"]["volumes"] + services["grafana"]["volumes"]:
        assert (ROOT / mount.split(":")[0]).exists(), mount
