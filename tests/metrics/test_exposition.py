"""The operator's and the trainer's /metrics pass `promtool check metrics` (Prometheus' own naming lint),
and carry gridwise_build_info and the process collectors. No cluster needed; promtool must be installed
(hack/install-prometheus.sh)."""

from __future__ import annotations

import platform
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gridwise import __version__
from gridwise.metrics import JobView, OperatorMetrics
from gridwise_trainer.metrics import TrainerMetrics


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found: run hack/install-prometheus.sh (apt package prometheus)", pytrace=False
        )
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )


def operator_exposition() -> str:
    m = OperatorMetrics()
    m.intensity.labels(zone="ES", provider="trace", signal_type="average").set(200)
    m.forecast.labels(zone="ES", provider="trace", signal_type="average", hours_ahead="1").set(180)
    m.signal_stale.labels(zone="ES", provider="trace").set(0)
    m.reconcile_seconds.observe(0.1)
    m.reconcile_errors.inc()
    m.jobs.update(JobView("ml", "j", "Running", 2, 100.0, 5.0, 1.0, 0.5, 3600.0, "average"))
    return str(generate_latest(m.registry).decode())


def trainer_exposition() -> str:
    t = TrainerMetrics()
    t.set_device("GPU-8f0c4f7e-1d2a-4b1e-9c1e-0123456789ab", "node-1")
    t.energy.labels(gpu="0", source="nvml").inc(5)
    t.power.labels(gpu="0", source="nvml").set(300)
    t.utilization.labels(gpu="0").set(0.5)
    t.set_precision("float32")
    t.set_precision("bfloat16")
    t.intensity.labels(signal_type="average").set(200)
    t.throughput.labels(world_size="1").set(100)
    t.adaptations.labels(knob="precision", outcome="kept").inc()
    t.checkpoint_seconds.observe(0.5)
    return str(generate_latest(t.registry).decode())


@pytest.mark.parametrize("exposition", [operator_exposition, trainer_exposition], ids=["operator", "trainer"])
def test_promtool_check_metrics_is_clean(exposition: object) -> None:
    assert callable(exposition)
    proc = promtool_check(exposition())
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_promtool_check_metrics_bites() -> None:
    r = CollectorRegistry()
    Gauge("gridwise_energy_kilowatt_hours", "Not base units.", registry=r).set(1)
    proc = promtool_check(generate_latest(r).decode())
    assert proc.returncode != 0 and "gridwise_energy_kilowatt_hours" in proc.stdout + proc.stderr


def test_operator_exports_build_info_and_process_metrics() -> None:
    families = {f.name: f for f in text_string_to_metric_families(operator_exposition())}
    (info,) = families["gridwise_build_info"].samples
    assert info.value == 1
    assert info.labels["version"] == __version__ and info.labels["python"] == platform.python_version()
    assert info.labels["kopf"] != "none"  # the operator extra is installed here
    for name in (
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "python_info",
    ):
        assert name in families, name


def test_precision_info_keeps_only_the_dtype_in_use() -> None:
    families = {f.name: f for f in text_string_to_metric_families(trainer_exposition())}
    samples = families["gridwise_trainer_precision_info"].samples
    assert [(s.labels["dtype"], s.value) for s in samples] == [("bfloat16", 1.0)]
