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


def rules() -> list[dict]:
    """Every rule of every group in infra/prometheus/rules.yml."""
    doc = yaml.safe_load((ROOT / "infra" / "prometheus" / "rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def panels(container: dict) -> list[dict]:
    """Every panel, those folded inside rows included."""
    return [q for p in container.get("panels", []) for q in (p, *panels(p))]


def test_dashboard_panels_query_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "infra" / "grafana" / "auction-timer.json").read_text())
    exprs = " ".join(t["expr"] for p in panels(dashboard) for t in p.get("targets", []))
    unknown = {name for name in named_in(exprs) if not name.startswith("auctions:")} - exported()
    assert unknown == set()
    # Recorded series (auctions:...) must be recorded by some rule.
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    assert set(re.findall(r"auctions:[a-z0-9_:]+", exprs)) - recorded == set()
    assert len(panels(dashboard)) >= 12


def test_alert_rules_query_exported_metrics() -> None:
    exprs = " ".join(rule["expr"] for rule in rules())
    assert named_in(exprs) - exported() == set()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    assert set(re.findall(r"auctions:[a-z0-9_:]+", exprs)) - recorded == set()
