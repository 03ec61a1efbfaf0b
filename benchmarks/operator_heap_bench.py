"""Where the operator's memory per job goes: a tracemalloc diff between idle and N running jobs.

The scale benchmark says how much the operator's RSS grows per job; this says which code holds it.
The operator runs under tracemalloc (this script re-runs itself as the operator's launcher, and
SIGUSR2 makes it write a snapshot), idle and then with N CarbonAwareJobs running on a clean replayed
grid. The report lists what grew, by file and by allocation traceback, per job.

tracemalloc slows the operator and adds its own memory (about 80 MiB at idle with 12 frames), so the
RSS here is not the scale benchmark's; the traced sizes are what Python objects hold.

    python benchmarks/operator_heap_bench.py --jobs 400
    python benchmarks/operator_heap_bench.py --jobs 400 --compare-unshared   # A/B, same run
    python benchmarks/operator_heap_bench.py --jobs 400 --wake-after 5      # and mid-wake

`--compare-unshared` measures twice, each on a fresh control plane: first with the watch transform
as shipped, then with CarbonAwareJob bodies' strings left unshared (the transform before issue 12's
string sharing, the baseline), and reports the ratio.

`--wake-after S` also turns the grid dirty once the jobs have run (every job pauses, as in the scale
benchmark's zone wake) and takes a third snapshot S seconds into the wake: what the wake holds on
top of the running jobs, by file, and tracemalloc's peak of Python objects from the running jobs'
snapshot to that one (the part of the operator's peak RSS that is Python objects).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

LAUNCH = "--as-operator"


def launch_operator(argv: list[str]) -> int:
    """The operator's own CLI under tracemalloc; SIGUSR2 writes $HEAP_SNAPSHOTS/snap-N.pickle."""
    if os.environ.get("HEAP_UNSHARED") == "1":
        from gridwise.k8s import watch_transform

        watch_transform.KEPT_KINDS = frozenset()  # the baseline: no body's strings are shared
    tracemalloc.start(int(os.environ.get("HEAP_FRAMES", "12")))
    counter = itertools.count()

    def dump(*_: object) -> None:
        path = Path(os.environ["HEAP_SNAPSHOTS"]) / f"snap-{next(counter)}.pickle"
        current, peak = tracemalloc.get_traced_memory()  # the peak since the last snapshot
        tracemalloc.take_snapshot().dump(str(path))
        tracemalloc.reset_peak()
        path.with_suffix(".json").write_text(json.dumps({"current": current, "peak": peak}))
        path.with_suffix(".done").touch()

    signal.signal(signal.SIGUSR2, dump)
    from gridwise.cli import main as gridwise_main

    return int(gridwise_main(argv) or 0)


def snapshot(op: subprocess.Popen[bytes], folder: Path, n: int, timeout: float = 120.0) -> Path:
    op.send_signal(signal.SIGUSR2)
    done = folder / f"snap-{n}.done"
    deadline = time.time() + timeout
    while not done.exists():
        if time.time() > deadline or op.poll() is not None:
            raise SystemExit(f"no heap snapshot {n} from the operator")
        time.sleep(0.5)
    return folder / f"snap-{n}.pickle"


def traced(snap: Path) -> dict[str, float]:
    """Python objects traced when the snapshot was taken, and their peak since the one before (MiB)."""
    got = json.loads(snap.with_suffix(".json").read_text())
    return {k: round(v / 2**20, 1) for k, v in got.items()}


