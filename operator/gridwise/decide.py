"""From a plan to one decision for now: run how many replicas, and why.

Pure: the operator, the demo and the tests call it with what they observed. The planner
says what is cleanest; this module adds the operator's safety rules on top:

- a signal degrades in steps: fresh -> fresh current value, but the provider's forecast refused
  (its paid tier; plan on our own forecast) -> stale but still inside the last good forecast (keep
  following that forecast) -> nothing covers now (run at the width the deadline requires, never
  paused, never blindly at max);
- the deadline guard overrides the pause budget;
- a replica count is always within min..max or 0;
- the forecast policy plans on the forecast raised by `risk_fraction` of the reading's upper error
  band (planner/risk.py), so it defers work only when the saving beats how wrong the forecast can be;
  the share ramps in over `risk_ramp_hours` of lead (a slot re-planned within the hour is trusted).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from gridwise.api import JobSpec
from gridwise.carbon import IntensityPoint, SignalReading
from gridwise.planner import Plan, PlanRequest, plan
from gridwise.planner.risk import DEFAULT_RISK_FRACTION, DEFAULT_RISK_RAMP_HOURS, shade_points
from gridwise.planner.scaling import throughputs

REASON_INTENSITY = "CarbonIntensity"
REASON_FORECAST = "Forecast"
REASON_DEADLINE = "DeadlineGuard"
REASON_STALE = "CarbonSignalStale"
REASON_STALE_FORECAST = "StaleForecast"
REASON_BASELINE = "RunNow"
REASON_DONE = "WorkDone"
MIN_RESIZE_DWELL_MINUTES = 30.0
# Without a signal the job runs at the fewest replicas that finish with this share of the time
# to the deadline left over (and at least DEADLINE_MARGIN_MIN_HOURS): room for restarts.
DEADLINE_MARGIN = 0.2
DEADLINE_MARGIN_MIN_HOURS = 0.5
REASONS = (
    REASON_INTENSITY,
    REASON_FORECAST,
    REASON_DEADLINE,
    REASON_STALE,
    REASON_STALE_FORECAST,
    REASON_BASELINE,
    REASON_DONE,
)
KINDS = ("pause", "resume", "scale")

# Signal steps (the CarbonSignalStale condition's reasons).
SIGNAL_FRESH = "Fresh"
SIGNAL_OWN_FORECAST = "ProviderForecastUnavailable"
SIGNAL_FOLLOWING_FORECAST = "FollowingLastForecast"
SIGNAL_NONE = "NoUsableSignal"

# DeadlineAtRisk reasons.
RISK_ON_TRACK = "OnTrack"
RISK_INFEASIBLE = "Infeasible"
RISK_PASSED = "DeadlinePassed"
RISK_NO_PLAN = "NoPlan"
RISK_DONE = "WorkDone"


@dataclass(frozen=True)
class Decision:
    replicas: int  # 0 = paused
    reason: str  # one of the REASON_* constants: the Event's reason
    message: str  # human-readable, for Events and status
    plan: Plan | None
    next_change_time: datetime | None = None
    next_change_replicas: int | None = None
    signal: str = SIGNAL_FRESH  # which step of signal degradation the decision was made on
    risk: str = RISK_ON_TRACK  # the DeadlineAtRisk reason

    def kind(self, current: int) -> str:
        """pause, resume, scale, or none: how this decision changes a job running `current` replicas."""
        if self.replicas == current:
            return "none"
        if self.replicas == 0:
            return "pause"
        if current == 0:
            return "resume"
        return "scale"

    def deadline_condition(self) -> tuple[str, str, str]:
        """(status, reason, message) of DeadlineAtRisk: Unknown when no plan backs a verdict."""
        if self.risk in (RISK_INFEASIBLE, RISK_PASSED):
            return "True", self.risk, self.message
        if self.risk == RISK_ON_TRACK:
            return "False", RISK_ON_TRACK, "the plan meets the deadline"
        if self.risk == RISK_DONE:
            return "False", RISK_DONE, "all planned work is done"
        return "Unknown", RISK_NO_PLAN, f"no carbon plan: {self.message}"


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
    risk_fraction: float = DEFAULT_RISK_FRACTION,
    risk_ramp_hours: float = DEFAULT_RISK_RAMP_HOURS,
) -> Decision:
    """The replica count for now: never a pause without a signal, never a missed deadline for a pause.

    `risk_fraction` is the share of the error band the forecast policy plans on, reached at
    `risk_ramp_hours` of lead (0 = at every lead). The live operator uses the defaults; the simulator's
    `--risk` varies the fraction to check the choice.
    """
    if remaining_work_gpu_hours <= 0:
        if current_replicas == 0:
            # The count says done but the Job has not completed (the estimate ran ahead of the trainer,
            # or the last interval was booked as the pods stopped): only a running trainer can finish
            # it, and a Job left paused here would wait for ever.
            return Decision(
                max(1, spec.min_replicas),
                REASON_DONE,
                "the work is counted done but the Job has not completed; running so the trainer can finish",
                None,
                risk=RISK_DONE,
            )
        return Decision(current_replicas, REASON_DONE, "all planned work is done", None, risk=RISK_DONE)
    if spec.deadline <= now:
        return Decision(
            spec.max_replicas,
            REASON_DEADLINE,
            f"deadline {spec.deadline:%Y-%m-%d %H:%M}Z has passed with work left; running at max replicas",
            None,
            signal=_signal_step(reading, now),
            risk=RISK_PASSED,
        )
    current = _covering(reading, now)
    if current is None:
        return _deadline_only(
            spec, reading, now, remaining_work_gpu_hours, current_replicas, throughput_table
        )
    decision = _planned(
        spec,
        reading,
        current,
        now=now,
        remaining_work_gpu_hours=remaining_work_gpu_hours,
        current_replicas=current_replicas,
        pauses_in_last_day=pauses_in_last_day,
        throughput_table=throughput_table,
        risk_fraction=risk_fraction,
        risk_ramp_hours=risk_ramp_hours,
    )
    if not reading.stale:
        return replace(decision, signal=_signal_step(reading, now))
    reason = decision.reason if decision.reason == REASON_DEADLINE else REASON_STALE_FORECAST
    return Decision(
        decision.replicas,
        reason,
        f"{decision.message} (signal stale: following the last good forecast; {reading.reason})",
        decision.plan,
        decision.next_change_time,
        decision.next_change_replicas,
        signal=SIGNAL_FOLLOWING_FORECAST,
        risk=decision.risk,
    )


def _signal_step(reading: SignalReading, now: datetime) -> str:
    if not reading.stale and _covering(reading, now) is not None:
        return SIGNAL_OWN_FORECAST if reading.forecast_unavailable else SIGNAL_FRESH
    return SIGNAL_NONE if _covering(reading, now) is None else SIGNAL_FOLLOWING_FORECAST


def signal_step(reading: SignalReading | None, now: datetime) -> str:
    """Which degradation step a reading is in, best first: Fresh, ProviderForecastUnavailable,
    FollowingLastForecast or NoUsableSignal."""
    return SIGNAL_NONE if reading is None else _signal_step(reading, now)


def _covering(reading: SignalReading, now: datetime) -> IntensityPoint | None:
    """The reading's value for now: its current point, or the forecast point that covers now."""
    for point in (reading.current, *reading.forecast):
        if point is not None and point.start <= now < point.end:
            return point
    if not reading.stale and reading.current is not None:
        return reading.current  # a fresh value is the value now even if its slot is reported loosely
    return None


