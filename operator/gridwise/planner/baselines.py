"""The published baselines, each a pure function of the same inputs the planner gets.

- stretch: no carbon signal at all. The fewest replicas that still meet the deadline, from now, never
  paused. Whatever it saves over run-now is energy (scaling efficiency), not timing.
- carbonscaler: Hanafy et al., "CarbonScaler: Leveraging Cloud Workload Elasticity for Optimizing
  Carbon-Efficiency" (SIGMETRICS 2024). Greedy on marginal carbon efficiency: every (slot, +1 replica)
  buys its marginal throughput for its power x forecast intensity; take the cheapest until the work is
  covered; recompute every slot. No hysteresis for resume costs (the paper's scheduler has none).
- waitawhile: Wiesner et al., "Let's Wait Awhile: How Temporal Workload Shifting Can Reduce Carbon
  Emissions in the Cloud" (Middleware 2021), interruptible jobs: the job keeps its fixed size (here its
  maximum, as run-now) and runs in the cheapest forecast slots before the deadline, suspending in the
  others; recomputed every slot.
"""

from __future__ import annotations

import heapq

from gridwise.planner.policies import EPS, Problem, _gains


def stretch_replicas(
    rates: tuple[float, ...], min_replicas: int, max_replicas: int, need: float, hours: float
) -> int:
    """Fewest replicas in min..max whose throughput covers `need` GPU-hours in `hours` (max if none)."""
    for n in range(min_replicas, max_replicas + 1):
        if rates[n] * hours >= need - EPS:
            return n
    return max_replicas


def carbonscaler(problem: Problem) -> list[int]:
    """Replicas per slot by marginal carbon efficiency, cheapest increments first, resume cost as work."""
    lo = problem.min_replicas
    gains = _gains(problem)
    alloc = [0] * len(problem.hours)
    heap = [(problem.intensity[i] / gains[0], i, 0) for i in range(len(problem.hours))]
    heapq.heapify(heap)
    # One start is always paid when the job is not running now; more starts are not priced (as in the paper).
    need = problem.work + (0.0 if problem.running_now else problem.switch_work)
    covered = 0.0
    while covered < need - EPS and heap:
        _, index, step = heapq.heappop(heap)
        if step == 0:
            alloc[index] = lo
            covered += problem.rates[lo] * problem.hours[index]
        else:
            alloc[index] = lo + step
            covered += (problem.rates[lo + step] - problem.rates[lo + step - 1]) * problem.hours[index]
        if step + 1 < len(gains):
            heapq.heappush(heap, (problem.intensity[index] / gains[step + 1], index, step + 1))
    return alloc


def waitawhile(problem: Problem) -> list[int]:
    """Max replicas in the cheapest forecast slots that cover the work (plus one resume per run)."""
    hi = problem.max_replicas
    rate = problem.rates[hi]
    order = sorted(range(len(problem.hours)), key=lambda i: (problem.intensity[i], i))
    chosen: set[int] = set()
    for index in order:
        chosen.add(index)
        runs = sum(1 for i in chosen if i - 1 not in chosen and not (i == 0 and problem.running_now))
        if sum(rate * problem.hours[i] for i in chosen) >= problem.work + runs * problem.switch_work - EPS:
            break
    return [hi if i in chosen else 0 for i in range(len(problem.hours))]
