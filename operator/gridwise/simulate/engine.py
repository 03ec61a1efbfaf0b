"""Replays a trace job by job: every slot, the policy decides for now; the actual intensity is booked.

The operator's policies (agnostic, threshold, forecast) go through the live operator's `decide()` and
`accounting.advance` (simulate/operator_path.py) with the reading a live CarbonSignal over the trace
would hand out (simulate/forecasts.py: the provider's current value, the ensemble's forecast and its
band, unshaded; decide() shades), so a simulated result is what the operator would do.
The published baselines (stretch, carbonscaler, waitawhile) and the oracle use the same slots, the same
forecast (unshaded, to the deadline) and the same booking. A job is first decided at its submit time
(mid-slot if so), then at every slot boundary; its deadline is judged from the submit time. Every start
from paused (the first included) costs `switching_cost_gpu_hours` of extra work. Jobs do not compete for
GPUs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gridwise.carbon.reading import EPOCH
from gridwise.carbon.traces import Trace
from gridwise.planner.baselines import carbonscaler, stretch_replicas, waitawhile
from gridwise.planner.model import DEFAULT_SWITCHING_COST_GPU_HOURS
from gridwise.planner.policies import Problem
from gridwise.planner.risk import DEFAULT_RISK_FRACTION, DEFAULT_RISK_RAMP_HOURS
from gridwise.planner.scaling import throughputs
from gridwise.planner.slots import build_grid
from gridwise.simulate import operator_path, oracle
from gridwise.simulate.forecasts import ForecastSource, Live
from gridwise.simulate.jobs import SimJob

DAY = timedelta(days=1)
OPERATOR_POLICIES = ("agnostic", "threshold", "forecast")
SIM_POLICIES = ("agnostic", "stretch", "threshold", "waitawhile", "carbonscaler", "forecast", "oracle")


@dataclass(frozen=True)
class SimSettings:
    policy: str
    slot: timedelta
    threshold_grams_per_kwh: float | None = None  # None: median of the past 7 days, re-read every slot
    switching_cost_gpu_hours: float = DEFAULT_SWITCHING_COST_GPU_HOURS
    max_pauses_per_day: int | None = operator_path.DEFAULT_MAX_PAUSES_PER_DAY
    risk_fraction: float = DEFAULT_RISK_FRACTION
    risk_ramp_hours: float = DEFAULT_RISK_RAMP_HOURS


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


def next_boundary(when: datetime, slot: timedelta) -> datetime:
    """The first slot boundary strictly after `when` (boundaries sit on multiples of the slot)."""
    return EPOCH + slot * ((when - EPOCH) // slot + 1)


def default_slot(step: timedelta) -> timedelta:
    """The trace step, at least 15 min (a multiple of the step): re-planning every 5 min buys nothing."""
    slot = step
    while slot < timedelta(minutes=15):
        slot += step
    return slot


def _threshold(trace: Trace, now: datetime) -> float:
    index = trace.index_of(now)
    window = trace.values[max(0, index - int(7 * DAY / trace.step)) : index]
    return statistics.median(window) if window else trace.values[max(0, index)]


@dataclass
class _State:
    job: SimJob
    rates: tuple[float, ...]
    switch: float
    replicas: int = 0
    pause_times: list[datetime] = field(default_factory=list)


Chooser = Callable[[_State, datetime, float], int]


class _Run:
    """Shared per-simulation context for the choosers: trace, forecast, settings, horizon."""

    def __init__(
        self, trace: Trace, settings: SimSettings, forecasts: ForecastSource, until: datetime
    ) -> None:
        self.trace = trace
        self.settings = settings
        self.forecasts = forecasts
        self.until = until
        self.op = operator_path.OperatorSettings(
            policy=settings.policy if settings.policy in OPERATOR_POLICIES else "forecast",
            switching_cost_gpu_hours=settings.switching_cost_gpu_hours,
            max_pauses_per_day=settings.max_pauses_per_day,
        )
        self._oracle: dict[str, tuple[tuple[datetime, ...], tuple[int, ...]]] = {}

    def operator(self, state: _State, now: datetime, remaining: float) -> int:
        job, policy = state.job, self.settings.policy
        if policy == "agnostic":
            # Run-now needs no forecast: hand decide() the actual current value only.
            index = self.trace.index_of(now)
            live = Live(next(self.trace.points(index, index + 1)), (), ())
        else:
            live = self.forecasts.live(now)
        threshold = self.settings.threshold_grams_per_kwh
        if policy == "threshold" and threshold is None:
            threshold = _threshold(self.trace, now)
        spec = operator_path.job_spec(job, self.op, threshold)
        signal = operator_path.reading(self.trace.zone, self.trace.signal_type, live, now)
        return operator_path.replicas_now(
            spec,
            signal,
            now=now,
            remaining_work_gpu_hours=remaining,
            current_replicas=state.replicas,
            pauses_in_last_day=sum(1 for t in state.pause_times if now - t < DAY),
            risk_fraction=self.settings.risk_fraction,
            risk_ramp_hours=self.settings.risk_ramp_hours,
        )

    def stretch(self, state: _State, now: datetime, remaining: float) -> int:
        job = state.job
        hours = (job.deadline - now).total_seconds() / 3600
        need = remaining + (0.0 if state.replicas else state.switch)
        if state.replicas:  # fixed at the start: no signal, no re-planning
            return state.replicas
        return stretch_replicas(state.rates, job.min_replicas, job.max_replicas, need, hours)

    def _problem(self, state: _State, now: datetime, remaining: float) -> Problem | None:
        job = state.job
        hours = (job.deadline - now).total_seconds() / 3600
        need = remaining + (0.0 if state.replicas else state.switch)
        if hours <= 0 or state.rates[job.max_replicas] * hours < need - 1e-9:
            return None  # infeasible from here: run at max
        slot = self.settings.slot
        grid = build_grid(now, job.deadline, slot, self.forecasts.at(now, self.until).points)
        return Problem(
            hours=grid.hours,
            intensity=grid.intensity,
            rates=state.rates,
            min_replicas=job.min_replicas,
            max_replicas=job.max_replicas,
            work=remaining,
            switch_work=state.switch,
            running_now=state.replicas > 0,
            power_kw=job.power_per_replica_watts / 1000,
            day=tuple(0 for _ in grid.hours),
        )

    def carbonscaler(self, state: _State, now: datetime, remaining: float) -> int:
        problem = self._problem(state, now, remaining)
        return state.job.max_replicas if problem is None else carbonscaler(problem)[0]

    def waitawhile(self, state: _State, now: datetime, remaining: float) -> int:
        problem = self._problem(state, now, remaining)
        return state.job.max_replicas if problem is None else waitawhile(problem)[0]

    def oracle(self, state: _State, now: datetime, remaining: float) -> int:
        job = state.job
        if job.name not in self._oracle:
            grid = build_grid(
                now,
                job.deadline,
                self.settings.slot,
                tuple(self.trace.points(self.trace.index_of(now), self.trace.index_of(job.deadline) + 1)),
            )
            try:
                solution = oracle.solve(
                    grid.hours,
                    grid.intensity,
                    state.rates,
                    job.min_replicas,
                    job.max_replicas,
                    job.power_per_replica_watts / 1000,
                    remaining,
                    state.switch,
                )
                self._oracle[job.name] = (grid.starts, solution.replicas)
            except ValueError:
                self._oracle[job.name] = ((), ())  # infeasible: run at max
        starts, replicas = self._oracle[job.name]
        if not starts or now >= job.deadline:
            return job.max_replicas
        index = max(i for i, s in enumerate(starts) if s <= now)
        return replicas[index]

    def chooser(self) -> Chooser:
        policy = self.settings.policy
        if policy in OPERATOR_POLICIES:
            return self.operator
        return {
            "stretch": self.stretch,
            "carbonscaler": self.carbonscaler,
            "waitawhile": self.waitawhile,
            "oracle": self.oracle,
        }[policy]


def _run_job(job: SimJob, run: _Run, choose: Chooser) -> JobResult:
    trace, settings = run.trace, run.settings
    switch = settings.switching_cost_gpu_hours
    state = _State(job, throughputs(job.max_replicas, job.scaling_efficiency, None), switch)
    window = (job.deadline - job.submit).total_seconds() / 3600
    result = JobResult(
        job.name,
        job.submit,
        job.deadline,
        job.work_gpu_hours,
        feasible=state.rates[job.max_replicas] * window >= job.work_gpu_hours + switch - 1e-9,
    )
    target = job.work_gpu_hours  # grows by `switch` at every start
    totals = operator_path.new_totals()
    now = job.submit
    while result.finish is None and now < trace.end:
        stop = min(next_boundary(now, settings.slot), trace.end)
        replicas = choose(state, now, max(0.0, target - totals.work_done_gpu_hours))
        if replicas > 0 and state.replicas == 0:
            target += switch
        if replicas == 0 and state.replicas > 0:
            result.pauses += 1
            state.pause_times.append(now)
        state.replicas = replicas
        result.timeline.append((now, replicas))
        moment = now
        while replicas > 0 and moment < stop and result.finish is None:
            piece_end = min(stop, trace.time_at(trace.index_of(moment) + 1))
            left = target - totals.work_done_gpu_hours
            hours = (piece_end - moment).total_seconds() / 3600
            if state.rates[replicas] * hours >= left - 1e-9:
                result.finish = moment + timedelta(hours=left / state.rates[replicas])
            totals = operator_path.book(
                totals,
                job,
                start=moment,
                end=piece_end,
                replicas=replicas,
                intensity=trace.value_at(moment),
                work_gpu_hours=target,
            )
            moment = piece_end
        now = stop
    result.emissions_g = totals.emissions_grams
    result.energy_kwh = operator_path.energy_kwh(totals)
    return result


def simulate(trace: Trace, jobs: list[SimJob], settings: SimSettings, forecasts: ForecastSource) -> SimResult:
    slot = settings.slot
    ratio = slot / trace.step
    if slot < trace.step or not math.isclose(ratio, round(ratio)):
        raise ValueError(f"the slot ({slot}) must be a multiple of the trace step ({trace.step})")
    if settings.policy not in SIM_POLICIES:
        raise ValueError(f"unknown policy {settings.policy!r}; known: {', '.join(SIM_POLICIES)}")
    if not jobs:
        raise ValueError("no jobs to simulate")
    for job in jobs:
        if job.submit < trace.start or job.deadline > trace.end:
            raise ValueError(
                f"job {job.name!r} runs {job.submit:%Y-%m-%d %H:%M} .. {job.deadline:%Y-%m-%d %H:%M} UTC, "
                f"outside the trace ({trace.start:%Y-%m-%d %H:%M} .. {trace.end:%Y-%m-%d %H:%M})"
            )
    until = min(trace.end, max(j.deadline for j in jobs) + slot)
    run = _Run(trace, settings, forecasts, until)
    choose = run.chooser()
    results = tuple(_run_job(job, run, choose) for job in sorted(jobs, key=lambda j: (j.submit, j.name)))
    label = {"oracle": "perfect", "agnostic": "-", "stretch": "-"}.get(settings.policy, forecasts.mode)
    return SimResult(settings.policy, label, trace, results)
