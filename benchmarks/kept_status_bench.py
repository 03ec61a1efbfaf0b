"""What the reconciler's kept statuses cost per job: compact JSON (shipped) against dicts (baseline).

    python benchmarks/kept_status_bench.py --jobs 1000

Between ticks the reconciler keeps, per job, the status last written and the one last computed
(they differ while a write is deferred). Both are built by the pure step from realistic specs over a
few ticks, then kept either as the step's dicts or packed as the reconciler packs them; tracemalloc
measures each in the same run. The time columns say what packing adds to a tick: one pack per tick,
one or two unpacks, against the step itself.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_bench import NOW, job_spec, reading

from gridwise.accounting import Usage
from gridwise.status_writes import pack_status, unpack_status
from gridwise.step import OWNER_US, JobState, Observed, Resource, step


def kept_kib_per_job(build: Callable[[], list[Any]], jobs: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept = build()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    del kept
    return sum(s.size_diff for s in after.compare_to(before, "filename")) / jobs / 1024


def best_us(fn: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sig = reading(rng)
    jobs = [Resource(f"j{i}", "ns", f"u{i}", 1, job_spec(rng)) for i in range(args.jobs)]
    state = JobState(
        uid="x", owner=OWNER_US, suspended=False, parallelism=1, indexed=False, generation=1, shape="s"
    )
    observed = Observed(job=state, reading=sig, desired_shape="s", pods=Usage(1, 1), pods_present=1)

    def statuses() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Per job: the status as last written (tick 1) and as last computed (tick 3)."""
        sts = [step(r, {}, Observed(job=None, reading=sig), NOW).status for r in jobs]
        written = list(sts)
        for t in (1, 2):
            now = NOW + timedelta(minutes=t)
            sts = [step(r, s, observed, now).status for r, s in zip(jobs, sts, strict=True)]
        return written, sts

    def as_dicts() -> list[Any]:
        written, latest = statuses()
        return [written, latest]

    def as_packed() -> list[Any]:
        written, latest = statuses()
        return [[pack_status(s) for s in written], [pack_status(s) for s in latest]]

    dicts = kept_kib_per_job(as_dicts, args.jobs)
    packed = kept_kib_per_job(as_packed, args.jobs)
    _, latest = statuses()
    one, blob = latest[0], pack_status(latest[0])
    step_us = best_us(lambda: step(jobs[0], one, observed, NOW + timedelta(minutes=3)), 500)
    pack_us, unpack_us = best_us(lambda: pack_status(one), 2000), best_us(lambda: unpack_status(blob), 2000)
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"{args.jobs} jobs, each keeping a written and a newer status ({len(blob)} bytes of JSON)")
    print(f"kept as dicts (baseline): {dicts:6.2f} KiB per job  x1.00")
    print(f"kept packed (shipped):    {packed:6.2f} KiB per job  x{packed / dicts:.2f}")
    print(f"step() per tick {step_us:.0f} us; pack {pack_us:.0f} us, unpack {unpack_us:.0f} us")
    extra = (pack_us + 2 * unpack_us) / step_us
    print(f"a tick's packing (one pack, two unpacks) adds x{extra:.2f} of step()")


if __name__ == "__main__":
    main()
