"""Replays a trace through the same `plan()` the operator uses, re-planning every slot (receding horizon).

Each slot, every active job gets a fresh plan from the forecast known at that time; the simulator then
runs only the plan's first slot against the ACTUAL intensity and moves on. Jobs start at the first slot
boundary after submission; a resume costs `switching_cost_gpu_hours` of extra work; jobs do not
compete for GPUs (the cluster is assumed large enough).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gridwise.carbon.traces import Trace
from gridwise.planner import PlanRequest, plan
from gridwise.planner.model import DEFAULT_SWITCHING_COST_GPU_HOURS
from gridwise.planner.scaling import throughputs
from gridwise.planner.slots import EPOCH
from gridwise.simulate.forecasts import ForecastSource
from gridwise.simulate.jobs import SimJob

DAY = timedelta(days=1)


@dataclass(frozen=True)
class SimSettings:
    policy: str
    slot: timedelta
    threshold_grams_per_kwh: float | None = None  # None: median of the past 7 days, re-read every slot
    switching_cost_gpu_hours: float = DEFAULT_SWITCHING_COST_GPU_HOURS
    max_pauses_per_day: int | None = None


@dataclass
class JobResult:
    name: str
    submit: datetime
    deadline: datetime
    work_gpu_hours: float
    feasible: bool
    finish: datetime | None = None
    emissions_g: float = 0.0
    energy_kwh: float = 0.0
    pauses: int = 0
    timeline: list[tuple[datetime, int]] = field(default_factory=list)

    @property
    def deadline_met(self) -> bool:
        return self.finish is not None and self.finish <= self.deadline


@dataclass(frozen=True)
class SimResult:
    policy: str
    forecast: str
    trace: Trace
    jobs: tuple[JobResult, ...]

    @property
    def emissions_g(self) -> float:
        return sum(j.emissions_g for j in self.jobs)

    @property
    def energy_kwh(self) -> float:
        return sum(j.energy_kwh for j in self.jobs)

    @property
    def deadlines_met(self) -> int:
        return sum(1 for j in self.jobs if j.deadline_met)

    @property
    def feasible_jobs(self) -> int:
        return sum(1 for j in self.jobs if j.feasible)

    @property
    def feasible_deadlines_met(self) -> int:
        return sum(1 for j in self.jobs if j.feasible and j.deadline_met)

    @property
    def pauses(self) -> int:
        return sum(j.pauses for j in self.jobs)


def _align_up(when: datetime, slot: timedelta) -> datetime:
    steps = -((EPOCH - when) // slot)
    return EPOCH + slot * steps


class _Running:
    def __init__(self, job: SimJob, start: datetime, switch: float) -> None:
        self.job = job
        self.start = start
        self.rates = throughputs(job.max_replicas, job.scaling_efficiency, None)
        self.remaining = job.work_gpu_hours
        self.replicas = 0
        self.pause_times: list[datetime] = []
        hours = (job.deadline - start).total_seconds() / 3600
        self.result = JobResult(
            job.name,
            job.submit,
            job.deadline,
            job.work_gpu_hours,
            feasible=self.rates[job.max_replicas] * hours >= job.work_gpu_hours + switch - 1e-9,
        )


def _threshold(trace: Trace, now: datetime) -> float:
    index = trace.index_of(now)
    window = trace.values[max(0, index - int(7 * DAY / trace.step)) : index]
    return statistics.median(window) if window else trace.values[0]


def simulate(trace: Trace, jobs: list[SimJob], settings: SimSettings, forecasts: ForecastSource) -> SimResult:
    slot = settings.slot
    if slot < trace.step or (slot / trace.step) != int(slot / trace.step):
        raise ValueError(f"the slot ({slot}) must be a multiple of the trace step ({trace.step})")
    pending = sorted(jobs, key=lambda j: j.submit)
    for job in pending:
        if job.submit < trace.start or job.deadline > trace.end:
            raise ValueError(
                f"job {job.name!r} runs {job.submit:%Y-%m-%d %H:%M} .. {job.deadline:%Y-%m-%d %H:%M} UTC, "
                f"outside the trace ({trace.start:%Y-%m-%d} .. {trace.end:%Y-%m-%d})"
            )
    switch = settings.switching_cost_gpu_hours
    active: list[_Running] = []
    results: list[JobResult] = []
    now = _align_up(pending[0].submit, slot)
    steps_per_slot = int(slot / trace.step)
    while (pending or active) and now + slot <= trace.end:
        while pending and _align_up(pending[0].submit, slot) <= now:
            run = _Running(pending.pop(0), now, switch)
            active.append(run)
            results.append(run.result)
        if not active:
            now = _align_up(pending[0].submit, slot)
            continue
        horizon = max(max(r.job.deadline for r in active), now + slot)
        # The oracle always knows the actual future; other policies see the chosen forecaster.
        forecast = forecasts.at(now, horizon)
        oracle_forecast = tuple(trace.points(trace.index_of(now), trace.index_of(horizon - trace.step) + 1))
        threshold = settings.threshold_grams_per_kwh
        if settings.policy == "threshold" and threshold is None:
            threshold = _threshold(trace, now)
        actual = trace.values[trace.index_of(now) : trace.index_of(now) + steps_per_slot]
        step_hours = trace.step.total_seconds() / 3600
        for run in list(active):
            job = run.job
            recent = [t for t in run.pause_times if now - t < DAY]
            request = PlanRequest(
                now=now,
                deadline=max(job.deadline, now),
                remaining_work_gpu_hours=run.remaining,
                min_replicas=job.min_replicas,
                max_replicas=job.max_replicas,
                power_per_replica_watts=job.power_per_replica_watts,
                forecast=oracle_forecast if settings.policy == "oracle" else forecast,
                policy=settings.policy,
                threshold_grams_per_kwh=threshold,
                scaling_efficiency=job.scaling_efficiency,
                switching_cost_gpu_hours=switch,
                max_pauses_per_day=settings.max_pauses_per_day,
                current_replicas=run.replicas,
                slot_minutes=int(slot.total_seconds() // 60),
                pauses_in_last_day=len(recent),
            )
            replicas = plan(request).replicas_now
            result = run.result
            if replicas == 0:
                if run.replicas > 0:
                    result.pauses += 1
                    run.pause_times.append(now)
                run.replicas = 0
                result.timeline.append((now, 0))
                continue
            if run.replicas == 0:
                run.remaining += switch
            run.replicas = replicas
            result.timeline.append((now, replicas))
            rate = run.rates[replicas]
            power_kw = replicas * job.power_per_replica_watts / 1000
            for index, intensity in enumerate(actual):
                hours = min(step_hours, run.remaining / rate)
                result.energy_kwh += power_kw * hours
                result.emissions_g += power_kw * hours * intensity
                run.remaining -= rate * hours
                if run.remaining <= 1e-9:
                    result.finish = now + trace.step * index + timedelta(hours=hours)
                    break
            if result.finish is not None:
                active.remove(run)
        now += slot
    label = {"oracle": "perfect", "agnostic": "-"}.get(settings.policy, forecasts.mode)
    return SimResult(settings.policy, label, trace, tuple(results))
