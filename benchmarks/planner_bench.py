"""How long planning takes: N jobs over a H-hour horizon, per policy, against the agnostic baseline.

python benchmarks/planner_bench.py --jobs 1000 --hours 72
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import time
from datetime import UTC, datetime, timedelta

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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=72)
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
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
