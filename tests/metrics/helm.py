"""`helm template` of the chart as a cluster with the Prometheus Operator's CRDs would render it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.harness import helm_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gridwise"
KUBE_VERSION = "1.35.4"
# What .Capabilities.APIVersions holds on a cluster with kube-prometheus-stack installed.
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)


def template(
    values: dict[str, Any] | None = None,
    *,
    release: str = "gridwise",
    namespace: str = "gridwise-system",
    api_versions: tuple[str, ...] = MONITORING_APIS,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    args = [helm_binary(), "template", release, str(CHART), "--namespace", namespace]
    args += ["--kube-version", KUBE_VERSION]
    for api in api_versions:
        args += ["--api-versions", api]
    proc = subprocess.run(
        [*args, "--values", "-"],
        input=yaml.safe_dump(values or {}),
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm template failed:\n{proc.stderr}")
    return proc


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(template(values, **kwargs).stdout) if d]


def alert_rules(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    docs = render({"prometheusRule": {"enabled": True}, **(values or {})}, **kwargs)
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]
