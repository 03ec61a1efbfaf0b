"""Scrape /metrics over HTTP after a real run and check names, types, labels and units."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gridwise_trainer.data import Dataset
from gridwise_trainer.metrics import TrainerMetrics

from .conftest import make_config, make_trainer

EXPECTED = {
    # family name as parsed -> (type, label names)
    # UUID and Hostname: dcgm-exporter's labels, so GPU series join with DCGM and Kepler.
    "gridwise_trainer_gpu_energy_joules": ("counter", {"gpu", "source", "UUID", "Hostname"}),
    "gridwise_trainer_gpu_power_watts": ("gauge", {"gpu", "source", "UUID", "Hostname"}),
    "gridwise_trainer_gpu_utilization_ratio": ("gauge", {"gpu", "UUID", "Hostname"}),
    "gridwise_trainer_steps": ("counter", set()),
    "gridwise_trainer_samples": ("counter", set()),
    "gridwise_trainer_loss": ("gauge", set()),
    "gridwise_trainer_accuracy_ratio": ("gauge", set()),
    "gridwise_trainer_emissions_grams": ("counter", set()),
    "gridwise_trainer_carbon_intensity_grams_per_kwh": ("gauge", {"signal_type"}),
    "gridwise_trainer_progress_ratio": ("gauge", set()),
    "gridwise_trainer_sparsity_ratio": ("gauge", set()),
    "gridwise_trainer_precision_info": ("gauge", {"dtype"}),
    "gridwise_trainer_throughput_samples_per_second": ("gauge", {"world_size"}),
    "gridwise_trainer_checkpoints": ("counter", set()),
    "gridwise_trainer_checkpoint_seconds": ("histogram", set()),
}


def test_metrics_over_http(tmp_path: Path, digits: Dataset) -> None:
    metrics = TrainerMetrics()
    cfg = make_config(tmp_path, total_steps=100, checkpoint_every=50, adapt_window_steps=20, model="mlp")
    res = make_trainer(cfg, digits, metrics, model="mlp").run()
    port = metrics.serve(0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.shutdown()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    for name, (kind, labels) in EXPECTED.items():
        assert name in families, f"{name} missing"
        fam = families[name]
        assert fam.type == kind, f"{name} is {fam.type}"
        for s in fam.samples:
            if not s.name.endswith(("_created", "_bucket")):
                assert set(s.labels) == labels, f"{s.name} labels {s.labels}"

    def value(sample_name: str, **labels: str) -> float:
        for fam in families.values():
            for s in fam.samples:
                if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        raise AssertionError(f"{sample_name}{labels} not exposed")

    # The exact series names dashboards and the operator use, with units in the name.
    assert value("gridwise_trainer_steps_total") == 100
    assert value("gridwise_trainer_samples_total") == 100 * cfg.batch_size
    assert value("gridwise_trainer_progress_ratio") == 1.0
    energy = value("gridwise_trainer_gpu_energy_joules_total", gpu="cpu", source="estimate")
    assert energy > 0
    # emissions (g) = energy (J) / 3.6e6 J/kWh * intensity (g/kWh)
    assert abs(value("gridwise_trainer_emissions_grams_total") - energy / 3.6e6 * 250.0) < 1e-9
    assert value("gridwise_trainer_carbon_intensity_grams_per_kwh", signal_type="average") == 250.0
    assert 0 < value("gridwise_trainer_gpu_power_watts", gpu="cpu", source="estimate") <= 85.0
    assert 0 <= value("gridwise_trainer_gpu_utilization_ratio", gpu="cpu") <= 1
    assert value("gridwise_trainer_precision_info", dtype="float32") == 1
    # An info metric: one series, value 1; the dtypes not in use are absent, not 0.
    assert [s.labels["dtype"] for s in families["gridwise_trainer_precision_info"].samples] == ["float32"]
    assert value("gridwise_trainer_accuracy_ratio") == res.accuracy
    assert value("gridwise_trainer_checkpoints_total") == 2
    assert value("gridwise_trainer_checkpoint_seconds_count") == 2
    assert value("gridwise_trainer_throughput_samples_per_second", world_size="1") > 0
    assert value("gridwise_trainer_sparsity_ratio") == 0.0


def test_counters_continue_after_resume(tmp_path: Path, digits: Dataset) -> None:
    cfg = make_config(tmp_path, total_steps=60, checkpoint_every=30, model="mlp")
    make_trainer(cfg, digits, model="mlp").run()
    cfg2 = make_config(tmp_path, total_steps=90, checkpoint_every=30, model="mlp")
    metrics = TrainerMetrics()
    make_trainer(cfg2, digits, metrics, model="mlp").run()
    assert metrics.registry.get_sample_value("gridwise_trainer_steps_total") == 90
    assert metrics.registry.get_sample_value("gridwise_trainer_checkpoints_total") == 3
