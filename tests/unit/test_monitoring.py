"""The shipped alert rules and dashboard: valid, and reading only metrics the workers export."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from services.kernel import metrics
from tests.support import monitoring

ROOT = Path(__file__).resolve().parents[2]


def exported() -> set[str]:
    """Every series name a worker process serves: the kernel's metrics and the process's own."""
    names = {
        family.name
        for family in REGISTRY.collect()
        if family.name.startswith(("process_", "python_"))
    }
    names |= {s.name for family in REGISTRY.collect() for s in family.samples}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name = metric._name
        if isinstance(metric, Counter):
            names |= {f"{name}_total", f"{name}_created"}
        elif isinstance(metric, Histogram):
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        elif isinstance(metric, Gauge):
            names.add(name)
    return names


def test_every_alert_the_issue_asks_for_is_there() -> None:
    assert {r["alert"] for r in monitoring.rules()} == {
        "PackagesConsumerLagGrowing",
        "PackagesDeadLetter",
        "PackagesOutboxStuck",
        "PackagesNoRelayHolder",
        "PackagesWorkerNotReady",
    }


def test_every_rule_and_panel_reads_a_metric_the_workers_export() -> None:
    for rule in monitoring.rules():
        used = monitoring.metric_names(rule["expr"]) - monitoring.PROMETHEUS_OWN
        assert used, rule["alert"]
        assert used <= exported(), (rule["alert"], used - exported())
    for query in monitoring.dashboard_queries():
        used = monitoring.metric_names(query)
        assert used, query
        assert used <= exported(), (query, used - exported())


def _promtool() -> str | None:
    cache = Path(os.environ.get("PACKAGES_CACHE_DIR") or ROOT / ".cache")
    built = cache / "bin" / "promtool"
    return str(built) if built.is_file() else shutil.which("promtool")


def test_prometheus_s_own_checker_accepts_the_rules_and_they_fire_as_meant() -> None:
    """promtool checks the rules, then plays series through them (alerts.test.yaml).

    scripts/setup builds promtool from Go sources where Go is installed; without Go, the
    PromQL parser of the test above is the check.
    """
    promtool = _promtool()
    if promtool is None:
        assert shutil.which("go") is None, "Go is here: scripts/setup should have built promtool"
        return
    for command in (["check", "rules"], ["test", "rules"]):
        target = monitoring.RULES if command[0] == "check" else monitoring.RULE_TESTS
        done = subprocess.run(
            [promtool, *command, str(target)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