def deadline_width(
    spec: JobSpec,
    now: datetime,
    remaining_work_gpu_hours: float,
    throughput_table: dict[int, float] | None = None,
) -> int:
    """Fewest replicas that finish the remaining work before the deadline with a margin (else max)."""
    hours_left = (spec.deadline - now).total_seconds() / 3600.0
    usable = hours_left - max(DEADLINE_MARGIN * hours_left, DEADLINE_MARGIN_MIN_HOURS)
    rates = throughputs(spec.max_replicas, spec.scaling_efficiency, throughput_table)
    for n in range(spec.min_replicas, spec.max_replicas + 1):
        rate = rates[n]
        if rate > 0 and usable > 0 and remaining_work_gpu_hours / rate <= usable:
            return n
    return spec.max_replicas


def must_run_now(
    spec: JobSpec,
    now: datetime,
    remaining_work_gpu_hours: float,
    throughput_table: dict[int, float] | None = None,
    lookahead: timedelta = timedelta(hours=1),
) -> bool:
    """True when waiting `lookahead` longer would leave too little time even at max replicas."""
    rate = throughputs(spec.max_replicas, spec.scaling_efficiency, throughput_table)[spec.max_replicas]
    if remaining_work_gpu_hours <= 0:
        return False
    if rate <= 0:
        return True
    later = now + lookahead
    hours_left = (spec.deadline - later).total_seconds() / 3600.0
    usable = hours_left - max(DEADLINE_MARGIN * hours_left, DEADLINE_MARGIN_MIN_HOURS)
    return remaining_work_gpu_hours / rate > usable


