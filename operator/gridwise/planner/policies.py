"""The scheduling policies: each turns a Problem into replicas per slot (0 = paused).

`carbon_optimal` is the forecast/oracle policy, in the spirit of CarbonScaler's marginal carbon
efficiency: every (slot, extra replica) is a candidate that buys `marginal throughput` of work for
`marginal power x intensity` of carbon; the cheapest carbon per unit of work are taken first until the
work (plus the work lost to each resume) is covered. Then hysteresis fills a pause whenever the carbon it
saves is less than what its resume costs, and `max_pauses_per_day` is enforced the same way.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-9


@dataclass(frozen=True)
class Problem:
    hours: tuple[float, ...]
    intensity: tuple[float, ...]
    rates: tuple[float, ...]  # rates[n]: work per hour at n replicas
    min_replicas: int
    max_replicas: int
    work: float
    switch_work: float
    running_now: bool
    power_kw: float
    day: tuple[int, ...]  # which 24 h window (from now) each slot starts in
    max_pauses_per_day: int | None = None
    pauses_in_last_day: int = 0
    threshold: float = math.inf


def _suffix_capacity(problem: Problem) -> list[float]:
    """Work the slots from each one to the end can do at max replicas (the last entry: none left)."""
    full = problem.rates[problem.max_replicas]
    # A reversed cumsum adds from the last slot back, as the loop it replaces did (same bits).
    from_end = np.cumsum(full * np.asarray(problem.hours[::-1], dtype=np.float64))
    return [*from_end[::-1].tolist(), 0.0]


def threshold(problem: Problem) -> list[int]:
    """Run at max where intensity <= threshold; pause otherwise unless the deadline needs this slot.

    The guard pauses only while the slots after this one, at max replicas, still hold the remaining
    work plus one resume. `agnostic` is this with an infinite threshold.
    """
    suffix = _suffix_capacity(problem)
    hi = problem.max_replicas
    remaining = problem.work
    running = problem.running_now
    alloc = [0] * len(problem.hours)
    for index, hours in enumerate(problem.hours):
        if remaining <= EPS:
            break
        must = suffix[index + 1] < remaining + problem.switch_work
        if problem.intensity[index] <= problem.threshold or must:
            if not running:
                remaining += problem.switch_work
            alloc[index] = hi
            remaining -= problem.rates[hi] * hours
            running = True
        else:
            running = False
    return alloc


def _gains(problem: Problem) -> list[float]:
    """Work per replica-hour of each step: 0 -> min, then +1 replica at a time; made non-increasing.

    Taking the running minimum keeps a slot's steps in order even for a non-concave measured table
    (a pessimistic but safe ordering).
    """
    lo, hi, rates = problem.min_replicas, problem.max_replicas, problem.rates
    gains = [rates[lo] / lo] + [rates[n] - rates[n - 1] for n in range(lo + 1, hi + 1)]
    out: list[float] = []
    for gain in gains:
        if gain <= EPS:
            break  # more replicas add nothing: never worth their power
        out.append(min(gain, out[-1]) if out else gain)
    return out


class _Allocation:
    """Replica counts plus the bookkeeping the greedy passes share."""

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        self.n = [0] * len(problem.hours)

    def on(self, index: int) -> bool:
        if index < 0:
            return self.p.running_now
        return index < len(self.n) and self.n[index] > 0

    def start_delta(self, index: int, turning_on: bool) -> int:
        """Change in the number of resumes if slot `index` turns on (or off)."""
        left, right = self.on(index - 1), self.on(index + 1)
        delta = 1 if not left and not right else -1 if left and right else 0
        return delta if turning_on else -delta

    def starts(self) -> int:
        return sum(1 for i, n in enumerate(self.n) if n > 0 and not self.on(i - 1))

    def work(self) -> float:
        return sum(self.p.rates[n] * h for n, h in zip(self.n, self.p.hours, strict=True))

    def gaps(self) -> list[tuple[int, int]]:
        """Pauses: runs [a, b) of paused slots with running on both sides (the left may be 'now')."""
        out: list[tuple[int, int]] = []
        index = 0
        while index < len(self.n):
            if self.n[index] == 0 and self.on(index - 1):
                end = index
                while end < len(self.n) and self.n[end] == 0:
                    end += 1
                if end < len(self.n):
                    out.append((index, end))
                index = end
            else:
                index += 1
        return out


def carbon_optimal(problem: Problem) -> list[int]:
    """Greedy by marginal carbon efficiency, then hysteresis and the pauses-per-day cap.

    Turning a slot on is priced with its effect on resumes: a slot that opens a new run carries the
    switching cost (its lost work, bought at the same rate), one that joins two runs saves one. Keys
    change as neighbours turn on, so the heap is lazy: a popped key that got worse is pushed back, and
    neighbours of a slot that turns on get a fresh (better) entry.
    """
    lo = problem.min_replicas
    gains = _gains(problem)
    alloc = _Allocation(problem)
    first_work = [problem.rates[lo] * h for h in problem.hours]

    def open_key(index: int) -> float:
        base = problem.intensity[index] / gains[0]
        return base * (
            1 + alloc.start_delta(index, turning_on=True) * problem.switch_work / first_work[index]
        )

    heap = [(open_key(i), i, 0) for i in range(len(problem.hours))]
    heapq.heapify(heap)
    accepted: list[tuple[float, int, int]] = []
    covered = 0.0
    starts = 0
    while covered < problem.work + problem.switch_work * starts - EPS and heap:
        key, index, step = heapq.heappop(heap)
        if step == 0:
            if alloc.n[index] > 0:
                continue  # a stale duplicate entry
            fresh = open_key(index)
            if fresh > key + EPS:
                heapq.heappush(heap, (fresh, index, 0))
                continue
            starts += alloc.start_delta(index, turning_on=True)
            alloc.n[index] = lo
            covered += first_work[index]
            for neighbour in (index - 1, index + 1):
                if 0 <= neighbour < len(alloc.n) and alloc.n[neighbour] == 0:
                    heapq.heappush(heap, (open_key(neighbour), neighbour, 0))
        else:
            alloc.n[index] = lo + step
            covered += (problem.rates[lo + step] - problem.rates[lo + step - 1]) * problem.hours[index]
        accepted.append((key, index, step))
        if step + 1 < len(gains):
            heapq.heappush(heap, (problem.intensity[index] / gains[step + 1], index, step + 1))
    if not accepted:
        return alloc.n
    # Shadow price: grams per GPU-hour of work at the margin of this plan.
    price = max(problem.intensity[i] / gains[k] for _, i, k in accepted[-3:]) * problem.power_kw
    _hysteresis(alloc, price)
    _cap_pauses(alloc, price)
    _trim(alloc, accepted)
    return alloc.n


def _fill_cost(alloc: _Allocation, gap: tuple[int, int], price: float) -> float:
    """Extra grams from running min replicas through a gap, net of the marginal work it displaces."""
    p = alloc.p
    lo = p.min_replicas
    grams = sum(lo * p.power_kw * p.hours[i] * p.intensity[i] for i in range(*gap))
    displaced = price * p.rates[lo] * sum(p.hours[i] for i in range(*gap))
    return grams - displaced


def _fill(alloc: _Allocation, gap: tuple[int, int]) -> None:
    for index in range(*gap):
        alloc.n[index] = alloc.p.min_replicas


def _hysteresis(alloc: _Allocation, price: float) -> None:
    """Keep a pause only if it saves more carbon than the resume's lost work costs."""
    resume_cost = alloc.p.switch_work * price
    for gap in alloc.gaps():
        if _fill_cost(alloc, gap, price) <= resume_cost:
            _fill(alloc, gap)


