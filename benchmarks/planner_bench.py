"""How long planning takes: N jobs over a H-hour horizon, per policy, against the agnostic baseline.

python benchmarks/planner_bench.py --jobs 1000 --hours 72

With --forecast-call: what one live forecast costs a signal (carbon/outlook.py, the ensemble with its
backtest) on a year-long history, cold (a new signal) and warm (the next interval), against the
seasonal forecaster the signal used before, in the same run:

python benchmarks/planner_bench.py --forecast-call --step-minutes 60
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gridwise.carbon.ensemble import EnsembleForecaster
from gridwise.carbon.forecaster import SeasonalForecaster
from gridwise.carbon.outlook import DEFAULT_HORIZON, live_forecaster, outlook
from gridwise.carbon.reading import IntensityPoint
from gridwise.planner import POLICIES, PlanRequest, plan


def requests(count: int, hours: int, policy: str, seed: int) -> list[PlanRequest]:
    rng = random.Random(seed)
    now = datetime(2022, 6, 1, 0, 17, tzinfo=UTC)
    start = now.replace(minute=0)
    forecast = [
        IntensityPoint(
            start + timedelta(hours=i),
            start + timedelta(hours=i + 1),
            max(0.0, 200 + 120 * math.sin(2 * math.pi * i / 24) + rng.gauss(0, 25)),
        )
        for i in range(hours + 1)
    ]
    out = []
    for _ in range(count):
        high = rng.randint(1, 8)
        eff = rng.uniform(0.8, 1.0)
        deadline_h = rng.uniform(4, hours)
        capacity = high * eff ** math.log2(high) * deadline_h
        out.append(
            PlanRequest(
                now=now,
                deadline=now + timedelta(hours=deadline_h),
                remaining_work_gpu_hours=rng.uniform(0.1, 0.95) * capacity,
                min_replicas=rng.randint(1, high),
                max_replicas=high,
                power_per_replica_watts=rng.uniform(300, 700),
                forecast=forecast,
                policy=policy,
                threshold_grams_per_kwh=200.0,
                scaling_efficiency=eff,
                max_pauses_per_day=rng.choice([None, 2]),
                current_replicas=rng.choice([0, 1]) and high,
            )
        )
    return out


def year_history(step: timedelta, seed: int) -> list[IntensityPoint]:
    """A year on a daily and weekly cycle with a level that drifts for days (a wind-driven grid)."""
    rng = random.Random(seed)
    start = datetime(2022, 1, 1, tzinfo=UTC)
    steps = int(timedelta(days=365) / step)
    out, level = [], 0.0
    for i in range(steps):
        hours = i * step.total_seconds() / 3600
        level = 0.999 * level + rng.gauss(0, 2)
        value = 250 + 80 * math.sin(2 * math.pi * hours / 24) + 30 * math.sin(2 * math.pi * hours / 168)
        out.append(IntensityPoint(start + step * i, start + step * (i + 1), max(0.0, value + level)))
    return out


def best_of(repeat: int, call: Callable[[], float | None]) -> float:
    """Best of `repeat`: a call that returns a float timed itself (its set-up excluded)."""
    best = math.inf
    for _ in range(repeat):
        began = time.perf_counter()
        own = call()
        best = min(best, own if own is not None else time.perf_counter() - began)
    return best


def forecast_call(step_minutes: int, repeat: int, seed: int) -> int:
    step = timedelta(minutes=step_minutes)
    year = year_history(step, seed)
    past, current = year[:-1], year[-1]
    now = current.start + step / 3
    seasonal = SeasonalForecaster()

    def seasonal_call() -> None:
        seasonal.forecast(year, current.end, current.end + DEFAULT_HORIZON)

    def live(forecaster: EnsembleForecaster) -> None:
        outlook(forecaster, past, current, (), now=now, horizon=DEFAULT_HORIZON)

    def cold() -> None:
        live(live_forecaster())

    def warm() -> float:
        """A signal that made the previous interval's forecast makes this one's (timed)."""
        forecaster = live_forecaster()
        outlook(forecaster, past[:-1], past[-1], (), now=past[-1].start, horizon=DEFAULT_HORIZON)
        began = time.perf_counter()
        live(forecaster)
        return time.perf_counter() - began

    held = live_forecaster()
    live(held)

    base = best_of(repeat, seasonal_call)
    rows = [
        ("seasonal forecaster (baseline)", base),
        ("ensemble, cold (a new signal)", best_of(repeat, cold)),
        ("ensemble, warm (next interval)", best_of(repeat, warm)),
        ("ensemble, same interval again", best_of(repeat, lambda: live(held))),
    ]
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{len(year)} points ({step_minutes}-min steps, one year), "
        f"{DEFAULT_HORIZON / timedelta(hours=1):.0f} h forecast, best of {repeat}"
    )
    for name, seconds in rows:
        print(f"{name:32s} {seconds * 1000:8.2f} ms  x{seconds / base:.1f} of seasonal")
    entries, kib = held.memo_footprint()
    print(f"one signal's memo after a call: {entries} entries, {kib:.0f} KiB")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=72)
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--forecast-call", action="store_true", help="time one live forecast instead")
    parser.add_argument("--step-minutes", type=int, default=60, help="history step for --forecast-call")
    args = parser.parse_args()
    if args.forecast_call:
        return forecast_call(args.step_minutes, args.repeat, args.seed)
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{args.jobs} jobs x {args.hours} h horizon, 60-min slots, best of {args.repeat}"
    )
    timings: dict[str, float] = {}
    for policy in POLICIES:
        batch = requests(args.jobs, args.hours, policy, args.seed)
        best = math.inf
        for _ in range(args.repeat):
            began = time.perf_counter()
            plans = [plan(r) for r in batch]
            best = min(best, time.perf_counter() - began)
        assert all(p.feasible for p in plans)
        timings[policy] = best
    for policy, seconds in timings.items():
        print(
            f"{policy:10s} {seconds * 1000:8.1f} ms for {args.jobs} jobs "
            f"({seconds / args.jobs * 1e6:6.0f} us/job)"
            f"  x{seconds / timings['agnostic']:.2f} of agnostic"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