def _deadline_only(
    spec: JobSpec,
    reading: SignalReading,
    now: datetime,
    remaining: float,
    current_replicas: int,
    throughput_table: dict[int, float] | None,
) -> Decision:
    """No value covers now: run (never pause) at the width the deadline requires; keep a larger size."""
    need = deadline_width(spec, now, remaining, throughput_table)
    keep = max(need, current_replicas) if current_replicas > 0 else need
    keep = max(spec.min_replicas, min(spec.max_replicas, keep))
    rates = throughputs(spec.max_replicas, spec.scaling_efficiency, throughput_table)
    hours_left = (spec.deadline - now).total_seconds() / 3600.0
    fits = rates[spec.max_replicas] > 0 and remaining / rates[spec.max_replicas] <= hours_left
    return Decision(
        keep,
        REASON_STALE,
        f"carbon signal unavailable ({reading.reason}); running {keep} of {spec.max_replicas} replicas, "
        "what the deadline requires",
        None,
        signal=SIGNAL_NONE,
        risk=RISK_NO_PLAN if fits else RISK_INFEASIBLE,
    )


def _planned(
    spec: JobSpec,
    reading: SignalReading,
    current: IntensityPoint,
    *,
    now: datetime,
    remaining_work_gpu_hours: float,
    current_replicas: int,
    pauses_in_last_day: int,
    throughput_table: dict[int, float] | None,
    risk_fraction: float,
    risk_ramp_hours: float,
) -> Decision:
    forecast = _planning_forecast(spec, reading, current, now, risk_fraction, risk_ramp_hours)
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
    intensity = current.grams_per_kwh
    units = f"{intensity:.0f} gCO2/kWh ({reading.signal_type})"
    if not result.feasible:
        return Decision(
            spec.max_replicas,
            REASON_DEADLINE,
            f"deadline {spec.deadline:%Y-%m-%d %H:%M}Z at risk ({result.reason}); running at max replicas",
            result,
            risk=RISK_INFEASIBLE,
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


def _planning_forecast(
    spec: JobSpec,
    reading: SignalReading,
    current: IntensityPoint,
    now: datetime,
    risk_fraction: float,
    risk_ramp_hours: float = DEFAULT_RISK_RAMP_HOURS,
) -> list[IntensityPoint]:
    """The points the planner gets: now's value, then the forecast to the policy's horizon, shaded.

    Only predicted points are shaded, each by its own band and lead; a measured current value is not.
    """
    horizon_end = now + timedelta(hours=spec.policy.forecast_horizon_hours)
    band = {id(p): e for p, e in zip(reading.forecast, reading.upper_error(), strict=True)}
    points = (current, *(p for p in (reading.current, *reading.forecast) if p is not None))
    kept = [p for p in points if p.end > now and p.start < horizon_end]
    ordered = sorted({p.start: p for p in kept}.values(), key=lambda p: p.start)
    if spec.policy.type != "forecast" or not reading.forecast_upper:
        return ordered
    bands = [band.get(id(p), 0.0) for p in ordered]
    return shade_points(ordered, bands, risk_fraction, now=now, ramp_hours=risk_ramp_hours)


def _transient_resize(result: Plan, spec: JobSpec, current: int, new: int) -> bool:
    """True for a change between two running sizes that the plan keeps for less than the minimum dwell."""
    if current <= 0 or new <= 0 or new == current:
        return False
    dwell = timedelta(minutes=max(MIN_RESIZE_DWELL_MINUTES, 3 * spec.policy.switching_cost_minutes))
    return result.kept_from_now() < dwell


def _deadline_forces(result: Plan, spec: JobSpec, replicas: int) -> bool:
    """True when the plan runs every slot until it finishes: no slack left to choose cleaner hours."""
    counts = result.replicas
    return bool(counts) and all(n > 0 for n in counts) and replicas == spec.max_replicas
