"""What the planner's slot grid costs per call, against the slot-by-slot definition, in the same run.

python benchmarks/grid_bench.py

The baseline is `reference_grid` from tests/unit/test_planner_grid.py: the slot-by-slot code the grid
replaced, which the test holds it to bit for bit. Also times `step()` for the scale benchmark's job
(threshold, 30-day deadline, so a 14-day plan) at the moment its grid turns dirty.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gridwise.accounting import Usage
from gridwise.carbon import IntensityPoint, SignalReading
from gridwise.planner.slots import build_grid
from gridwise.step import OWNER_US, JobState, Observed, Resource, step

# As pytest imports it (tests/unit is not a package): by file name, from its own directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
from test_planner_grid import reference_grid

NOW = datetime(2030, 1, 6, 0, 7, tzinfo=UTC)
HOUR = NOW.replace(minute=0)


def best_us(fn: Callable[[], Any], calls: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def grid_rows(repeat: int) -> None:
    for hours in (169, 337):
        points = [
            IntensityPoint(HOUR + timedelta(hours=i), HOUR + timedelta(hours=i + 1), 600.0 - i)
            for i in range(hours)
        ]
        for minutes in (60, 15):
            args = (NOW, NOW + timedelta(days=14), timedelta(minutes=minutes), points)
            old = best_us(functools.partial(reference_grid, *args), 100, repeat)
            new = best_us(functools.partial(build_grid, *args), 100, repeat)
            print(f"grid, {hours} forecast points, {minutes:2d}-min slots: slot by slot {old:7.0f} us, "
                  f"arrays {new:6.0f} us  x{new / old:.2f}")  # fmt: skip


def step_row(jobs: int, repeat: int) -> None:
    def point(i: int, value: float) -> IntensityPoint:
        return IntensityPoint(HOUR + timedelta(hours=i), HOUR + timedelta(hours=i + 1), value)

    forecast = tuple(point(i, 600.0) for i in range(1, 169))
    dirty = SignalReading("BENCH", "trace", "average", point(0, 600.0), forecast, False, "ok", NOW)
    clean = SignalReading("BENCH", "trace", "average", point(-1, 100.0), dirty.forecast, False, "ok", NOW)
    spec = {
        "completeWithin": "30d",
        "replicas": {"min": 1, "max": 1},
        "work": {"gpuHours": 500, "totalSteps": 100000},
        "carbon": {"provider": "trace", "zone": "BENCH", "tracePath": "/t"},
        "policy": {"type": "threshold", "thresholdGramsPerKWh": 300},
        "template": {"spec": {"containers": [{"name": "t", "image": "trainer"}]}},
    }
    running = JobState(
        uid="x", owner=OWNER_US, suspended=False, parallelism=1, indexed=False, generation=1, shape="s"
    )
    res = [Resource(f"job-{i:04d}", "bench", f"u{i}", 1, spec) for i in range(jobs)]
    before = Observed(job=running, reading=clean, desired_shape="s", pods=Usage(1, 1), pods_present=1)
    at = Observed(job=running, reading=dirty, desired_shape="s", pods=Usage(1, 1), pods_present=1)
    first = [step(r, {}, Observed(job=None, reading=clean), NOW - timedelta(hours=2)).status for r in res]
    statuses = [
        step(r, s, before, NOW - timedelta(minutes=5)).status for r, s in zip(res, first, strict=True)
    ]
    per_job = (
        best_us(lambda: [step(r, s, at, NOW) for r, s in zip(res, statuses, strict=True)], 1, repeat) / jobs
    )
    print(f"step() of the scale benchmark's job as its grid turns dirty: {per_job:6.0f} us/job ({jobs} jobs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="best of N")
    ap.add_argument("--jobs", type=int, default=1000, help="jobs for the step() row")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    grid_rows(args.repeat)
    step_row(args.jobs, args.repeat)


if __name__ == "__main__":
    main()
