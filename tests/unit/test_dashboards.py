"""The Grafana dashboard and the alert rules only name metrics the service really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import app.gateway.metrics
import app.gateway.outbox
import app.worker
import projections.metrics
import streams.metrics

# Importing these registers every metric the service exports.
METRIC_MODULES = (app.gateway.metrics, app.gateway.outbox, projections.metrics, streams.metrics, app.worker)

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\b(auctions_[a-z_]+?)(?:_bucket|_count|_sum|_total)?\b")


def exported() -> set[str]:
    names = set()
    for collector in REGISTRY.collect():
        names.add(collector.name)
        names.update(sample.name for sample in collector.samples)
    return names


def named_in(text: str) -> set[str]:
    return {m.group(1) for m in METRIC.finditer(text)}


def test_dashboard_panels_query_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "infra" / "grafana" / "auction-timer.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    unknown = {name for name in named_in(exprs) if not name.startswith("auctions:")} - exported()
    assert unknown == set()
    assert len(dashboard["panels"]) >= 12


def test_alert_rules_query_exported_metrics() -> None:
    rules = yaml.safe_load((ROOT / "infra" / "prometheus" / "rules.yml").read_text())
    exprs = " ".join(r["expr"] for r in rules["groups"][0]["rules"])
    assert named_in(exprs) - exported() == set()
