"""Issue 17: the shipped Prometheus alert rules (queue age, refusal spike, lock-down uncovered,
node not enforcing the latest policy) and Grafana dashboard are valid and name only metrics
mxgate exports: promtool checks the rules and runs their unit tests; a parser checks every
metric named in the rules and the dashboard against the live registry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mxgate import metrics

DIR = Path(metrics.__file__).resolve().parent / "examples" / "monitoring"
RULES, RULE_TESTS, DASHBOARD = DIR / "mxgate-alerts.yml", DIR / "mxgate-alerts.test.yml", DIR / "grafana-dashboard.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: run scripts/install-system-deps.sh (Debian package prometheus)")
    return exe


def exported_names() -> set[str]:
    """Every series name the registry can produce (a labelled family has no samples until used)."""
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        extra = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
        names.update(family.name + suffix for suffix in extra.get(family.type, ()))
    return names


def named_metrics(text: str) -> set[str]:
    return set(re.findall(r"\b(mxgate_[a-z_]+)\b", text))


def test_promtool_checks_the_rules_and_runs_their_tests():
    exe = _promtool()
    check = subprocess.run([exe, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0 and "4 rules found" in check.stdout, check.stdout + check.stderr
    tests = subprocess.run([exe, "test", "rules", RULE_TESTS.name], capture_output=True, text=True, cwd=DIR)
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr


def test_the_four_alerts_exist():
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.M))
    assert alerts == {"MxgateQueueAgeHigh", "MxgateRefusalSpike", "MxgateLockdownUncovered", "MxgatePolicyNotEnforced"}


def test_every_metric_named_exists():
    exported = exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(dashboard["panels"]) >= 10 and all(p["targets"] for p in dashboard["panels"])
    named = named_metrics("\n".join(exprs)) | named_metrics(RULES.read_text())
    for name in named:
        assert name in exported, f"{name} is named in the rules or the dashboard but mxgate exports no such metric"
    # And the other way round: every metric mxgate exports appears on the dashboard.
    families = {f.name for f in metrics.REGISTRY.collect()}
    shown = {re.sub("|".join(s + "$" for s in SUFFIXES), "", n) for n in named_metrics("\n".join(exprs))}
    missing = {f for f in families if f not in shown and f.removesuffix("_total") not in shown}
    assert not missing, f"exported but not on the dashboard: {sorted(missing)}"


def test_dashboard_is_importable_grafana_json():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "mxgate-overview" and d["schemaVersion"] >= 30
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "instance"}
