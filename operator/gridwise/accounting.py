"""Energy, emissions and the emissions avoided against running at once, integrated tick by tick.

Pure arithmetic on the previous totals, so a restarted operator continues from the
totals it wrote into the CarbonAwareJob's status and loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from gridwise.planner.scaling import throughputs

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Totals:
    """Running totals kept in status; grams are gCO2(e) in the job's signal type."""

    energy_joules: float = 0.0
    emissions_grams: float = 0.0
    work_done_gpu_hours: float = 0.0
    # The run-now counterfactual: the job started at once at max replicas.
    baseline_emissions_grams: float = 0.0
    baseline_work_gpu_hours: float = 0.0

    @property
    def baseline_grams_per_gpu_hour(self) -> float | None:
        if self.baseline_work_gpu_hours <= 0:
            return None
        return self.baseline_emissions_grams / self.baseline_work_gpu_hours

    def avoided_grams(self) -> float:
        """What running at once would have emitted for the work done so far, less what was emitted."""
        rate = self.baseline_grams_per_gpu_hour
        if rate is None:
            return 0.0
        return rate * self.work_done_gpu_hours - self.emissions_grams


def throughput(replicas: int, scaling_efficiency: float) -> float:
    """GPU-hours of single-replica work done per hour at `replicas`: the planner's scaling model."""
    return throughputs(max(replicas, 0), scaling_efficiency, None)[max(replicas, 0)]


def advance(
    totals: Totals,
    *,
    start: datetime,
    end: datetime,
    replicas: int,
    intensity_grams_per_kwh: float,
    power_per_replica_watts: float,
    scaling_efficiency: float,
    max_replicas: int,
    work_gpu_hours: float,
    measured_energy_joules: float | None = None,
    measured_work_gpu_hours: float | None = None,
) -> Totals:
    """Adds the interval [start, end) to the totals.

    Measured energy (the trainer's NVML counter) and measured work (its progress)
    replace the model's estimates when the operator could scrape them.
    """
    seconds = (end - start).total_seconds()
    if seconds <= 0:
        return totals
    hours = seconds / 3600.0
    remaining = max(0.0, work_gpu_hours - totals.work_done_gpu_hours)
    rate = throughput(replicas, scaling_efficiency)
    # Estimated replicas stop drawing power once the work is done: the trainer exits at its last step.
    busy_seconds = min(seconds, remaining / rate * 3600.0) if rate > 0 else 0.0
    energy = (
        measured_energy_joules
        if measured_energy_joules is not None
        else replicas * power_per_replica_watts * busy_seconds
    )
    work = measured_work_gpu_hours if measured_work_gpu_hours is not None else rate * hours
    work = max(0.0, min(work, remaining))
    grams = energy / J_PER_KWH * intensity_grams_per_kwh
    remaining_baseline = max(0.0, work_gpu_hours - totals.baseline_work_gpu_hours)
    baseline_rate = throughput(max_replicas, scaling_efficiency)
    baseline_hours = min(hours, remaining_baseline / baseline_rate) if baseline_rate > 0 else 0.0
    baseline_energy_kwh = max_replicas * power_per_replica_watts * baseline_hours / 1000.0
    return replace(
        totals,
        energy_joules=totals.energy_joules + energy,
        emissions_grams=totals.emissions_grams + grams,
        work_done_gpu_hours=totals.work_done_gpu_hours + work,
        baseline_emissions_grams=totals.baseline_emissions_grams
        + baseline_energy_kwh * intensity_grams_per_kwh,
        baseline_work_gpu_hours=totals.baseline_work_gpu_hours + baseline_rate * baseline_hours,
    )