def _cap_pauses(alloc: _Allocation, price: float) -> None:
    p = alloc.p
    if p.max_pauses_per_day is None:
        return
    by_day: dict[int, list[tuple[int, int]]] = {}
    for gap in alloc.gaps():
        by_day.setdefault(p.day[gap[0]], []).append(gap)
    for day, gaps in by_day.items():
        allowed = max(0, p.max_pauses_per_day - (p.pauses_in_last_day if day == 0 else 0))
        for gap in sorted(gaps, key=lambda g: _fill_cost(alloc, g, price))[: max(0, len(gaps) - allowed)]:
            _fill(alloc, gap)


def _trim(alloc: _Allocation, accepted: list[tuple[float, int, int]]) -> None:
    """Give back the worst increments the fills made redundant, without opening new pauses."""
    p = alloc.p
    lo = p.min_replicas
    covered = alloc.work()
    starts = alloc.starts()
    for _key, index, step in reversed(accepted):
        need = p.work + p.switch_work * starts
        if step > 0:
            if alloc.n[index] != lo + step:
                continue
            gain = (p.rates[lo + step] - p.rates[lo + step - 1]) * p.hours[index]
            if covered - gain >= need - EPS:
                alloc.n[index] -= 1
                covered -= gain
            continue
        if alloc.n[index] != lo or (alloc.on(index - 1) and alloc.on(index + 1)):
            continue
        delta = alloc.start_delta(index, turning_on=False)
        gain = p.rates[lo] * p.hours[index]
        if covered - gain >= p.work + p.switch_work * (starts + delta) - EPS:
            alloc.n[index] = 0
            covered -= gain
            starts += delta
