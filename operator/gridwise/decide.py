"""From a plan to one decision for now: run how many replicas, and why.

Pure: the operator, the demo and the tests call it with what they observed. The planner
says what is cleanest; this module adds the operator's safety rules on top: a stale
signal keeps the job running, the deadline guard overrides the pause budget, and a
replica count is always within min..max or 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gridwise.api import JobSpec
from gridwise.carbon import SignalReading
from gridwise.planner import Plan, PlanRequest, plan

REASON_INTENSITY = "CarbonIntensity"
REASON_FORECAST = "Forecast"
REASON_DEADLINE = "DeadlineGuard"
REASON_STALE = "CarbonSignalStale"
REASON_BASELINE = "RunNow"
MIN_RESIZE_DWELL_MINUTES = 30.0
REASONS = (REASON_INTENSITY, REASON_FORECAST, REASON_DEADLINE, REASON_STALE, REASON_BASELINE)
KINDS = ("pause", "resume", "scale")


@dataclass(frozen=True)
class Decision:
    replicas: int  # 0 = paused
    reason: str  # one of the REASON_* constants: the Event's reason
    message: str  # human-readable, for Events and status
    plan: Plan | None
    next_change_time: datetime | None = None
    next_change_replicas: int | None = None

    def kind(self, current: int) -> str:
        """pause, resume, scale, or none: how this decision changes a job running `current` replicas."""
        if self.replicas == current:
            return "none"
        if self.replicas == 0:
            return "pause"
        if current == 0:
            return "resume"
        return "scale"


def _switching_cost_gpu_hours(spec: JobSpec) -> float:
    return spec.policy.switching_cost_minutes / 60.0 * spec.max_replicas


def decide(
    spec: JobSpec,
    reading: SignalReading,
    *,
    now: datetime,
    remaining_work_gpu_hours: float,
    current_replicas: int,
    pauses_in_last_day: int,
    throughput_table: dict[int, float] | None = None,
) -> Decision:
    """The replica count for now: never a pause on a stale signal, never a missed deadline for a pause."""
    if remaining_work_gpu_hours <= 0:
        return Decision(current_replicas, REASON_FORECAST, "all planned work is done", None)
    if reading.stale or reading.current is None:
        keep = current_replicas if current_replicas > 0 else spec.max_replicas
        return Decision(
            keep,
            REASON_STALE,
            f"carbon signal unavailable ({reading.reason}); running at {keep} replicas so the deadline holds",
            None,
        )
    if spec.deadline <= now:
        return Decision(
            spec.max_replicas,
            REASON_DEADLINE,
            f"deadline {spec.deadline:%Y-%m-%d %H:%M}Z has passed with work left; running at max replicas",
            None,
        )
    horizon_end = now + timedelta(hours=spec.policy.forecast_horizon_hours)
    forecast = [p for p in (reading.current, *reading.forecast) if p.end > now and p.start < horizon_end]
    forecast = sorted({p.start: p for p in forecast}.values(), key=lambda p: p.start)
    request = PlanRequest(
        now=now,
        deadline=spec.deadline,
        remaining_work_gpu_hours=remaining_work_gpu_hours,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        power_per_replica_watts=spec.power_per_replica_watts,
        forecast=forecast,
        policy=spec.policy.type,
        threshold_grams_per_kwh=spec.policy.threshold_grams_per_kwh,
        scaling_efficiency=spec.scaling_efficiency,
        throughput_table=throughput_table,
        switching_cost_gpu_hours=_switching_cost_gpu_hours(spec),
        max_pauses_per_day=spec.policy.max_pauses_per_day,
        current_replicas=current_replicas,
        pauses_in_last_day=pauses_in_last_day,
    )
    result = plan(request)
    intensity = reading.current.grams_per_kwh
    units = f"{intensity:.0f} gCO2/kWh ({reading.signal_type})"
    if not result.feasible:
        return Decision(
            spec.max_replicas,
            REASON_DEADLINE,
            f"deadline {spec.deadline:%Y-%m-%d %H:%M}Z at risk ({result.reason}); running at max replicas",
            result,
        )
    replicas = result.replicas_now
    if replicas != 0:
        replicas = max(spec.min_replicas, min(spec.max_replicas, replicas))
    nxt = result.next_change()
    next_time, next_replicas = (nxt.start, nxt.replicas) if nxt else (None, None)
    if spec.policy.type == "agnostic":
        return Decision(
            replicas, REASON_BASELINE, "agnostic policy: run now at max", result, next_time, next_replicas
        )
    if replicas == 0:
        why = f"grid at {units}; cleaner hours ahead still meet the deadline"
        if spec.policy.type == "threshold":
            why = f"grid at {units}, above the {spec.policy.threshold_grams_per_kwh:.0f} threshold"
        return Decision(0, REASON_INTENSITY, why, result, next_time, next_replicas)
    forced = _deadline_forces(result, spec, replicas)
    if not forced and _transient_resize(result, spec, current_replicas, replicas):
        # A resize the plan undoes within minutes costs a checkpoint and a re-formed process group
        # for almost no carbon: keep the current size; the next re-plan accounts for the difference.
        replicas = current_replicas
    if forced:
        return Decision(
            replicas,
            REASON_DEADLINE,
            f"running {replicas} replicas at {units}: the remaining work needs it to meet the deadline",
            result,
            next_time,
            next_replicas,
        )
    if spec.policy.type == "threshold":
        return Decision(
            replicas,
            REASON_INTENSITY,
            f"grid at {units}, at or below the {spec.policy.threshold_grams_per_kwh:.0f} threshold",
            result,
            next_time,
            next_replicas,
        )
    return Decision(
        replicas,
        REASON_FORECAST,
        f"running {replicas} replicas at {units}: among the cleanest hours before the deadline",
        result,
        next_time,
        next_replicas,
    )


def _transient_resize(result: Plan, spec: JobSpec, current: int, new: int) -> bool:
    """True for a change between two running sizes that the plan keeps for less than the minimum dwell."""
    if current <= 0 or new <= 0 or new == current:
        return False
    dwell = timedelta(minutes=max(MIN_RESIZE_DWELL_MINUTES, 3 * spec.policy.switching_cost_minutes))
    kept = timedelta()
    for slot in result.slots:
        if slot.replicas != result.replicas_now:
            break
        kept += slot.end - slot.start
    return kept < dwell


def _deadline_forces(result: Plan, spec: JobSpec, replicas: int) -> bool:
    """True when the plan runs every slot until it finishes: no slack left to choose cleaner hours."""
    running = [s for s in result.slots if s.replicas > 0]
    return bool(running) and len(running) == len(result.slots) and replicas == spec.max_replicas
