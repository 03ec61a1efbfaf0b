"""The dashboards pass Grafana's dashboard-linter rules (hack/dashboard-lint.py), and the rules really bite.

Needs promtool (Debian package prometheus) to parse the queries; without it the test fails naming
hack/install-prometheus.sh.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
sys.path.insert(0, str(REPO / "hack"))
dashboard_lint = __import__("dashboard-lint")


@pytest.fixture(autouse=True)
def _promtool() -> None:
    if shutil.which("promtool") is None:
        pytest.fail(
            "promtool not found: run hack/install-prometheus.sh (apt package prometheus)", pytrace=False
        )


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARDS[0].read_text())
    return data


def panel(dash: dict[str, Any]) -> dict[str, Any]:
    """A plain panel (a standard unit, one target) to break on purpose."""
    found: dict[str, Any] = next(p for p in dash["panels"] if p["title"] == "Replicas over time")
    return found


def hits(dash: dict[str, Any], rule: str) -> int:
    return sum(f.rule == rule for f in dashboard_lint.lint(dash))


def test_shipped_dashboards_have_no_findings() -> None:
    found, excluded = dashboard_lint.lint_files(DASHBOARDS)
    assert not found, "\n".join(map(str, found))
    # Only the custom carbon-intensity unit is excluded, and each exclusion is for a real finding.
    assert {f.rule for f in excluded} <= {"panel-units-rule"}
    assert all("suffix:gCO2/kWh" in f.message for f in excluded)


def test_dashboard_is_uneditable_and_templated() -> None:
    dash = load()
    assert dash["editable"] is False
    names = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance", "namespace", "zone"} <= set(names)
    for name in ("job", "instance"):
        assert names[name]["multi"] and names[name]["allValue"] == ".+" and names[name]["refresh"] == 2


@pytest.mark.parametrize(
    ("mutate", "rule"),
    [
        (lambda d: d.update(editable=True), "uneditable-dashboard"),
        (lambda d: panel(d).update(description=""), "panel-title-description-rule"),
        (lambda d: panel(d)["fieldConfig"]["defaults"].update(unit="gCO2/kWh"), "panel-units-rule"),
        (
            lambda d: panel(d)["targets"][0].update(expr="gridwise_carbon_intensity_grams_per_kwh"),
            "target-job-rule",
        ),
        (
            lambda d: panel(d)["targets"][0].update(expr='gridwise_jobs{job=~"$job"}'),
            "target-instance-rule",
        ),
        (
            lambda d: panel(d)["targets"][0].update(
                expr='gridwise_trainer_steps_total{job=~"$job", instance=~"$instance"}'
            ),
            "target-counter-agg-rule",
        ),
        (
            lambda d: panel(d)["targets"][0].update(
                expr='rate(gridwise_trainer_steps_total{job=~"$job", instance=~"$instance"}[5m])'
            ),
            "target-rate-interval-rule",
        ),
        (lambda d: panel(d)["targets"][0].update(expr='sum(up{job=~"$job"'), "target-promql-rule"),
        (
            lambda d: panel(d).update(datasource={"type": "prometheus", "uid": "abc"}),
            "panel-datasource-rule",
        ),
        (lambda d: d["templating"]["list"].pop(1), "template-job-rule"),
        (lambda d: d["templating"]["list"][2].update(allValue=".*"), "template-instance-rule"),
        (lambda d: d["templating"]["list"][3].update(refresh=1), "template-on-time-change-reload"),
        (
            lambda d: d["templating"]["list"][3]["query"].update(query="labels(gridwise_jobs, namespace)"),
            "template-label-promql-rule",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_each_rule_catches_its_violation(mutate: Any, rule: str) -> None:
    dash = copy.deepcopy(load())
    before = hits(dash, rule)
    mutate(dash)
    assert hits(dash, rule) > before


def test_the_dashboard_before_issue_15_gives_the_upstream_linters_77_findings() -> None:
    """Calibration: the dashboard as it was when Grafana's linter reported 77 findings (issue 15)."""
    before = json.loads((Path(__file__).parent / "data" / "gridwise-before-issue-15.json").read_text())
    found = dashboard_lint.lint(before)
    assert len(found) == 77, "\n".join(map(str, found))
    by_rule = {r: sum(f.rule == r for f in found) for r in {f.rule for f in found}}
    assert by_rule["panel-title-description-rule"] == 12  # "12 panels have no description"
    assert by_rule["uneditable-dashboard"] == 1


def test_selectors_see_through_aggregations_and_functions() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(x_bucket{job=~"$job"}[$__rate_interval])))'
        " / on (instance) group_left sum without (a) (y_total)"
    )
    found = [(s.name, s.function, s.range) for s in dashboard_lint.selectors(expr)]
    assert found == [("x_bucket", "rate", "[$__rate_interval]"), ("y_total", None, None)]
