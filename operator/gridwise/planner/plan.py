"""`plan()`: a pure function from PlanRequest to Plan. No I/O, no clock: re-planning is calling it again."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np

from gridwise.planner import policies
from gridwise.planner.model import POLICIES, Plan, PlanRequest, SlotColumns
from gridwise.planner.scaling import throughputs
from gridwise.planner.slots import Grid, build_grid


def _check(request: PlanRequest) -> None:
    """Reject nonsense early with a message that names the field."""
    r = request
    if r.now.tzinfo is None or r.deadline.tzinfo is None:
        raise ValueError("now and deadline must be timezone-aware")
    if r.deadline < r.now:
        raise ValueError(f"deadline {r.deadline.isoformat()} is before now {r.now.isoformat()}")
    if not math.isfinite(r.remaining_work_gpu_hours) or r.remaining_work_gpu_hours < 0:
        raise ValueError(f"remaining_work_gpu_hours must be >= 0, got {r.remaining_work_gpu_hours}")
    if r.min_replicas < 1:
        raise ValueError(f"min_replicas must be >= 1, got {r.min_replicas}")
    if r.min_replicas > r.max_replicas:
        raise ValueError(f"min_replicas ({r.min_replicas}) is greater than max_replicas ({r.max_replicas})")
    if not math.isfinite(r.power_per_replica_watts) or r.power_per_replica_watts <= 0:
        raise ValueError(f"power_per_replica_watts must be > 0, got {r.power_per_replica_watts}")
    if not r.forecast:
        raise ValueError("the forecast is empty: the planner needs at least one intensity point")
    for point in r.forecast:
        if not math.isfinite(point.grams_per_kwh) or point.grams_per_kwh < 0 or point.end <= point.start:
            raise ValueError(f"bad forecast point {point}: intensity must be >= 0 and end after start")
    if r.policy not in POLICIES:
        raise ValueError(f"unknown policy {r.policy!r}; known policies: {', '.join(POLICIES)}")
    if r.policy == "threshold" and (r.threshold_grams_per_kwh is None or r.threshold_grams_per_kwh < 0):
        raise ValueError("the threshold policy needs threshold_grams_per_kwh >= 0")
    if not 0 < r.scaling_efficiency <= 1:
        raise ValueError(f"scaling_efficiency must be in (0, 1], got {r.scaling_efficiency}")
    if not math.isfinite(r.switching_cost_gpu_hours) or r.switching_cost_gpu_hours < 0:
        raise ValueError(f"switching_cost_gpu_hours must be >= 0, got {r.switching_cost_gpu_hours}")
    if r.max_pauses_per_day is not None and r.max_pauses_per_day < 0:
        raise ValueError(f"max_pauses_per_day must be >= 0, got {r.max_pauses_per_day}")
    if r.current_replicas < 0 or r.pauses_in_last_day < 0:
        raise ValueError("current_replicas and pauses_in_last_day must be >= 0")
    if not 1 <= r.slot_minutes <= 1440:
        raise ValueError(f"slot_minutes must be in 1..1440, got {r.slot_minutes}")


def _account(
    grid: Grid, alloc: list[int], request: PlanRequest, rates: tuple[float, ...]
) -> tuple[list[int], float, float, datetime | None, int]:
    """Run the allocation forward in time: when work ends, energy, emissions, pauses."""
    remaining = request.remaining_work_gpu_hours
    running = request.current_replicas > 0
    power_kw = request.power_per_replica_watts / 1000
    energy = emissions = 0.0
    finish: datetime | None = request.now if remaining <= 0 else None
    pauses = 0
    out = [0] * len(alloc)
    for index, replicas in enumerate(alloc):
        if finish is not None:
            break
        if replicas == 0:
            running = False
            continue
        if not running:
            remaining += request.switching_cost_gpu_hours
            pauses += 1 if index > 0 or request.current_replicas > 0 else 0
        running = True
        out[index] = replicas
        hours = grid.hours[index]
        if rates[replicas] * hours >= remaining - policies.EPS:
            hours = remaining / rates[replicas]
            finish = grid.start(index) + timedelta(hours=hours)
            remaining = 0.0
        else:
            remaining -= rates[replicas] * hours
        energy += replicas * power_kw * hours
        emissions += replicas * power_kw * hours * grid.intensity[index]
    # The first resume of a paused job is its start, not a pause.
    if request.current_replicas == 0 and pauses > 0 and out and out[0] == 0:
        pauses -= 1
    return out, energy, emissions, finish, pauses


# Planning looks at most this far ahead. Past the forecast every slot is its mean anyway, and the slot
# grid (time and memory per re-plan) must be bounded by a constant, not by how far away a deadline is.
PLAN_HORIZON = timedelta(days=14)


def _within_horizon(request: PlanRequest) -> PlanRequest:
    """A deadline past the horizon: plan to the horizon the work's time-proportional share.

    The share (work x horizon / time left) is never less than what must be done in the horizon for the
    rest to fit at max replicas afterwards, so a feasible job stays feasible; re-plans move the window.
    """
    limit = request.now + PLAN_HORIZON
    if request.deadline <= limit:
        return request
    share = request.remaining_work_gpu_hours * (PLAN_HORIZON / (request.deadline - request.now))
    return replace(request, deadline=limit, remaining_work_gpu_hours=share)


def plan(request: PlanRequest) -> Plan:
    """Replicas per slot from now to the deadline (or the horizon) that meet it when the work fits."""
    _check(request)
    r = _within_horizon(request)
    rates = throughputs(r.max_replicas, r.scaling_efficiency, r.throughput_table)
    slot = timedelta(minutes=r.slot_minutes)
    full = rates[r.max_replicas]
    start_cost = 0.0 if r.current_replicas > 0 else r.switching_cost_gpu_hours
    need = r.remaining_work_gpu_hours + (start_cost if r.remaining_work_gpu_hours > 0 else 0.0)
    capacity = full * (r.deadline - r.now).total_seconds() / 3600
    feasible = capacity >= need - policies.EPS
    hours_at_max = min(need / full, PLAN_HORIZON.total_seconds() / 3600)  # no timedelta overflow
    end = r.deadline if feasible else min(r.now + timedelta(hours=hours_at_max) + slot, r.now + PLAN_HORIZON)
    grid = build_grid(r.now, end, slot, r.forecast) if end > r.now else Grid.empty(r.now)
    problem = policies.Problem(
        hours=grid.hours,
        intensity=grid.intensity,
        rates=rates,
        min_replicas=r.min_replicas,
        max_replicas=r.max_replicas,
        work=r.remaining_work_gpu_hours,
        switch_work=r.switching_cost_gpu_hours,
        running_now=r.current_replicas > 0,
        power_kw=r.power_per_replica_watts / 1000,
        day=_days(grid),
        max_pauses_per_day=r.max_pauses_per_day,
        pauses_in_last_day=r.pauses_in_last_day,
        threshold=r.threshold_grams_per_kwh if r.threshold_grams_per_kwh is not None else math.inf,
    )
    if r.remaining_work_gpu_hours <= 0:
        alloc = [0] * len(grid.hours)
        reason = "no work left"
    elif not feasible:
        alloc = [r.max_replicas] * len(grid.hours)
        reason = (
            f"infeasible: {need:.2f} GPU-hours of work need {need / full:.1f} h at {r.max_replicas} replicas "
            f"but only {capacity / full:.1f} h remain before the deadline; running at max now"
        )
    elif r.policy == "agnostic":
        alloc = policies.threshold(replace(problem, threshold=math.inf))
        reason = "agnostic: run at max replicas now"
    elif r.policy == "threshold":
        alloc = policies.threshold(problem)
        reason = f"threshold: run below {r.threshold_grams_per_kwh:g} g/kWh, deadline guard on"
    else:
        alloc = policies.carbon_optimal(problem)
        reason = (
            f"{r.policy}: lowest-carbon plan under the {'actual' if r.policy == 'oracle' else 'forecast'}"
        )
    if feasible and grid.covered < len(grid.hours) and r.remaining_work_gpu_hours > 0:
        reason += f"; forecast covers {grid.covered} of {len(grid.hours)} slots, the rest assume its mean"
    out, energy, emissions, finish, pauses = _account(grid, alloc, r, rates)
    return Plan(
        slots=SlotColumns(grid, out),
        feasible=feasible,
        reason=reason,
        expected_emissions_g=emissions,
        expected_energy_kwh=energy,
        finish_time=finish,
        pauses=pauses,
    )


def _days(grid: Grid) -> tuple[int, ...]:
    """Which 24 h window after now each slot starts in (for max_pauses_per_day)."""
    elapsed = np.concatenate(([0.0], np.cumsum(grid.hours[:-1]))) if len(grid) else np.zeros(0)
    return tuple((elapsed // 24).astype(int).tolist())