def growth(idle: Path, loaded: Path, jobs: int, top: int) -> dict[str, Any]:
    keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
    a = tracemalloc.Snapshot.load(str(idle)).filter_traces(keep)
    b = tracemalloc.Snapshot.load(str(loaded)).filter_traces(keep)
    by_file = b.compare_to(a, "filename")
    by_trace = b.compare_to(a, "traceback")
    total = sum(s.size_diff for s in by_file)
    return {
        "traced_growth_mib": round(total / 2**20, 2),
        "traced_kib_per_job": round(total / 1024 / jobs, 1),
        "by_file_kib_per_job": [
            {
                "file": str(s.traceback[0].filename),
                "kib_per_job": round(s.size_diff / 1024 / jobs, 2),
                "blocks_per_job": round(s.count_diff / jobs, 1),
            }
            for s in by_file[:top]
        ],
        "by_traceback_kib_per_job": [
            {
                "kib_per_job": round(s.size_diff / 1024 / jobs, 2),
                "where": [f"{f.filename}:{f.lineno}" for f in s.traceback][-8:],
            }
            for s in by_trace[:top]
        ],
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == LAUNCH:
        return launch_operator(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=400, help="CarbonAwareJobs to run")
    ap.add_argument("--top", type=int, default=15, help="rows per table")
    ap.add_argument("--settle-seconds", type=float, default=60.0, help="time running before the snapshot")
    ap.add_argument(
        "--wake-after",
        type=float,
        help="turn the grid dirty once the jobs run and snapshot this many seconds into the wake",
    )
    ap.add_argument(
        "--wake-lead",
        type=float,
        default=600.0,
        help="with --wake-after: replayed seconds from the operator's start to the grid change; "
        "must leave time to start every job and settle",
    )
    ap.add_argument("--json-out", type=Path)
    ap.add_argument(
        "--compare-unshared",
        action="store_true",
        help="also measure with the bodies' strings unshared (the baseline) and report the ratio",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
    from scale_bench import emit

    if not args.compare_unshared:
        emit(measure(args, unshared=False), args.json_out)
        return 0
    shipped = measure(args, unshared=False)
    baseline = measure(args, unshared=True)
    emit(
        {
            "shipped": shipped,
            "unshared_baseline": baseline,
            "traced_kib_per_job_ratio": round(
                shipped["traced_kib_per_job"] / baseline["traced_kib_per_job"], 3
            ),
        },
        args.json_out,
    )
    return 0


def measure(args: argparse.Namespace, unshared: bool) -> dict[str, Any]:
    """One run on a fresh control plane: the traced growth from idle to `args.jobs` running jobs."""
    import yaml
    from scale_bench import (
        CHANGE,
        caj,
        rss_kib,
        stop,
        strings_label,
        wait_all_running,
        wait_ready,
        write_trace,
    )

    from gridwise.devcluster import GPUNodePool, LocalControlPlane, free_port

    repo = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="gridwise-heap-"))
    trace, snaps = work / "trace.csv", work / "snapshots"
    snaps.mkdir()
    write_trace(trace)
    cp = LocalControlPlane(workdir=work / "cp")
    cp.start()
    op: subprocess.Popen[bytes] | None = None
    try:
        nodes = cp.add_gpu_nodes(GPUNodePool(count=args.jobs // 8 + 10, gpus_per_node=8))
        cp.wait_nodes_ready(nodes, timeout=300)
        cp.kubectl("apply", "--server-side", "-f", str(repo / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd/carbonawarejobs.gridwise.dev")
        cp.kubectl("create", "namespace", "bench")
        while cp.kubectl("-n", "bench", "get", "sa", "default", check=False).returncode:
            time.sleep(0.2)
        port, anchor = free_port(), time.time() + 5
        # Without a wake the grid stays clean for the whole run.
        lead = args.wake_lead if args.wake_after is not None else 86400.0
        start, change_wall = CHANGE - timedelta(seconds=lead), anchor + lead
        op = subprocess.Popen(
            [
                sys.executable, __file__, LAUNCH, "operator", "run",
                "--kubeconfig", str(cp.operator_kubeconfig()), "--namespace", "bench",
                "--no-leader-election", "--http-host", "127.0.0.1", "--http-port", str(port),
                "--tick-seconds", "10", "--clock", "replay", "--clock-start", start.isoformat(),
                "--clock-speed", "1", "--clock-anchor", str(anchor), "--signal-ttl-seconds", "5",
                "--log-level", "WARNING",
            ],
            stdout=(work / "operator.log").open("wb"), stderr=subprocess.STDOUT,
            env={
                **os.environ, "GRIDWISE_TRACE_DIRS": str(work), "HEAP_SNAPSHOTS": str(snaps),
                "HEAP_UNSHARED": "1" if unshared else "0",
            },
        )  # fmt: skip
        wait_ready(port, op)
        time.sleep(30)
        rss = {"idle": rss_kib(op.pid, "VmRSS") / 1024}
        idle = snapshot(op, snaps, 0)
        docs = [caj(i, trace) for i in range(args.jobs)]
        for k in range(0, len(docs), 100):
            cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[k : k + 100]))
        wait_all_running(cp, "bench", args.jobs, timeout=max(600.0, 2.0 * args.jobs))
        time.sleep(args.settle_seconds)
        rss["loaded"] = rss_kib(op.pid, "VmRSS") / 1024
        loaded = snapshot(op, snaps, 1)
        result = {
            "jobs": args.jobs,
            "strings": strings_label(unshared),
            "rss_mib_under_tracemalloc": {k: round(v, 1) for k, v in rss.items()},
            "traced_mib": {"idle": traced(idle), "loaded": traced(loaded)},
            **growth(idle, loaded, args.jobs, args.top),
        }
        if args.wake_after is not None:
            if time.time() > change_wall:
                raise SystemExit("the jobs took longer than --wake-lead to start and settle: raise it")
            time.sleep(change_wall + args.wake_after - time.time())
            rss["wake"] = rss_kib(op.pid, "VmRSS") / 1024
            wake = snapshot(op, snaps, 2)
            result["traced_mib"]["wake"] = traced(wake)
            result["rss_mib_under_tracemalloc"]["wake"] = round(rss["wake"], 1)
            result["wake_over_loaded"] = growth(loaded, wake, args.jobs, args.top)
        return result
    finally:
        stop(op, timeout=60.0)
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
