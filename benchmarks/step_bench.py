"""What the pure reconcile step costs per job and tick, against the decision alone (its core).

python benchmarks/step_bench.py --jobs 500 --ticks 5

Baseline in the same run: `decide()` with the same spec, reading and remaining work. The difference
is what observe-free reconciling adds on top: parsing the spec, accounting, conditions, status.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from gridwise.accounting import Usage
from gridwise.api import parse_job_spec
from gridwise.carbon import IntensityPoint, SignalReading
from gridwise.decide import decide
from gridwise.step import OWNER_US, JobState, Observed, Resource, step

NOW = datetime(2030, 1, 6, tzinfo=UTC)


def reading(rng: random.Random) -> SignalReading:
    points = tuple(
        IntensityPoint(
            NOW + timedelta(hours=i),
            NOW + timedelta(hours=i + 1),
            max(0.0, 200 + 120 * math.sin(2 * math.pi * i / 24) + rng.gauss(0, 25)),
        )
        for i in range(49)
    )
    return SignalReading("XX", "trace", "average", points[0], points[1:], False, "ok", NOW)


def job_spec(rng: random.Random) -> dict[str, Any]:
    return {
        "completeWithin": f"{rng.randint(6, 48)}h",
        "replicas": {"min": 1, "max": rng.randint(1, 8)},
        "work": {"gpuHours": rng.uniform(1, 20), "totalSteps": 1000},
        "carbon": {"provider": "trace", "zone": "XX", "tracePath": "/t"},
        "policy": {"type": "forecast"},
        "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--ticks", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sig = reading(rng)
    jobs = [Resource(f"j{i}", "ns", f"u{i}", 1, job_spec(rng)) for i in range(args.jobs)]
    state = JobState(
        uid="x", owner=OWNER_US, suspended=False, parallelism=1, indexed=False, generation=1, shape="s"
    )
    observed = Observed(job=state, reading=sig, desired_shape="s", pods=Usage(1, 1), pods_present=1)

    statuses: list[dict[str, Any]] = [{} for _ in jobs]
    for i, res in enumerate(jobs):  # the first tick creates; start every job from its accepted status
        statuses[i] = step(res, {}, Observed(job=None, reading=sig), NOW).status

    def run_step() -> float:
        start = time.perf_counter()
        sts = list(statuses)
        for t in range(1, args.ticks + 1):
            now = NOW + timedelta(minutes=t)
            for i, res in enumerate(jobs):
                sts[i] = step(res, sts[i], observed, now).status
        return time.perf_counter() - start

    specs = [parse_job_spec(r.name, r.namespace, r.spec, NOW) for r in jobs]

    def run_decide() -> float:
        start = time.perf_counter()
        for t in range(1, args.ticks + 1):
            now = NOW + timedelta(minutes=t)
            for spec in specs:
                decide(spec, sig, now=now, remaining_work_gpu_hours=spec.work_gpu_hours, current_replicas=1,
                       pauses_in_last_day=0)  # fmt: skip
        return time.perf_counter() - start

    calls = args.jobs * args.ticks
    base = min(run_decide() for _ in range(3))
    full = min(run_step() for _ in range(3))
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"{calls} calls (best of 3)")
    print(f"decide() baseline: {base * 1e6 / calls:8.0f} us/call  x1.00")
    print(f"step():            {full * 1e6 / calls:8.0f} us/call  x{full / base:.2f}")


if __name__ == "__main__":
    main()
