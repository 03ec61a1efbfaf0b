"""The one place the simulator calls the live operator's code: `decide()` and `accounting.advance`.

Everything the operator would see is built here from the simulation's state (a JobSpec, the fresh
SignalReading a live CarbonSignal would hand out, with its error band), so a simulated decision is the
operator's decision, with its shading, dwell, stale-signal, deadline-guard and clamp rules. When those
functions change signature, this module is the fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gridwise import accounting
from gridwise.api import JobSpec, PolicySpec
from gridwise.carbon.reading import SignalReading
from gridwise.decide import decide
from gridwise.planner.risk import DEFAULT_RISK_FRACTION, DEFAULT_RISK_RAMP_HOURS
from gridwise.simulate.forecasts import Live
from gridwise.simulate.jobs import SimJob

# The operator's default pause budget (api.PolicySpec): the simulator uses it unless told otherwise.
DEFAULT_MAX_PAUSES_PER_DAY = PolicySpec().max_pauses_per_day
UNCAPPED_PAUSES = 10**6
_OBSERVED_PODS_ACCOUNTING = "model" in inspect.signature(accounting.advance).parameters


@dataclass(frozen=True)
class OperatorSettings:
    policy: str  # agnostic | threshold | forecast
    switching_cost_gpu_hours: float
    max_pauses_per_day: int | None
    forecast_horizon_hours: int = PolicySpec().forecast_horizon_hours


def job_spec(job: SimJob, settings: OperatorSettings, threshold: float | None) -> JobSpec:
    """The CarbonAwareJob the operator would hold for this simulated job."""
    return JobSpec(
        name=job.name,
        namespace="simulate",
        min_replicas=job.min_replicas,
        max_replicas=job.max_replicas,
        deadline=job.deadline,
        work_gpu_hours=job.work_gpu_hours,
        total_steps=1,
        scaling_efficiency=job.scaling_efficiency,
        power_per_replica_watts=job.power_per_replica_watts,
        carbon={},
        policy=PolicySpec(
            type=settings.policy,
            threshold_grams_per_kwh=threshold,
            forecast_horizon_hours=settings.forecast_horizon_hours,
            max_pauses_per_day=(
                UNCAPPED_PAUSES if settings.max_pauses_per_day is None else settings.max_pauses_per_day
            ),
            # decide() prices a resume as switching_cost_minutes at max replicas: invert that.
            switching_cost_minutes=settings.switching_cost_gpu_hours * 60.0 / job.max_replicas,
        ),
        grace_period_seconds=0,
        checkpoint_path="/checkpoints",
        checkpoint_claim=None,
        template={},
    )


def reading(zone: str, signal_type: str, live: Live, now: datetime) -> SignalReading:
    """The fresh reading a live CarbonSignal hands out: current value, forecast, its error band."""
    return SignalReading(
        zone=zone,
        provider="simulate",
        signal_type=signal_type,
        current=live.current,
        forecast=live.forecast,
        stale=False,
        reason="ok" + live.note,
        fetched_at=now,
        forecast_upper=live.upper_error,
    )


def replicas_now(
    spec: JobSpec,
    signal: SignalReading,
    *,
    now: datetime,
    remaining_work_gpu_hours: float,
    current_replicas: int,
    pauses_in_last_day: int,
    risk_fraction: float = DEFAULT_RISK_FRACTION,
    risk_ramp_hours: float = DEFAULT_RISK_RAMP_HOURS,
) -> int:
    """The operator's replica count for now (decide() shades the forecast policy with the band)."""
    return decide(
        spec,
        signal,
        now=now,
        remaining_work_gpu_hours=remaining_work_gpu_hours,
        current_replicas=current_replicas,
        pauses_in_last_day=pauses_in_last_day,
        risk_fraction=risk_fraction,
        risk_ramp_hours=risk_ramp_hours,
    ).replicas


def book(
    totals: accounting.Totals,
    job: SimJob,
    *,
    start: datetime,
    end: datetime,
    replicas: int,
    intensity: float,
    work_gpu_hours: float,
) -> accounting.Totals:
    """Energy, emissions and work for [start, end) at a constant intensity, as the operator books them.

    `work_gpu_hours` is the job's total including the work lost to resumes so far. Both signatures of
    `accounting.advance` are handled: the per-tick one (replicas, intensity) and the observed-pods one
    (before/after Usage, intensity changes, Model) the reconcile rework introduces.
    """
    advance: Callable[..., accounting.Totals] = accounting.advance
    if _OBSERVED_PODS_ACCOUNTING:
        usage = getattr(accounting, "Usage")(working=replicas, drawing=replicas)  # noqa: B009
        model: Any = getattr(accounting, "Model")(  # noqa: B009
            power_per_replica_watts=job.power_per_replica_watts,
            scaling_efficiency=job.scaling_efficiency,
            max_replicas=job.max_replicas,
            work_gpu_hours=work_gpu_hours,
        )
        return advance(
            totals,
            start=start,
            end=end,
            before=usage,
            after=usage,
            intensities=[(start, intensity)],
            model=model,
        )
    return advance(
        totals,
        start=start,
        end=end,
        replicas=replicas,
        intensity_grams_per_kwh=intensity,
        power_per_replica_watts=job.power_per_replica_watts,
        scaling_efficiency=job.scaling_efficiency,
        max_replicas=job.max_replicas,
        work_gpu_hours=work_gpu_hours,
    )


def new_totals() -> accounting.Totals:
    return accounting.Totals()


def energy_kwh(totals: accounting.Totals) -> float:
    return totals.energy_joules / accounting.J_PER_KWH
