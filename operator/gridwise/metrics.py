"""The operator's Prometheus metrics, in base units and Prometheus naming conventions.

Per-job totals (energy, emissions, avoided emissions) are exported by a collector that
reads the operator's latest view of each job, so they are true counters (`*_total`)
without the operator keeping a second copy of state that could drift from status.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gridwise import __version__
from gridwise.api import PHASES
from gridwise.decide import KINDS, REASONS
from gridwise.progress import SCRAPE_RESULTS


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def build_labels() -> dict[str, str]:
    """What `gridwise_build_info` says is running: a version skew between replicas shows as two series."""
    return {"version": __version__, "python": platform.python_version(), "kopf": _dist_version("kopf")}


@dataclass(frozen=True)
class JobView:
    namespace: str
    name: str
    phase: str
    replicas: int
    energy_joules: float
    emissions_grams: float
    avoided_grams: float
    progress: float
    deadline_slack_seconds: float
    signal_type: str


class JobCollector(Collector):
    """Exports the latest status of every CarbonAwareJob the operator reconciled."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], JobView] = {}
        self._lock = threading.Lock()

    def update(self, view: JobView) -> None:
        with self._lock:
            self._jobs[(view.namespace, view.name)] = view

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._jobs.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            jobs = list(self._jobs.values())
        labels = ["namespace", "carbonawarejob"]
        typed = [*labels, "signal_type"]
        energy = CounterMetricFamily(
            "gridwise_job_energy_joules", "Energy used by the job's GPU replicas.", labels=labels
        )
        emissions = CounterMetricFamily(
            "gridwise_job_emissions_grams", "CO2(e) emitted by the job, in its signal type.", labels=typed
        )
        avoided = GaugeMetricFamily(
            "gridwise_job_avoided_emissions_grams",
            "CO2(e) avoided against running at once at max replicas (negative: worse).",
            labels=typed,
        )
        progress = GaugeMetricFamily(
            "gridwise_job_progress_ratio", "Fraction of the job's work done.", labels=labels
        )
        replicas = GaugeMetricFamily(
            "gridwise_job_replicas", "Replicas the job runs now (0 = paused).", labels=labels
        )
        slack = GaugeMetricFamily(
            "gridwise_job_deadline_slack_seconds",
            "Time to the deadline left after finishing the remaining work at max replicas.",
            labels=labels,
        )
        phases = GaugeMetricFamily("gridwise_jobs", "CarbonAwareJobs by phase.", labels=["phase"])
        counts = dict.fromkeys(PHASES, 0)
        for j in jobs:
            key = [j.namespace, j.name]
            energy.add_metric(key, j.energy_joules)
            emissions.add_metric([*key, j.signal_type], j.emissions_grams)
            avoided.add_metric([*key, j.signal_type], j.avoided_grams)
            progress.add_metric(key, j.progress)
            replicas.add_metric(key, j.replicas)
            slack.add_metric(key, j.deadline_slack_seconds)
            counts[j.phase] = counts.get(j.phase, 0) + 1
        for phase, n in counts.items():
            phases.add_metric([phase], n)
        yield from (energy, emissions, avoided, progress, replicas, slack, phases)


class OperatorMetrics:
    """One registry per operator instance, so tests can run several without clashes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_* (CPU, RSS, open fds, start time), python_info and python_gc_*, as on the default registry.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        labels = build_labels()
        self.build_info = Gauge(
            "gridwise_build_info",
            "Always 1; labels say which gridwise, Python and kopf this operator runs.",
            list(labels),
            registry=self.registry,
        )
        self.build_info.labels(**labels).set(1)
        self.intensity = Gauge(
            "gridwise_carbon_intensity_grams_per_kwh",
            "Current grid carbon intensity the operator plans with.",
            ["zone", "provider", "signal_type"],
            registry=self.registry,
        )
        self.forecast = Gauge(
            "gridwise_carbon_intensity_forecast_grams_per_kwh",
            "Forecast grid carbon intensity, by hours ahead.",
            ["zone", "provider", "signal_type", "hours_ahead"],
            registry=self.registry,
        )
        self.signal_stale = Gauge(
            "gridwise_carbon_signal_stale",
            "1 while the zone's carbon signal is stale (jobs keep running).",
            ["zone", "provider"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "gridwise_decisions",
            "Pause, resume and scale actions taken, by reason.",
            ["kind", "reason"],
            registry=self.registry,
        )
        # Every series exists from the start at 0, so increase() also counts the first decision.
        for kind in KINDS:
            for reason in REASONS:
                self.decisions.labels(kind=kind, reason=reason)
        self.reconcile_seconds = Histogram(
            "gridwise_reconcile_duration_seconds",
            "Time one reconcile of a CarbonAwareJob takes.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "gridwise_reconcile_errors", "Reconciles that failed and will be retried.", registry=self.registry
        )
        self.status_writes = Counter(
            "gridwise_status_writes",
            "CarbonAwareJob status writes, by what made the write worth it (interval: periodic).",
            ["reason"],
            registry=self.registry,
        )
        self.status_write_errors = Counter(
            "gridwise_status_write_errors",
            "Status writes the API server refused or did not answer; kept in memory and retried.",
            registry=self.registry,
        )
        self.zone_wakes = Counter(
            "gridwise_zone_wakes",
            "Carbon signal changes that woke every job in their zone.",
            registry=self.registry,
        )
        self.trainer_scrapes = Counter(
            "gridwise_trainer_scrapes",
            "Trainer /metrics reads per pod, by result: answered, no_answer (refused, an error or an "
            "unusable page), timed_out, or skipped (timed out within the last minute, or no answer "
            "last time while a zone wake is busy).",
            ["result"],
            registry=self.registry,
        )
        for result in SCRAPE_RESULTS:
            self.trainer_scrapes.labels(result=result)
        self.watch_events = Counter(
            "gridwise_watch_events",
            "Watch events that reached the operator, by the kind of object: the API server sends "
            "only gridwise's own Jobs and pods, and every CarbonAwareJob.",
            ["kind"],
            registry=self.registry,
        )
        self.watch_events_superseded = Counter(
            "gridwise_watch_events_superseded",
            "Watch events not handled because a newer one of the same object was already queued.",
            ["kind"],
            registry=self.registry,
        )
        self.jobs = JobCollector()
        self.registry.register(self.jobs)
