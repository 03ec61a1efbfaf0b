"""What the per-job bounds buy: planning a far deadline, and reading a hostile 50 MB provider answer.

python benchmarks/security_bench.py

1. plan() for a job due at the CRD's horizon (90 days) with 15-min slots: the capped planner (14-day
   horizon) against the same call with the cap lifted (the old behaviour), in the same run.
2. get_json() on a local server answering 50 MB: the capped read (2 MiB) against an uncapped one,
   wall time and Python peak allocation (tracemalloc), in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import platform
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gridwise.carbon.errors import ProviderError
from gridwise.carbon.http import get_json, new_client
from gridwise.carbon.reading import IntensityPoint
from gridwise.planner import PlanRequest, plan

plan_module: Any = importlib.import_module("gridwise.planner.plan")  # the module (the package exports plan())
NOW = datetime(2030, 1, 1, tzinfo=UTC)
BODY = 50 * 1024 * 1024


def request(days: float) -> PlanRequest:
    forecast = [
        IntensityPoint(
            NOW + timedelta(hours=i), NOW + timedelta(hours=i + 1), 200 + 120 * math.sin(2 * math.pi * i / 24)
        )
        for i in range(72)
    ]
    return PlanRequest(
        now=NOW,
        deadline=NOW + timedelta(days=days),
        remaining_work_gpu_hours=200.0,
        min_replicas=1,
        max_replicas=8,
        power_per_replica_watts=400,
        forecast=forecast,
        policy="forecast",
        scaling_efficiency=0.9,
        slot_minutes=15,
    )


def time_plan(days: float, repeat: int) -> tuple[float, int]:
    best, slots = math.inf, 0
    for _ in range(repeat):
        started = time.perf_counter()
        result = plan(request(days))
        best = min(best, time.perf_counter() - started)
        slots = len(result.slots)
    return best, slots


def planner(repeat: int) -> None:
    capped = time_plan(90, repeat)
    saved = plan_module.PLAN_HORIZON
    plan_module.PLAN_HORIZON = timedelta(days=100_000)  # the old behaviour: the grid runs to the deadline
    try:
        uncapped = time_plan(90, repeat)
    finally:
        plan_module.PLAN_HORIZON = saved
    print("| planner, 90-day deadline, 15-min slots | slots | best time | vs uncapped |")
    print("|---|---|---|---|")
    print(f"| uncapped (baseline) | {uncapped[1]:,} | {uncapped[0] * 1000:.0f} ms | x1.00 |")
    print(
        f"| capped at 14 days | {capped[1]:,} | {capped[0] * 1000:.0f} ms | x{capped[0] / uncapped[0]:.2f} |"
    )


class Big(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(BODY))
        self.end_headers()
        chunk = b" " * 65536
        try:
            for _ in range(BODY // len(chunk)):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


async def read(url: str, max_bytes: int) -> tuple[float, int, str]:
    client = new_client(timeout_s=60)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        await get_json(client, "bench", url, max_bytes=max_bytes, total_timeout_s=60)
        outcome = "read (then not JSON)"
    except ProviderError as exc:
        outcome = exc.message
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    await client.aclose()
    return elapsed, peak, outcome


def body_cap() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Big)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        uncapped = asyncio.run(read(url, max_bytes=BODY * 2))
        capped = asyncio.run(read(url, max_bytes=2 * 1024 * 1024))
    finally:
        server.shutdown()
    print()
    print("| 50 MB provider answer | outcome | time | Python peak | peak vs uncapped |")
    print("|---|---|---|---|---|")
    for label, (elapsed, peak, outcome) in (("uncapped (baseline)", uncapped), ("capped at 2 MiB", capped)):
        print(
            f"| {label} | {outcome} | {elapsed * 1000:.0f} ms | {peak / 2**20:.1f} MiB | "
            f"x{peak / uncapped[1]:.3f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}\n")
    planner(args.repeat)
    body_cap()


if __name__ == "__main__":
    main()
