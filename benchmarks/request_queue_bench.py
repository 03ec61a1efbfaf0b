"""What a burst of API requests holds while it waits for a connection: queued in Kube or in the client.

A zone wake patches every paused job's Job at once, a thousand of them, over gridwise's 64
connections to the API server. aiohttp builds each request (headers, body, timers) before it waits
for a connection; `Kube` holds only the patch until one of its slots is free. Whether that makes
the wake's peak smaller is what this measures: the Python objects the process holds at the burst's
peak (tracemalloc), both ways in the same run (the answer: no, BENCHMARKS.md, issue 12, twelfth
round; the slots are there for the leader election, see `Kube`):

- baseline: `Kube(api, slots=connections)`, so every request waits in the client's connection pool;
- shipped: `Kube(api)`, the slots `credentials.request_slots()` gives (the connections less a
  reserve for the leader election).

The API server is a small aiohttp server in a child process (its own memory is not counted) that
answers each Job patch after `--latency-ms` with a Job of about 6 KB, as a real one comes back.

    python benchmarks/request_queue_bench.py --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

# gridwise.k8s installs the lazy kubernetes_asyncio client, so it is imported first.
from gridwise.k8s import credentials
from gridwise.k8s.credentials import direct_session
from gridwise.k8s.kube import Kube

from kubernetes_asyncio import client  # isort: skip

# A Job as the API server sends one back: labels, annotations and a pod template, about 6 KB.
ANSWER = json.dumps(
    {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "labels": {f"label-{i}": "v" * 40 for i in range(20)}},
        "spec": {"template": {"spec": {"containers": [{"name": "trainer", "args": ["a" * 100] * 40}]}}},
    }
).encode()
# What the operator sends to pause a Job (actuator.py): suspend, and its shape annotation.
PATCH = {
    "spec": {"suspend": True, "parallelism": 1},
    "metadata": {"annotations": {"gridwise.dev/shape": "x" * 120}},
}


def serve(latency_s: float) -> None:
    """The child process: a Job endpoint on a free port, printed on the first line of stdout."""
    from aiohttp import web

    async def patch(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(latency_s)
        return web.Response(body=ANSWER, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_route("PATCH", "/apis/batch/v1/namespaces/{ns}/jobs/{name}", patch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


async def burst(host: str, requests: int, slots: int | None) -> tuple[float, float]:
    """(peak MiB of Python objects over the level before the burst, seconds) for one burst."""
    cfg = client.Configuration()
    cfg.host = host
    cfg.connection_pool_maxsize = credentials.API_CONNECTIONS
    api = client.ApiClient(cfg)
    direct_session(api)
    kube = Kube(api, slots=slots)
    try:
        # Warm: the connections are open and the client's code has run once, as in a live operator.
        warm = range(credentials.API_CONNECTIONS)
        await asyncio.gather(*(kube.patch_job("ml", f"warm-{i}", PATCH) for i in warm))
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        await asyncio.gather(*(kube.patch_job("ml", f"job-{i}", PATCH) for i in range(requests)))
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return (peak - before) / 2**20, seconds
    finally:
        await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="Job patches at once (a zone wake's jobs)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="how long the server takes to answer")
    parser.add_argument("--rounds", type=int, default=3, help="bursts of each kind, interleaved")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.latency_ms / 1000)
        return
    if args.requests < 1 or args.rounds < 1 or args.latency_ms < 0:
        parser.error("--requests and --rounds must be at least 1, --latency-ms not negative")
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        host = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        kinds = {
            "baseline: queued in the client": credentials.API_CONNECTIONS,
            "shipped: queued in Kube": None,
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for name, slots in kinds.items():
                results[name].append(asyncio.run(burst(host, args.requests, slots)))
    finally:
        server.terminate()
        server.wait()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    connections = credentials.API_CONNECTIONS
    print(f"{args.requests} Job patches at once, {connections} connections, server {args.latency_ms} ms")
    medians = {}
    for name, runs in results.items():
        peaks = sorted(p for p, _ in runs)
        secs = sorted(s for _, s in runs)
        medians[name] = peak = peaks[len(peaks) // 2]
        print(
            f"  {name:32s} peak {peak:6.2f} MiB ({peak * 1024 / args.requests:.1f} KiB per request; "
            f"range {peaks[0]:.2f}-{peaks[-1]:.2f}), burst {secs[len(secs) // 2]:.2f} s"
        )
    base, shipped = medians.values()
    print(f"  shipped / baseline: {shipped / base:.2f}x")


if __name__ == "__main__":
    main()
