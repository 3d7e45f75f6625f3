"""The alert rules and dashboard that ship with the chart (and the compose file), and the
metrics they query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import promql_parser
import yaml

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "packages" / "files"
RULES = MONITORING / "alerts.yaml"
RULE_TESTS = MONITORING / "alerts.test.yaml"
DASHBOARD = MONITORING / "dashboards" / "packages.json"
# Series Prometheus makes itself for every scrape target.
PROMETHEUS_OWN = frozenset({"up"})


def rules() -> list[dict[str, Any]]:
    """Every alerting rule."""
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    """Every query of every dashboard panel."""
    document = orjson.loads(DASHBOARD.read_bytes())
    return [t["expr"] for panel in document["panels"] for t in panel["targets"]]


def metric_names(expression: str) -> set[str]:
    """The metrics a PromQL expression reads, from PromQL's own parser (a bad one raises)."""
    names: set[str] = set()
    pending: list[Any] = [promql_parser.parse(expression)]
    while pending:
        node = pending.pop()
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        for part in ("lhs", "rhs", "expr", "args", "param", "vector_selector"):
            child = getattr(node, part, None)
            if child is not None:
                pending += child if isinstance(child, list | tuple) else [child]
    return names


def queried() -> set[str]:
    """Every metric the rules and the dashboard read."""
    expressions = [r["expr"] for r in rules()] + dashboard_queries()
    return set().union(*(metric_names(e) for e in expressions)) - PROMETHEUS_OWN
