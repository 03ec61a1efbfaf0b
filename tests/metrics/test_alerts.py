# ruff: noqa: E501  (promtool test data: one series or annotation per line reads best)
"""The chart's alerts: promtool validates them, `promtool test rules` fires each one on the series that
should raise it (with its namespace label and runbook link) and keeps it quiet on healthy ones, and the
trainer's GPU series join dcgm-exporter's on (UUID, Hostname).

Needs helm (control-plane build) and promtool (hack/install-prometheus.sh); fails naming them if missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import pynvml
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gridwise_trainer.energy import NvmlMeter
from gridwise_trainer.metrics import TrainerMetrics
from tests.metrics.helm import render

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "docs" / "runbooks"
RELEASE, NS = "gridwise", "gridwise-system"
BASE = "https://github.com/gridwise/gridwise/blob/main/docs/runbooks"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found: run hack/install-prometheus.sh (apt package prometheus)", pytrace=False
        )
    return found


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = render({"prometheusRule": {"enabled": True}}, release=RELEASE, namespace=NS)
    groups = next(d for d in docs if d["kind"] == "PrometheusRule")["spec"]["groups"]
    path = tmp_path_factory.mktemp("rules") / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def rules(path: Path) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules_with_all_lints(rules_file: Path) -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", "--lint=all", "--lint-fatal", str(rules_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules(rules_file))} rules found" in proc.stdout, proc.stdout


def test_every_alert_has_severity_runbook_and_keeps_namespace(rules_file: Path) -> None:
    for rule in rules(rules_file):
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["runbook_url"] == f"{BASE}/{name}.md", name
        page = RUNBOOKS / f"{name}.md"
        assert page.is_file(), f"{name}: no runbook {page}"
        text = page.read_text()
        assert text.startswith(f"# {name}\n") and "**Meaning.**" in text and "**Fix.**" in text, page
        # Aggregations keep `namespace`; absent() keeps it through an equality matcher.
        expr = " ".join(rule["expr"].split())
        kept = re.findall(r"\bby \(([^)]*)\)", expr)
        assert kept or "absent(" in expr, name
        assert all("namespace" in k for k in kept), (name, expr)
        if "absent(" in expr:
            assert f'namespace="{NS}"' in expr, expr
    listed = set(re.findall(r"\[(\w+)\.md\]", (RUNBOOKS / "README.md").read_text()))
    assert listed == {r["alert"] for r in rules(rules_file)}


def test_runbook_base_url_is_configurable() -> None:
    docs = render(
        {"prometheusRule": {"enabled": True, "runbookBaseURL": "https://wiki.example/gw/"}},
        release=RELEASE,
        namespace=NS,
    )
    urls = [
        r["annotations"]["runbook_url"]
        for d in docs
        if d["kind"] == "PrometheusRule"
        for g in d["spec"]["groups"]
        for r in g["rules"]
    ]
    assert urls and all(u.startswith("https://wiki.example/gw/Gridwise") for u in urls)


OP = f'job="{RELEASE}", instance="10.0.0.5:8080"'


def unit_tests() -> list[dict[str, Any]]:
    """Series that must fire each alert, with the labels and annotations the alert must carry."""
    url = BASE + "/{}.md"
    return [
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": f'gridwise_carbon_signal_stale{{{OP}, namespace="{NS}", zone="GB", provider="neso"}}',
                    "values": "1x30",
                },
                {
                    "series": f'gridwise_carbon_signal_stale{{{OP}, namespace="{NS}", zone="FR", provider="em"}}',
                    "values": "0x30",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "GridwiseCarbonSignalStale", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "GridwiseCarbonSignalStale",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "namespace": NS,
                                "zone": "GB",
                                "provider": "neso",
                            },
                            "exp_annotations": {
                                "summary": "Carbon signal for zone GB (neso) is stale",
                                "description": f"The operator in {NS} has had no fresh carbon intensity for this "
                                "zone for 15m; its jobs keep running without carbon-aware pauses.",
                                "runbook_url": url.format("GridwiseCarbonSignalStale"),
                            },
                        }
                    ],
                },
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": f'gridwise_job_deadline_slack_seconds{{{OP}, namespace="ml", carbonawarejob="late"}}',
                    "values": "-600x30",
                },
                {
                    "series": f'gridwise_job_deadline_slack_seconds{{{OP}, namespace="ml", carbonawarejob="tight"}}',
                    "values": "1800x30",
                },
                {
                    "series": f'gridwise_job_progress_ratio{{{OP}, namespace="ml", carbonawarejob="tight"}}',
                    "values": "0.5x30",
                },
                {
                    "series": f'gridwise_job_deadline_slack_seconds{{{OP}, namespace="ml", carbonawarejob="fine"}}',
                    "values": "86400x30",
                },
                {
                    "series": f'gridwise_job_progress_ratio{{{OP}, namespace="ml", carbonawarejob="fine"}}',
                    "values": "0.5x30",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "6m",
                    "alertname": "GridwiseJobMissesDeadline",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "critical",
                                "namespace": "ml",
                                "carbonawarejob": "late",
                            },
                            "exp_annotations": {
                                "summary": "CarbonAwareJob ml/late cannot finish before its deadline",
                                "description": "Even at max replicas from now on, the remaining work ends after "
                                "the deadline (slack -10m 0s).",
                                "runbook_url": url.format("GridwiseJobMissesDeadline"),
                            },
                        }
                    ],
                },
                {
                    "eval_time": "12m",
                    "alertname": "GridwiseJobDeadlineAtRisk",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "namespace": "ml",
                                "carbonawarejob": "tight",
                            },
                            "exp_annotations": {
                                "summary": "CarbonAwareJob ml/tight has little deadline slack",
                                "description": "Only 30m 0s to spare at max replicas; the operator will run it "
                                "regardless of carbon intensity soon.",
                                "runbook_url": url.format("GridwiseJobDeadlineAtRisk"),
                            },
                        }
                    ],
                },
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                {"series": f'gridwise_reconcile_errors_total{{{OP}, namespace="{NS}"}}', "values": "0+60x40"},
                {
                    "series": f'up{{job="{RELEASE}", namespace="{NS}", instance="10.0.0.5:8080"}}',
                    "values": "0x40",
                },
                {
                    "series": f'gridwise_operator_leader{{job="{RELEASE}", namespace="{NS}", instance="a"}}',
                    "values": "0x40",
                },
                {
                    "series": f'gridwise_operator_leader{{job="{RELEASE}", namespace="{NS}", instance="b"}}',
                    "values": "0x40",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "25m",
                    "alertname": "GridwiseReconcileErrors",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "namespace": NS},
                            "exp_annotations": {
                                "summary": f"gridwise reconciles are failing in {NS}",
                                "description": "1 failed reconciles per second over 10 minutes; see the operator log.",
                                "runbook_url": url.format("GridwiseReconcileErrors"),
                            },
                        }
                    ],
                },
                {
                    "eval_time": "15m",
                    "alertname": "GridwiseOperatorDown",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "critical", "namespace": NS, "job": RELEASE},
                            "exp_annotations": {
                                "summary": f"No gridwise operator replica is being scraped in {NS}",
                                "description": "CarbonAwareJobs are not reconciled while no operator replica runs.",
                                "runbook_url": url.format("GridwiseOperatorDown"),
                            },
                        }
                    ],
                },
                {
                    "eval_time": "10m",
                    "alertname": "GridwiseOperatorNoLeader",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "critical", "namespace": NS, "job": RELEASE},
                            "exp_annotations": {
                                "summary": f"No gridwise operator replica in {NS} holds the leader Lease",
                                "description": "Replicas are up but none leads, so no CarbonAwareJob is reconciled "
                                f"(Lease {NS}/gridwise-operator).",
                                "runbook_url": url.format("GridwiseOperatorNoLeader"),
                            },
                        }
                    ],
                },
            ],
        },
        {
            # Healthy: one leader, the operator up, no errors, fresh signal: nothing fires.
            "interval": "1m",
            "input_series": [
                {"series": f'gridwise_reconcile_errors_total{{{OP}, namespace="{NS}"}}', "values": "0x40"},
                {
                    "series": f'up{{job="{RELEASE}", namespace="{NS}", instance="10.0.0.5:8080"}}',
                    "values": "1x40",
                },
                {
                    "series": f'gridwise_operator_leader{{job="{RELEASE}", namespace="{NS}", instance="a"}}',
                    "values": "1x40",
                },
                {
                    "series": f'gridwise_operator_leader{{job="{RELEASE}", namespace="{NS}", instance="b"}}',
                    "values": "0x40",
                },
                {
                    "series": f'gridwise_carbon_signal_stale{{{OP}, namespace="{NS}", zone="GB", provider="neso"}}',
                    "values": "0x40",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": name, "exp_alerts": []}
                for name in (
                    "GridwiseReconcileErrors",
                    "GridwiseOperatorDown",
                    "GridwiseOperatorNoLeader",
                    "GridwiseCarbonSignalStale",
                )
            ],
        },
    ]


def run_promtool_tests(tmp_path: Path, rules_file: Path, tests: list[dict[str, Any]]) -> None:
    spec = {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "tests.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_each_alert_fires_with_namespace_and_runbook(tmp_path: Path, rules_file: Path) -> None:
    fired = {t["alertname"] for u in unit_tests() for t in u["alert_rule_test"] if t["exp_alerts"]}
    assert fired == {r["alert"] for r in rules(rules_file)}, "every alert needs a firing case"
    run_promtool_tests(tmp_path, rules_file, unit_tests())


def test_promtool_really_checks_annotations(tmp_path: Path, rules_file: Path) -> None:
    """The harness fails on a wrong expectation, so the passing run above means something."""
    tests = unit_tests()[:1]
    tests[0]["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["namespace"] = "elsewhere"
    with pytest.raises(AssertionError, match="GridwiseCarbonSignalStale"):
        run_promtool_tests(tmp_path, rules_file, tests)


# -- the trainer's GPU series join dcgm-exporter's -----------------------------------------------------
GPU_UUID = "GPU-8f0c4f7e-1d2a-4b1e-9c1e-0123456789ab"


@pytest.fixture
def one_gpu() -> Iterator[None]:
    """pynvml faked at its boundary (autospec, real constants): one Hopper GPU, NVML index 3."""
    with ExitStack() as stack:
        fake = {
            n: stack.enter_context(mock.patch.object(pynvml, n, autospec=True))
            for n in (
                "nvmlInit",
                "nvmlShutdown",
                "nvmlDeviceGetHandleByUUID",
                "nvmlDeviceGetHandleByIndex",
                "nvmlDeviceGetName",
                "nvmlDeviceGetUUID",
                "nvmlDeviceGetIndex",
                "nvmlDeviceGetMigMode",
                "nvmlDeviceGetArchitecture",
                "nvmlDeviceGetTotalEnergyConsumption",
            )
        }
        fake["nvmlDeviceGetName"].return_value = "NVIDIA H100 80GB HBM3"
        fake["nvmlDeviceGetUUID"].return_value = GPU_UUID
        fake["nvmlDeviceGetIndex"].return_value = 3
        fake["nvmlDeviceGetMigMode"].side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        fake["nvmlDeviceGetArchitecture"].return_value = pynvml.NVML_DEVICE_ARCH_HOPPER
        fake["nvmlDeviceGetTotalEnergyConsumption"].return_value = 1_000_000
        yield


def test_nvml_meter_names_the_gpu_as_dcgm_does(one_gpu: None) -> None:
    meter = NvmlMeter(uuid=GPU_UUID, start_thread=False)
    assert (meter.uuid, meter.device_label) == (GPU_UUID, "3")  # the NVML index, not CUDA's 0
    meter.close()


def test_trainer_energy_joins_dcgm_on_uuid_and_hostname(
    one_gpu: None, tmp_path: Path, rules_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real exposition from TrainerMetrics -> the labels Prometheus stores -> a PromQL join with DCGM's series."""
    monkeypatch.setenv("NODE_NAME", "gpu-node-7")
    meter = NvmlMeter(uuid=GPU_UUID, start_thread=False)
    metrics = TrainerMetrics()
    metrics.set_device(meter.uuid)
    metrics.energy.labels(gpu=meter.device_label, source=meter.source).inc(100.0)
    meter.close()
    labels = next(
        s.labels
        for fam in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in fam.samples
        if s.name == "gridwise_trainer_gpu_energy_joules_total"
    )
    assert labels == {"gpu": "3", "source": "nvml", "UUID": GPU_UUID, "Hostname": "gpu-node-7"}
    ours = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    # dcgm-exporter: the same GPU's total energy in mJ, with its own gpu/modelName/device labels.
    dcgm = f'UUID="{GPU_UUID}", Hostname="gpu-node-7", gpu="3", device="nvidia3", modelName="NVIDIA H100 80GB HBM3"'
    tests = [
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": f'gridwise_trainer_gpu_energy_joules_total{{job="gridwise-trainer", {ours}}}',
                    "values": "0+30000x10",
                },
                {"series": f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{dcgm}}}", "values": "0+60000000x10"},
            ],
            "promql_expr_test": [
                {
                    # The job's share of the GPU's energy: 30 kJ of 60 kJ a minute.
                    "expr": "sum by (UUID, Hostname) (rate(gridwise_trainer_gpu_energy_joules_total[5m]))"
                    " / on (UUID, Hostname) (sum by (UUID, Hostname) (rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[5m])) / 1000)",
                    "eval_time": "8m",
                    "exp_samples": [
                        {"labels": f'{{UUID="{GPU_UUID}", Hostname="gpu-node-7"}}', "value": 0.5}
                    ],
                }
            ],
        }
    ]
    run_promtool_tests(tmp_path, rules_file, tests)
