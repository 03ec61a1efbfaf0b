"""Prometheus metrics on their own registry; names are a contract with dashboards and the operator."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .energy import node_name

log = logging.getLogger(__name__)

# dcgm-exporter's label names, so `on (UUID, Hostname)` joins our series with
# DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (and Kepler's node series by Hostname).
DEVICE_LABELS = ("UUID", "Hostname")


class _DeviceMetric:
    """A GPU metric whose device labels come from the meter in use, so callers keep passing gpu/source."""

    def __init__(self, metric: Any, device: dict[str, str]) -> None:
        self._metric, self._device = metric, device

    def labels(self, **labels: str) -> Any:
        return self._metric.labels(**labels, **self._device)


class TrainerMetrics:
    """All gridwise_trainer_* series. Counters are restored from checkpoints so they never go back."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self._device = {"UUID": "", "Hostname": node_name()}
        self.energy = _DeviceMetric(
            Counter(
                "gridwise_trainer_gpu_energy_joules",
                "Energy used by this job's accelerator (or CPU fallback), J.",
                ["gpu", "source", *DEVICE_LABELS],
                registry=r,
            ),
            self._device,
        )
        self.power = _DeviceMetric(
            Gauge(
                "gridwise_trainer_gpu_power_watts",
                "Latest power draw, W.",
                ["gpu", "source", *DEVICE_LABELS],
                registry=r,
            ),
            self._device,
        )
        self.utilization = _DeviceMetric(
            Gauge(
                "gridwise_trainer_gpu_utilization_ratio",
                "Device utilisation, 0..1.",
                ["gpu", *DEVICE_LABELS],
                registry=r,
            ),
            self._device,
        )
        self.steps = Counter("gridwise_trainer_steps", "Optimizer steps taken.", registry=r)
        self.samples = Counter("gridwise_trainer_samples", "Training samples processed.", registry=r)
        self.loss = Gauge("gridwise_trainer_loss", "Latest training loss.", registry=r)
        self.accuracy = Gauge(
            "gridwise_trainer_accuracy_ratio", "Latest held-out accuracy, 0..1.", registry=r
        )
        self.emissions = Counter(
            "gridwise_trainer_emissions_grams", "CO2-equivalent attributed to this job, g.", registry=r
        )
        self.intensity = Gauge(
            "gridwise_trainer_carbon_intensity_grams_per_kwh",
            "Grid carbon intensity in use, gCO2/kWh.",
            ["signal_type"],
            registry=r,
        )
        self.progress = Gauge(
            "gridwise_trainer_progress_ratio",
            "Fraction of planned work done (steps / total steps).",
            registry=r,
        )
        self.sparsity = Gauge(
            "gridwise_trainer_sparsity_ratio",
            "Fraction of parameters removed by structured pruning.",
            registry=r,
        )
        self.precision = Gauge(
            "gridwise_trainer_precision_info",
            "Always 1; the dtype label names the compute dtype in use (one series).",
            ["dtype"],
            registry=r,
        )
        self.throughput = Gauge(
            "gridwise_trainer_throughput_samples_per_second",
            "Training throughput, samples/s.",
            ["world_size"],
            registry=r,
        )
        self.checkpoints = Counter("gridwise_trainer_checkpoints", "Checkpoints written.", registry=r)
        self.checkpoint_seconds = Histogram(
            "gridwise_trainer_checkpoint_seconds",
            "Time to write one checkpoint, s.",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.adaptations = Counter(
            "gridwise_trainer_adaptations",
            "Carbon-loop trials by knob and outcome.",
            ["knob", "outcome"],
            registry=r,
        )

    def set_device(self, uuid: str, hostname: str | None = None) -> None:
        """Name the measured GPU as dcgm-exporter does; call before the first sample is recorded."""
        self._device["UUID"] = uuid
        if hostname is not None:
            self._device["Hostname"] = hostname

    def set_precision(self, dtype: str) -> None:
        """An info metric has one series at 1: the old dtype's series goes, it does not drop to 0."""
        self.precision.clear()
        self.precision.labels(dtype=dtype).set(1)

    def restore(self, counters: dict[str, Any], gpu: str, source: str) -> None:
        """Continue counters from a checkpoint: a resumed pod must not report a counter reset as work."""
        self.steps.inc(float(counters.get("steps", 0)))
        self.samples.inc(float(counters.get("samples", 0)))
        self.emissions.inc(float(counters.get("emissions_g", 0.0)))
        self.energy.labels(gpu=gpu, source=source).inc(float(counters.get("energy_j", 0.0)))
        self.checkpoints.inc(float(counters.get("checkpoints", 0)))

    def serve(self, port: int) -> int:
        """Start the /metrics HTTP server; returns the bound port (port 0 picks a free one)."""
        server, _thread = start_http_server(port, registry=self.registry)
        bound = int(server.server_port)
        log.info("metrics on http://0.0.0.0:%d/metrics", bound)
        self._server = server
        return bound

    def shutdown(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
