"""The Prometheus alert rules load and behave as their unit tests say (promtool)."""

from __future__ import annotations

import subprocess
from pathlib import Path

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    check = subprocess.run(["promtool", "check", "rules", "rules.yml"], cwd=RULES, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(["promtool", "test", "rules", "rules_test.yml"], cwd=RULES, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    import yaml

    runbook = (RULES.parents[1] / "docs" / "runbooks" / "auction-timer.md").read_text()
    anchors = {
        line.lstrip("#").strip().lower().replace(" ", "-") for line in runbook.splitlines() if line.startswith("##")
    }
    groups = yaml.safe_load((RULES / "rules.yml").read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        if "alert" in rule:
            anchor = rule["annotations"]["runbook"].split("#", 1)[1]
            assert anchor in anchors, f"{rule['alert']} points at a missing runbook section #{anchor}"
