"""Dashboards and alerts against a real Prometheus scraping the real operator and a real trainer.

Prometheus (the Debian package) scrapes, every second on loopback, `gridwise operator run` driving
a CarbonAwareJob through pause and resume on the local control plane, and `gridwise-trainer`
training digits on the CPU. Every dashboard query must return data and every alert must evaluate.
Without prometheus/promtool the tests fail, naming hack/install-prometheus.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.devcluster import Cluster, free_port
from tests.cluster.harness import (
    REPLAY_START,
    OperatorProcess,
    caj_manifest,
    get_json,
    replay_trace,
    wait_for,
)
from tests.metrics.helm import alert_rules as chart_alert_rules

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gridwise"
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
INSTALL_HINT = "hack/install-prometheus.sh"
T0 = REPLAY_START
OPERATOR_JOB = "gridwise"  # the chart's fullname for release "gridwise": what GridwiseOperatorDown expects
OPERATOR_NAMESPACE = "gridwise-system"  # the target label a ServiceMonitor in the release namespace adds
TRAINER_JOB = "gridwise-trainer"  # the PodMonitor's jobLabel (app.kubernetes.io/name)
NODE_NAME = "gpu-node-7"  # what the downward API gives the trainer (k8s/builders.py)

sys.path.insert(0, str(REPO / "hack"))
render_dashboard = __import__("render-dashboard")


def need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.fail(
            f"{tool} not found: install Prometheus with `{INSTALL_HINT}` (apt package prometheus)",
            pytrace=False,
        )
    return found


@dataclass
class Scraped:
    url: str
    start: float
    end: float
    operator: OperatorProcess


def prom_query(url: str, expr: str, at: float | None = None) -> dict[str, Any]:
    params = {"query": expr, **({"time": str(at)} if at is not None else {})}
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10) as r:
            out: dict[str, Any] = json.load(r)
    except urllib.error.HTTPError as exc:  # a bad query: Prometheus says why in the body
        out = json.loads(exc.read())
    except (urllib.error.URLError, OSError) as exc:  # not listening yet
        out = {"status": "unreachable", "error": str(exc), "data": {"result": []}}
    return out


def trainer_command(workdir: Path, port: int) -> tuple[list[str], dict[str, str]]:
    exe = shutil.which("gridwise-trainer") or str(Path(sys.executable).with_name("gridwise-trainer"))
    args = [
        exe,
        "--checkpoint-dir",
        str(workdir),
        "--total-steps",
        "1000000",
        "--device",
        "cpu",
        "--model",
        "mlp",
        "--eval-every",
        "20",
        "--log-every",
        "0",
        "--carbon-intensity",
        "250",
        "--checkpoint-every",
        "100000",
    ]
    env = {**os.environ, "GRIDWISE_METRICS_PORT": str(port), "PYTHONUNBUFFERED": "1", "NODE_NAME": NODE_NAME}
    return args, env


@pytest.fixture(scope="module")
def scraped(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """Operator + trainer + Prometheus for the module; the operator takes a job through pause and resume."""
    prometheus = need("prometheus")
    need("promtool")
    tmp = tmp_path_factory.mktemp("metrics")
    ns = f"m-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    procs: list[subprocess.Popen[bytes]] = []
    op = OperatorProcess(
        cluster.kubeconfig, tmp / "operator.log", clock_start=T0, speed=900.0, extra_args=["--namespace", ns]
    )
    try:
        trainer_port = free_port()
        args, env = trainer_command(tmp / "ckpt", trainer_port)
        with open(tmp / "trainer.log", "wb") as log:
            procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT))
        prom_port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                # As the chart's ServiceMonitor scrapes: honor_labels keeps the per-job series' own
                # `namespace` (the CarbonAwareJob's); the others get the operator's namespace.
                {
                    "job_name": OPERATOR_JOB,
                    "honor_labels": True,
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{op.http_port}"],
                            "labels": {"namespace": OPERATOR_NAMESPACE},
                        }
                    ],
                },
                {
                    "job_name": TRAINER_JOB,
                    "static_configs": [{"targets": [f"127.0.0.1:{trainer_port}"]}],
                },
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        with open(tmp / "prometheus.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        prometheus,
                        f"--config.file={tmp / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                        "--storage.tsdb.retention.time=1h",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        url = f"http://127.0.0.1:{prom_port}"

        def trainer_serves() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{trainer_port}/metrics", timeout=2):
                    return True
            except (urllib.error.URLError, OSError):
                return False

        # The trainer first (importing torch takes a minute on a busy 2-core machine), then the operator,
        # whose replay clock starts with it: the job must still meet the trace's dirty hours.
        wait_for(
            "the trainer to serve /metrics",
            trainer_serves,
            timeout=180,
            log=lambda: (tmp / "trainer.log").read_text()[-3000:],
        )
        op.start()
        # Scraping before the job exists, so the first decisions show up as increases.
        wait_for(
            "Prometheus to have scraped both targets",
            lambda: len(prom_query(url, "up == 1").get("data", {}).get("result", [])) == 2,
            timeout=30,
            log=lambda: (tmp / "prometheus.log").read_text()[-3000:],
        )
        start = time.time()
        # 12 dirty hours then clean; at 900x the replay clock (started with the operator) passes an hour
        # every 4 s, so the job is still in the dirty window after a slow setup on a busy machine.
        trace = replay_trace(tmp / "trace.csv", [*[500.0] * 12, *[80.0] * 36])
        manifest = caj_manifest(
            "metrics",
            trace=trace,
            work_gpu_hours=2,
            complete_within="30h",
            policy={"type": "threshold", "thresholdGramsPerKWh": 200},
        )
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=manifest)

        def phase() -> str | None:
            return (get_json(cluster, ns, "caj", "metrics").get("status") or {}).get("phase")

        wait_for("phase Paused", lambda: phase() == "Paused", log=op.log_tail)
        wait_for("phase Running", lambda: phase() == "Running", log=op.log_tail)
        wait_for(
            "trainer accuracy in Prometheus",
            lambda: prom_query(url, "gridwise_trainer_accuracy_ratio")["data"]["result"],
            timeout=30,
            log=lambda: (tmp / "trainer.log").read_text()[-3000:],
        )
        time.sleep(8)  # more samples of the running job, so rates over 1m have points
        yield Scraped(url=url, start=start, end=time.time(), operator=op)
    finally:
        op.stop(sig_kill=True)
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def dashboard_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in render_dashboard.panels(dash):
            for t in panel["targets"]:
                out.append((path.stem, panel["title"], t["expr"]))
    return out


def alert_rules() -> list[dict[str, Any]]:
    return chart_alert_rules(release="gridwise", namespace=OPERATOR_NAMESPACE)


@pytest.mark.parametrize(
    ("dashboard", "panel", "expr"),
    dashboard_queries(),
    ids=[f"{d}:{p}:{i}" for i, (d, p, _) in enumerate(dashboard_queries())],
)
def test_every_dashboard_query_returns_data(scraped: Scraped, dashboard: str, panel: str, expr: str) -> None:
    query = render_dashboard.substitute(expr)
    body = prom_query(scraped.url, query)
    assert body["status"] == "success", (query, body)
    assert body["data"]["result"], f"panel {panel!r} of {dashboard}: no data for {query}"


def test_dashboard_variables_list_the_scraped_jobs_and_instances(scraped: Scraped) -> None:
    """The $job and $instance variables' queries offer the operator's and the trainer's targets."""
    dash = json.loads(DASHBOARDS[0].read_text())
    variables = {v["name"]: v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"}
    selector = variables["job"].removeprefix("label_values(").rsplit(",", 1)[0]
    jobs = {r["metric"]["job"] for r in prom_query(scraped.url, selector)["data"]["result"]}
    assert jobs == {OPERATOR_JOB, TRAINER_JOB}
    selector = variables["instance"].removeprefix("label_values(").rsplit(",", 1)[0]
    selector = render_dashboard.substitute(selector)
    assert len({r["metric"]["instance"] for r in prom_query(scraped.url, selector)["data"]["result"]}) == 2


def test_trainer_gpu_series_carry_dcgm_labels(scraped: Scraped) -> None:
    """Hostname comes from NODE_NAME (the downward API in the pod), so it joins dcgm-exporter's series."""
    for name in ("gridwise_trainer_gpu_power_watts", "gridwise_trainer_gpu_energy_joules_total"):
        (series,) = prom_query(scraped.url, name)["data"]["result"]
        assert series["metric"]["Hostname"] == NODE_NAME, series
        # On a CPU there is no GPU UUID: the label is empty (absent), never made up.
        assert "UUID" not in series["metric"] and series["metric"]["source"] in ("rapl", "estimate")


def test_operator_exports_build_info_and_process_metrics(scraped: Scraped) -> None:
    from gridwise import __version__

    (info,) = prom_query(scraped.url, f'gridwise_build_info{{job="{OPERATOR_JOB}"}}')["data"]["result"]
    assert info["metric"]["version"] == __version__ and info["metric"]["kopf"] != "none"
    assert info["value"][1] == "1"
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
        assert prom_query(scraped.url, f'{name}{{job="{OPERATOR_JOB}"}}')["data"]["result"], name


def test_precision_info_has_one_series_at_one(scraped: Scraped) -> None:
    result = prom_query(scraped.url, "gridwise_trainer_precision_info")["data"]["result"]
    assert [r["value"][1] for r in result] == ["1"], result


def test_dashboards_use_only_exported_metric_names(scraped: Scraped) -> None:
    """Every gridwise_* name in a dashboard is one Prometheus has really scraped."""
    import re

    with urllib.request.urlopen(f"{scraped.url}/api/v1/label/__name__/values", timeout=10) as r:
        known = set(json.load(r)["data"])
    for _, panel, expr in dashboard_queries():
        for name in re.findall(r"\bgridwise_[a-z_]+", expr):
            assert name in known, f"panel {panel!r} uses {name}, which nothing exports"


@pytest.mark.parametrize("rule", alert_rules(), ids=[r["alert"] for r in alert_rules()])
def test_every_alert_expression_evaluates(scraped: Scraped, rule: dict[str, Any]) -> None:
    body = prom_query(scraped.url, rule["expr"])
    assert body["status"] == "success", (rule["alert"], body)
    # Each alert's input series exist (the alert itself should not fire on a healthy run).
    if rule["alert"] not in ("GridwiseOperatorDown", "GridwiseOperatorNoLeader"):
        for name in (
            "gridwise_carbon_signal_stale",
            "gridwise_job_deadline_slack_seconds",
            "gridwise_reconcile_errors_total",
        ):
            if name in rule["expr"]:
                assert prom_query(scraped.url, name)["data"]["result"], name
    assert not body["data"]["result"] or rule["alert"] in ("GridwiseJobDeadlineAtRisk",), body


def test_operator_is_up_and_not_alerting_down(scraped: Scraped) -> None:
    up = prom_query(scraped.url, f'up{{job="{OPERATOR_JOB}"}}')["data"]["result"]
    assert up and up[0]["value"][1] == "1"


def test_render_dashboard_png(scraped: Scraped, tmp_path: Path) -> None:
    """The docs' picture comes from this data: GRIDWISE_DASHBOARD_PNG=docs/dashboard.png refreshes it."""
    out = Path(os.environ.get("GRIDWISE_DASHBOARD_PNG") or tmp_path / "dashboard.png")
    n = render_dashboard.render(DASHBOARDS[0], scraped.url, scraped.start, time.time(), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert n == len(render_dashboard.panels(json.loads(DASHBOARDS[0].read_text())))
