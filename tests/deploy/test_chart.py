"""The Helm chart as a cluster takes it: helm lint and template, the API and CRD schemas."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.kernel.settings import Settings
from services.ops.subscriptions import SUBSCRIPTIONS
from services.ops.topics import declared
from tests.deploy.tools import (
    CHART,
    KUBERNETES_VERSION,
    render,
    run_helm,
    validate_custom_resources,
)

CUSTOM = {"keda.sh/v1alpha1", "monitoring.coreos.com/v1", "kafka.strimzi.io/v1beta2"}
PARTITIONS = {s.name: s.partitions for s in declared(Settings())}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render()


def _of(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _containers(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pods = [m["spec"]["template"]["spec"] for m in manifests if m["kind"] in ("Deployment", "Job")]
    return [c for pod in pods for c in pod["containers"]]


def test_helm_lint_passes() -> None:
    done = run_helm("lint", ".", "--strict", "--kube-version", KUBERNETES_VERSION)

    assert done.returncode == 0, done.stdout + done.stderr


def test_every_kubernetes_manifest_fits_the_api_schema(manifests: list[dict[str, Any]]) -> None:
    built_in = [m for m in manifests if m["apiVersion"] not in CUSTOM]

    for manifest in built_in:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    assert {m["kind"] for m in built_in} >= {
        "Deployment", "Service", "PodDisruptionBudget", "Job", "ConfigMap"
    }  # fmt: skip


def test_keda_and_prometheus_resources_fit_their_crds(manifests: list[dict[str, Any]]) -> None:
    custom = [m for m in manifests if m["apiVersion"] in CUSTOM]

    errors = validate_custom_resources(custom)

    assert {k.split("/")[0] for k in errors} == {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
    assert {k: e for k, e in errors.items() if e} == {}


def test_the_crd_check_catches_a_broken_scaled_object(manifests: list[dict[str, Any]]) -> None:
    scaled = next(m for m in manifests if m["kind"] == "ScaledObject")
    broken = {**scaled, "spec": {**scaled["spec"], "maxReplicaCount": "many"}}
    del broken["spec"]["scaleTargetRef"]

    [errors] = validate_custom_resources([broken]).values()

    assert any("maxReplicaCount" in e for e in errors)
    assert any("scaleTargetRef" in e for e in errors)


def test_each_consumer_has_its_deployment_disruption_budget_and_lag_scaler(
    manifests: list[dict[str, Any]],
) -> None:
    deployments, budgets = _of(manifests, "Deployment"), _of(manifests, "PodDisruptionBudget")
    scalers = _of(manifests, "ScaledObject")

    for service, topics in SUBSCRIPTIONS.items():
        name = f"rel-packages-{service}"
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["worker", service]
        assert container["resources"]["requests"]
        assert budgets[name]["spec"]["maxUnavailable"] == 1
        spec = scalers[name]["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        [trigger] = spec["triggers"]
        assert (trigger["type"], trigger["metadata"]["consumerGroup"]) == ("kafka", service)
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["maxReplicaCount"] <= min(PARTITIONS[t] for t in topics)
        assert "replicas" not in deployments[name]["spec"]  # KEDA owns the count


def test_replicas_past_the_partitions_are_refused_at_render() -> None:
    done = run_helm(
        "template", "rel", ".", "--kube-version", KUBERNETES_VERSION,
        "--set", "workers.redemption.autoscaling.maxReplicas=7",
    )  # fmt: skip

    assert done.returncode != 0
    assert "workers.redemption: 7 replicas exceed 6, the partitions of its smallest topic" in (
        done.stderr
    )


def test_a_fixed_replica_count_is_kept_without_autoscaling() -> None:
    manifests = render("workers.records.autoscaling.enabled=false", "workers.records.replicas=2")

    assert _of(manifests, "Deployment")["rel-packages-records"]["spec"]["replicas"] == 2
    assert "rel-packages-records" not in _of(manifests, "ScaledObject")


def test_workers_are_probed_where_they_serve_health(manifests: list[dict[str, Any]]) -> None:
    for container in _containers(manifests):
        if container["args"][0] not in ("worker", "api"):
            continue
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_api_has_a_service(manifests: list[dict[str, Any]]) -> None:
    service = _of(manifests, "Service")["rel-packages-api"]

    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]


def test_migrations_then_topics_run_as_hook_jobs(manifests: list[dict[str, Any]]) -> None:
    jobs = _of(manifests, "Job")
    migrate, topics = jobs["rel-packages-migrate"], jobs["rel-packages-topics"]

    for job, role in ((migrate, "migrate"), (topics, "topics")):
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [role]
    weights = [int(j["metadata"]["annotations"]["helm.sh/hook-weight"]) for j in (migrate, topics)]
    assert weights[0] < weights[1]


def test_secrets_are_only_referenced(manifests: list[dict[str, Any]]) -> None:
    sasl = render("kafka.credentialsSecret.name=kafka-user")

    assert not [m for m in manifests + sasl if m["kind"] == "Secret"]
    for container in _containers(sasl):
        env = {e["name"]: e for e in container["env"]}
        for name in ("DATABASE_URL", "PACKAGES_KAFKA_SASL_PASSWORD"):
            assert "value" not in env[name]
            assert env[name]["valueFrom"]["secretKeyRef"]["name"]


def test_the_chart_carries_the_topics_declaration_and_the_subscriptions() -> None:
    in_chart = json.loads((CHART / "files" / "topics.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    assert in_chart == [
        {"name": s.name, "partitions": s.partitions, "replication_factor": 3, "configs": s.configs}
        for s in declared(Settings())
    ], "regenerate: packages topics --json > deploy/helm/packages/files/topics.json"
    assert {name: tuple(w["topics"]) for name, w in values["workers"].items()} == SUBSCRIPTIONS


def test_strimzi_topics_render_the_declaration_instead_of_the_job() -> None:
    manifests = render("topics.strimzi.enabled=true", "topics.replicationFactor=3")
    topics = {m["spec"]["topicName"]: m for m in manifests if m["kind"] == "KafkaTopic"}

    assert set(topics) == set(PARTITIONS)
    booking = topics["booking.created"]["spec"]
    assert (booking["partitions"], booking["replicas"]) == (6, 3)
    assert booking["config"]["min.insync.replicas"] == "2"
    assert "rel-packages-topics" not in _of(manifests, "Job")
