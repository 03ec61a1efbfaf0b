"""The oracle is the exact optimum: the MILP matches brute-force enumeration on small problems."""

from __future__ import annotations

import itertools
import random

import pytest

from gridwise.planner.scaling import throughputs
from gridwise.simulate.oracle import solve


def brute_force(
    hours: list[float],
    intensity: list[float],
    rates: tuple[float, ...],
    lo: int,
    hi: int,
    power_kw: float,
    work: float,
    switch: float,
) -> float:
    """Every replica sequence, run forward: starts add work, the job stops once its work is done."""
    best = float("inf")
    for seq in itertools.product([0, *range(lo, hi + 1)], repeat=len(hours)):
        left, running, grams, done = work, False, 0.0, False
        for n, h, i in zip(seq, hours, intensity, strict=True):
            if done:
                break
            if n == 0:
                running = False
                continue
            if not running:
                left += switch
            running = True
            used = min(h, left / rates[n])
            grams += power_kw * n * used * i
            left -= rates[n] * used
            done = left <= 1e-9
        if done:
            best = min(best, grams)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_milp_equals_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    slots = rng.randint(3, 5)
    lo, hi = rng.choice([(1, 2), (1, 3), (2, 3)])
    efficiency = rng.choice([1.0, 0.9, 0.7])
    rates = throughputs(hi, efficiency, None)
    hours = [rng.choice([0.5, 1.0]) for _ in range(slots)]
    intensity = [rng.uniform(50, 500) for _ in range(slots)]
    switch = rng.choice([0.0, 0.1, 0.6])
    capacity = sum(rates[hi] * h for h in hours)
    work = rng.uniform(0.2, 0.8) * (capacity - switch)
    expected = brute_force(hours, intensity, rates, lo, hi, 0.4, work, switch)
    solution = solve(tuple(hours), tuple(intensity), rates, lo, hi, 0.4, work, switch)
    assert solution.emissions_g == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert solution.status == "optimal"


def test_resume_cost_keeps_one_run() -> None:
    """Two clean slots split by a dirty one: the pause pays off only when the resume is cheap."""
    rates = throughputs(1, 1.0, None)
    hours, intensity = (1.0, 1.0, 1.0), (100.0, 130.0, 100.0)
    cheap = solve(hours, intensity, rates, 1, 1, 1.0, 1.5, 0.0)
    assert cheap.replicas == (1, 0, 1)
    dear = solve(hours, intensity, rates, 1, 1, 1.0, 1.5, 0.5)
    assert dear.replicas[:2] == (1, 1)


def test_infeasible_is_a_clear_error() -> None:
    rates = throughputs(2, 1.0, None)
    with pytest.raises(ValueError, match="no schedule"):
        solve((1.0, 1.0), (100.0, 100.0), rates, 1, 2, 0.3, 10.0, 0.1)
