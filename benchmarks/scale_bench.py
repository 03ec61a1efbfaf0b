"""Scale benchmark: many CarbonAwareJobs on many fake GPU nodes, one grid intensity change.

Starts the local control plane with an audit log, N kwok GPU nodes and M CarbonAwareJobs (threshold
policy, all running on a clean grid), then lets the replayed grid turn dirty at a known instant and
measures how long each Job takes to reach its new state (suspended, no active pods): p50/p99 from
the change. It also counts the operator's API requests per job per hour (from the audit log) and
its peak memory, against the same operator idle in the same run.

    python benchmarks/scale_bench.py --jobs 500 --nodes 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from gridwise.devcluster import OPERATOR_USER, GPUNodePool, LocalControlPlane, free_port

REPO = Path(__file__).resolve().parents[1]
CHANGE = datetime(2030, 1, 6, 12, 0, tzinfo=UTC)  # the grid turns dirty at this replayed instant
HEADER = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,Data Source,"
    "Data Estimated,Data Estimation Method"
)


def write_trace(path: Path) -> None:
    """Clean (100 g/kWh) for three days up to CHANGE, dirty (600) for two days after."""
    start = CHANGE - timedelta(days=3)
    rows = [HEADER]
    for h in range(24 * 5):
        when = start + timedelta(hours=h)
        value = 100.0 if when < CHANGE else 600.0
        rows.append(f"{when:%Y-%m-%d %H:%M:%S},B,B,BENCH,{value},{value},50,50,bench,false,")
    path.write_text("\n".join(rows) + "\n")


def caj(i: int, trace: Path) -> dict[str, Any]:
    return {
        "apiVersion": "gridwise.dev/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {"name": f"job-{i:04d}", "namespace": "bench"},
        "spec": {
            "completeWithin": "30d",
            "replicas": {"min": 1, "max": 1},
            "work": {"gpuHours": 500, "totalSteps": 100000},
            "carbon": {"provider": "trace", "zone": "BENCH", "tracePath": str(trace)},
            "policy": {"type": "threshold", "thresholdGramsPerKWh": 300},
            "template": {
                "spec": {
                    "containers": [
                        {"name": "t", "image": "trainer", "resources": {"limits": {"nvidia.com/gpu": 1}}}
                    ]
                }
            },
        },
    }


def jobs_state(cp: LocalControlPlane) -> dict[str, tuple[bool, int]]:
    out = json.loads(cp.kubectl("-n", "bench", "get", "jobs", "-o", "json").stdout)
    state = {}
    for j in out["items"]:
        active = int((j.get("status") or {}).get("active") or 0)
        state[j["metadata"]["name"]] = (bool(j["spec"].get("suspend")), active)
    return state


class JobWatch:
    """`kubectl get jobs -w` in the background: sees each change once, without re-listing 500 Jobs."""

    def __init__(self, cp: LocalControlPlane) -> None:
        self.first_done: dict[str, float] = {}
        self.armed = False
        self._proc = subprocess.Popen(
            [cp.tool("kubectl"), "--kubeconfig", str(cp.kubeconfig), "-n", "bench", "get", "jobs", "-w",
             "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        decoder = json.JSONDecoder()
        buf = ""
        for line in self._proc.stdout:
            buf += line
            try:
                event, end = decoder.raw_decode(buf.lstrip())
            except json.JSONDecodeError:
                continue
            buf = buf.lstrip()[end:]
            job = event["object"]
            suspended = bool(job["spec"].get("suspend"))
            active = int((job.get("status") or {}).get("active") or 0)
            name = job["metadata"]["name"]
            if self.armed and suspended and active == 0 and name not in self.first_done:
                self.first_done[name] = time.time()

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def operator_requests(audit: Path, since: float, until: float) -> int:
    count = 0
    with audit.open() as f:
        for line in f:
            ev = json.loads(line)
            if ev.get("user", {}).get("username") != OPERATOR_USER:
                continue
            ts = datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if since <= ts <= until:
                count += 1
    return count


def log(msg: str) -> None:
    print(f"[scale-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--tick-seconds", type=float, default=10.0, help="operator reconcile interval per job")
    ap.add_argument("--lead-seconds", type=float, default=240.0, help="time to settle before the change")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up this long after the change")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gridwise-scale-"))
    trace = work / "trace.csv"
    write_trace(trace)
    cp = LocalControlPlane(workdir=work / "cp", audit=True)
    log(f"starting control plane with {args.nodes} GPU nodes in {work}")
    cp.start()
    op: subprocess.Popen[bytes] | None = None
    try:
        cp.wait_nodes_ready(cp.add_gpu_nodes(GPUNodePool(count=args.nodes, gpus_per_node=8)), timeout=180)
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd/carbonawarejobs.gridwise.dev")
        cp.kubectl("create", "namespace", "bench")
        while cp.kubectl("-n", "bench", "get", "sa", "default", check=False).returncode:
            time.sleep(0.2)
        anchor = time.time() + 5
        start = CHANGE - timedelta(seconds=args.lead_seconds)
        change_wall = anchor + args.lead_seconds
        op_log = (work / "operator.log").open("wb")
        op = subprocess.Popen(
            [
                sys.executable, "-m", "gridwise.cli", "operator", "run",
                "--kubeconfig", str(cp.operator_kubeconfig()),
                "--namespace", "bench", "--no-leader-election",
                "--http-host", "127.0.0.1", "--http-port", str(free_port()),
                "--tick-seconds", str(args.tick_seconds),
                "--clock", "replay", "--clock-start", start.isoformat(), "--clock-speed", "1",
                "--clock-anchor", str(anchor), "--signal-ttl-seconds", "5", "--log-level", "WARNING",
            ],
            stdout=op_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRIDWISE_TRACE_DIRS": str(work)},  # where the bench's trace lives
        )  # fmt: skip
        time.sleep(6)
        idle_rss = rss_kib(op.pid, "VmRSS")
        log(f"operator idle RSS {idle_rss / 1024:.1f} MiB; applying {args.jobs} CarbonAwareJobs")
        docs = [caj(i, trace) for i in range(args.jobs)]
        for k in range(0, len(docs), 100):
            cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[k : k + 100]))
        while True:
            state = jobs_state(cp)
            running = sum(1 for s, a in state.values() if not s and a > 0)
            if running == args.jobs:
                break
            if time.time() > change_wall - 5:
                raise SystemExit(f"{running}/{args.jobs} jobs ran before the change: raise --lead-seconds")
            time.sleep(2)
        steady_from = time.time()
        log(f"all {args.jobs} jobs running; grid turns dirty in {change_wall - steady_from:.0f}s")
        watch = JobWatch(cp)
        while time.time() < change_wall:
            time.sleep(0.2)
        watch.armed = True
        steady_until = time.time()
        while len(watch.first_done) < args.jobs and time.time() < change_wall + args.timeout:
            time.sleep(0.5)
        end = time.time()
        watch.close()
        reached = {name: t - change_wall for name, t in watch.first_done.items()}
        peak_rss = rss_kib(op.pid, "VmHWM")
        time.sleep(3)  # let the batched audit backend flush
        steady_requests = operator_requests(cp.audit_log, steady_from, steady_until)
        total_requests = operator_requests(cp.audit_log, steady_from, end)
        lat = sorted(reached.values())
        p99 = lat[max(0, int(len(lat) * 0.99) - 1)] if lat else None
        steady_hours = (steady_until - steady_from) / 3600
        result = {
            "jobs": args.jobs,
            "nodes": args.nodes,
            "tick_seconds": args.tick_seconds,
            "jobs_reached_new_state": len(lat),
            "latency_p50_s": round(statistics.median(lat), 2) if lat else None,
            "latency_p99_s": round(p99, 2) if p99 is not None else None,
            "latency_max_s": round(lat[-1], 2) if lat else None,
            "p99_over_tick": round(p99 / args.tick_seconds, 2) if p99 is not None else None,
            "api_requests_per_job_hour_steady": round(steady_requests / args.jobs / steady_hours, 1),
            "api_requests_during_change": total_requests - steady_requests,
            "operator_idle_rss_mib": round(idle_rss / 1024, 1),
            "operator_peak_rss_mib": round(peak_rss / 1024, 1),
            "peak_over_idle_rss": round(peak_rss / idle_rss, 2),
        }
        print(json.dumps(result, indent=2))
        return 0 if len(lat) == args.jobs else 1
    finally:
        if op is not None:
            op.terminate()
            op.wait(20)
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
