"""Scale benchmark: many CarbonAwareJobs on many fake GPU nodes, one grid intensity change.

Starts the local control plane with an audit log and N kwok GPU nodes, then measures two things
in the same cluster:

1. The floor: M plain Jobs (the same shape the operator builds), all running, suspended by a
   parallel `spec.suspend` patch with no operator at all, timed to "suspended, no active pods".
   This is how fast the cluster itself (Job controller, kwok) can act on M suspends.
2. The operator: M CarbonAwareJobs (threshold policy, all running on a clean replayed grid); at a
   known instant the grid turns dirty, and each Job is timed from that instant to the same state.

It also counts the operator's API requests per job-hour in steady state, split by verb (from the
audit log), and its resident memory idle and after each step of jobs (--rss-steps; the median of
one-second samples over at least one heap trim) and at peak; and, from
the operator's own /metrics, the CPU seconds and reconcile ticks the change cost it, per job; and the
control plane's CPU seconds per part (etcd, kube-apiserver, controllers, kwok) over the floor and over
the change, which says whether a slower pause is the operator's doing or a busier cluster's.

    python benchmarks/scale_bench.py --jobs 1000 --nodes 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config
from prometheus_client.samples import Sample

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


def jobs_state(cp: LocalControlPlane, namespace: str = "bench") -> dict[str, tuple[bool, int]]:
    out = json.loads(cp.kubectl("-n", namespace, "get", "jobs", "-o", "json").stdout)
    state = {}
    for j in out["items"]:
        active = int((j.get("status") or {}).get("active") or 0)
        state[j["metadata"]["name"]] = (bool(j["spec"].get("suspend")), active)
    return state


class JobWatch:
    """`kubectl get jobs -w` in the background: sees each change once, without re-listing 1,000 Jobs.

    kubectl prints one short line per event (name, suspend, active), so the time taken is when the
    event arrived at no parsing cost: pretty-printed JSON re-parsed per line was quadratic in a Job's
    length (the operator's print as 166 lines). The API server ends a watch after a while; the watch
    is then started again, whose initial listing catches anything that changed meanwhile.
    """

    def __init__(self, cp: LocalControlPlane, namespace: str = "bench") -> None:
        self.first_done: dict[str, float] = {}
        self.armed = False
        self.restarts = 0
        self._closed = False
        self._args = [
            cp.tool("kubectl"), "--kubeconfig", str(cp.kubeconfig), "-n", namespace, "get", "jobs", "-w",
            "-o", 'jsonpath={.metadata.name}{" "}{.spec.suspend}{" "}{.status.active}{"\\n"}',
        ]  # fmt: skip
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._proc = subprocess.Popen(self._args, stdout=subprocess.PIPE, text=True)
            self._read(self._proc)
            self._proc.wait()
            if not self._closed:
                self.restarts += 1
                log(f"job watch ended; restarting it ({self.restarts})")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            fields = line.split()
            if len(fields) < 2:
                continue
            name, suspended = fields[0], fields[1] == "true"
            active = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0
            if self.armed and suspended and active == 0 and name not in self.first_done:
                self.first_done[name] = time.time()

    def close(self) -> None:
        self._closed = True
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


class RssTimeline:
    """The operator's RSS and open sockets every second, each sample labelled with the phase then.

    VmHWM says how high the resident set went, not when; the per-phase maxima say which part of
    the run (adding jobs, steady state, the wake, after it) holds the peak. Every open connection
    to the API server holds TLS buffers, so the sockets say whether a burst is connections.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.phase = "idle"
        self.samples: list[tuple[float, str, float, int]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                sample = (time.time(), self.phase, rss_kib(self.pid, "VmRSS") / 1024, self.sockets())
            except (OSError, RuntimeError):  # the operator has exited
                return
            self.samples.append(sample)
            self._closed.wait(1.0)

    def sockets(self) -> int:
        """The operator's open sockets (connections, the watch streams and its own listeners)."""
        fds = Path(f"/proc/{self.pid}/fd")
        count = 0
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):  # closed since it was listed
                count += os.readlink(fd).startswith("socket:")
        return count

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)

    def hold(self, phase: str, seconds: float) -> dict[str, float]:
        """Labels the next `seconds` as `phase` and waits them out: that window's RSS (MiB), its
        median, min and max.

        One reading lands anywhere between a burst and the next heap trim (every 30 s); over a trim
        period the median is the resident cost, the max the burst.
        """
        self.phase = phase
        time.sleep(seconds)
        rss = [mib for _, at, mib, _ in self.samples if at == phase] or [rss_kib(self.pid, "VmRSS") / 1024]
        return {
            "median": round(statistics.median(rss), 1),
            "min": round(min(rss), 1),
            "max": round(max(rss), 1),
        }

    def by_phase(self) -> dict[str, dict[str, float]]:
        """Per phase, in order: seconds sampled, the median and the max RSS (MiB), the most sockets."""
        phases: dict[str, list[tuple[float, int]]] = {}
        for _, phase, mib, sockets in self.samples:
            phases.setdefault(phase, []).append((mib, sockets))
        return {
            phase: {
                "seconds": len(v),
                "median": round(statistics.median(m for m, _ in v), 1),
                "max": round(max(m for m, _ in v), 1),
                "max_sockets": max(n for _, n in v),
            }
            for phase, v in phases.items()
        }


def _operator_calls(audit: Path, since: float, until: float) -> Iterator[tuple[float, str]]:
    """(when, `verb resource[/subresource]`) of each operator request in [since, until], per the audit log."""
    with audit.open() as f:
        for line in f:
            ev = json.loads(line)
            if ev.get("user", {}).get("username") != OPERATOR_USER:
                continue
            ts = datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if since <= ts <= until:
                ref = ev.get("objectRef") or {}
                resource = ref.get("resource", "")
                if ref.get("subresource"):
                    resource += "/" + ref["subresource"]
                yield ts, f"{ev.get('verb', '?')} {resource}".strip()


def operator_requests(audit: Path, since: float, until: float) -> Counter[str]:
    """The operator's requests in [since, until] by verb and resource, e.g. `patch carbonawarejobs/status`."""
    return Counter(call for _, call in _operator_calls(audit, since, until))


def job_patch_spread(audit: Path, change: float, until: float) -> dict[str, float | int | None]:
    """Seconds from the change to the operator's Job patches: the first is detection, the rest sending."""
    times = sorted(ts - change for ts, call in _operator_calls(audit, change, until) if call == "patch jobs")
    if not times:
        return {"count": 0}
    at = {"first_s": times[0], "p50_s": times[len(times) // 2], "p99_s": times[int(0.99 * (len(times) - 1))]}
    return {"count": len(times), **{k: round(v, 2) for k, v in at.items()}, "last_s": round(times[-1], 2)}


WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
# What the operator's own /metrics says about its work: CPU, reconcile ticks, status writes.
OWN_COUNTERS = {
    "cpu_seconds": "process_cpu_seconds_total",
    "ticks": "gridwise_reconcile_duration_seconds_count",
    "status_writes": "gridwise_status_writes_total",
    "decisions": "gridwise_decisions_total",
    "events_superseded": "gridwise_watch_events_superseded_total",
    "trainer_scrapes": "gridwise_trainer_scrapes_total",  # per pod, every result
    "trainer_scrapes_skipped": "gridwise_trainer_scrapes_total",
}
OWN_LABELS = {"trainer_scrapes_skipped": {"result": "skipped"}}  # only the samples with these labels


def operator_samples(port: int) -> Iterator[Sample]:
    """Every sample the operator's /metrics shows now."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        yield from family.samples


def operator_counters(port: int) -> dict[str, float]:
    """The operator's OWN_COUNTERS now, each summed over its labels (those in OWN_LABELS only)."""
    totals = dict.fromkeys(OWN_COUNTERS, 0.0)
    for sample in operator_samples(port):
        for key, metric in OWN_COUNTERS.items():
            if sample.name == metric and OWN_LABELS.get(key, {}).items() <= sample.labels.items():
                totals[key] += sample.value
    return totals


def work_between(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """What the operator did between two `operator_counters` readings, in all and per job."""
    delta = {key: after[key] - before[key] for key in OWN_COUNTERS}
    return {
        **{key: round(value, 2) for key, value in delta.items()},
        "cpu_ms_per_job": round(1000 * delta["cpu_seconds"] / jobs, 2),
        "ticks_per_job": round(delta["ticks"] / jobs, 2),
    }


def plain_job(i: int) -> dict[str, Any]:
    """The floor's Job: the shape the operator builds for a 1-replica job, without an owner."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"floor-{i:04d}", "namespace": "floor"},
        "spec": {
            "suspend": False,
            "parallelism": 1,
            "backoffLimit": 6,
            "podFailurePolicy": {
                "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
            },
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "t", "image": "trainer", "resources": {"limits": {"nvidia.com/gpu": 1}}}
                    ],
                }
            },
        },
    }


async def suspend_all(kubeconfig: Path, namespace: str, names: list[str], concurrency: int = 64) -> None:
    """Patches `spec.suspend: true` on every Job at once (bounded concurrency), as a script would."""
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = concurrency
    async with client.ApiClient(cfg) as api:
        batch: Any = client.BatchV1Api(api)  # raw dict patches, not model objects
        gate = asyncio.Semaphore(concurrency)

        async def one(name: str) -> None:
            async with gate:
                await batch.patch_namespaced_job(
                    name,
                    namespace,
                    {"spec": {"suspend": True}},
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )

        await asyncio.gather(*(one(n) for n in names))


def wait_all_running(cp: LocalControlPlane, namespace: str, count: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        state = jobs_state(cp, namespace)
        running = sum(1 for s, a in state.values() if not s and a > 0)
        if running >= count:
            return
        if time.time() > deadline:
            raise SystemExit(f"only {running}/{count} jobs in {namespace} running after {timeout:.0f}s")
        time.sleep(2)


def percentiles(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """p50, p99 and max (nearest-rank), or Nones when nothing was measured."""
    if not values:
        return None, None, None
    lat = sorted(values)
    return statistics.median(lat), lat[max(0, int(len(lat) * 0.99 + 0.5) - 1)], lat[-1]


def measure_floor(cp: LocalControlPlane, jobs: int, timeout: float) -> dict[str, Any]:
    """The same-run floor: `jobs` plain Jobs suspended by a parallel patch, no operator."""
    cp.kubectl("create", "namespace", "floor")
    while cp.kubectl("-n", "floor", "get", "sa", "default", check=False).returncode:
        time.sleep(0.2)
    docs = [plain_job(i) for i in range(jobs)]
    for k in range(0, len(docs), 100):
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[k : k + 100]))
    wait_all_running(cp, "floor", jobs, timeout=max(300.0, jobs * 0.6))
    watch = JobWatch(cp, "floor")
    time.sleep(2)  # the watch's initial listing is not a change
    watch.armed = True
    cpu_before = cpu_reading(cp)
    t0 = time.time()
    asyncio.run(suspend_all(cp.kubeconfig, "floor", [d["metadata"]["name"] for d in docs]))
    patched = time.time() - t0
    while len(watch.first_done) < jobs and time.time() < t0 + timeout:
        time.sleep(0.5)
    cpu = cpu_between(cpu_before, cpu_reading(cp))  # the bench script's share: the patches and the watch
    watch.close()
    p50, p99, worst = percentiles([t - t0 for t in watch.first_done.values()])
    log(
        f"floor: {len(watch.first_done)}/{jobs} suspended; p50 {p50}s p99 {p99}s "
        f"(patches sent in {patched:.1f}s)"
    )
    cp.kubectl("delete", "namespace", "floor", "--wait=true", "--timeout=600s")
    return {
        "reached": len(watch.first_done),
        "p50_s": round(p50, 2) if p50 is not None else None,
        "p99_s": round(p99, 2) if p99 is not None else None,
        "max_s": round(worst, 2) if worst is not None else None,
        "patches_sent_s": round(patched, 2),
        "cluster_cpu_s": cpu,
    }


CpuReading = tuple[float, dict[str, float], float]  # (wall time, each control-plane part, this script)


def cpu_reading(cp: LocalControlPlane) -> CpuReading:
    """The CPU seconds used so far by each control-plane part and by this script (its threads too)."""
    own = os.times()
    return time.time(), cp.cpu_seconds(), own.user + own.system


def cpu_between(before: CpuReading, after: CpuReading) -> dict[str, float]:
    """What each part used between two readings, the cluster's sum and cores busy, and this script's."""
    (t0, parts0, own0), (t1, parts1, own1) = before, after
    used = {name: round(parts1[name] - parts0.get(name, 0.0), 2) for name in sorted(parts1)}
    total, wall = sum(used.values()), t1 - t0
    return {
        **used,
        "total": round(total, 2),
        "cores_busy": round(total / wall, 2) if wall > 0 else 0.0,
        "bench script": round(own1 - own0, 2),
    }


def wait_ready(port: int, op: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    """Until the operator answers /readyz: RSS before that is an operator still importing."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if op.poll() is not None:
            raise SystemExit(f"operator exited with {op.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"operator not ready after {timeout:.0f}s")


def log(msg: str) -> None:
    """A progress line, named after the benchmark script that runs (others import this one)."""
    name = Path(sys.argv[0]).stem.replace("_", "-")
    print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any], json_out: Path | None) -> None:
    """Print the result and keep it, so a long run's numbers survive the terminal."""
    text = json.dumps(result, indent=2)
    print(text)
    if json_out:
        json_out.write_text(text + "\n")


def stop(op: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """Stop the operator; a slow shutdown is killed so no cluster is left behind."""
    if op is None or op.poll() is not None:
        return
    op.terminate()
    try:
        op.wait(timeout)
    except subprocess.TimeoutExpired:
        op.kill()
        op.wait()


UNSHARED = "from gridwise.k8s import watch_transform; watch_transform.KEPT_KINDS = frozenset(); "


def strings_label(unshared_strings: bool) -> str:
    """How a result's operator kept its CarbonAwareJob bodies, for the JSON."""
    return "unshared (baseline)" if unshared_strings else "shared (shipped)"


def operator_launcher(
    unshared_strings: bool,
    api_connections: int | None = None,
    worker_idle_s: float | None = None,
    every_event: bool = False,
    no_scrape: bool = False,
    scrape_in_wakes: bool = False,
) -> list[str]:
    """The command that starts the operator's CLI, as shipped or with a variant to compare against:
    CarbonAwareJob bodies' strings unshared (the baseline for the watch transform's sharing),
    another limit on gridwise's own connections to the API server, another idle timeout for
    kopf's per-object workers, every watch event handled (none left for a newer one), no
    trainer scraped (each tick's scrape answers "no trainer" at once), or every pod scraped in
    a zone wake too, also those that did not answer last time."""
    prelude = UNSHARED if unshared_strings else ""
    if every_event:
        prelude += (
            "from gridwise.k8s import watch_transform; watch_transform.superseded = lambda e, p: False; "
        )
    if no_scrape:
        prelude += (
            "import asyncio; from gridwise.k8s import reconciler; "
            "reconciler.scrape = lambda *a: asyncio.sleep(0); "
        )
    if scrape_in_wakes:
        prelude += "from gridwise.k8s import reconciler; reconciler.BUSY_TICKS = 10**9; "
    if api_connections is not None:
        prelude += f"from gridwise.k8s import credentials; credentials.API_CONNECTIONS = {api_connections}; "
    if worker_idle_s is not None:
        prelude += f"from gridwise.k8s import runtime; runtime.WORKER_IDLE_S = {worker_idle_s!r}; "
    return cli_with(prelude)


def cli_with(prelude: str) -> list[str]:
    """The command that runs gridwise's CLI after `prelude` (Python that sets up a variant)."""
    if not prelude:
        return [sys.executable, "-m", "gridwise.cli"]
    run = "import sys; from gridwise.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", prelude + run]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000, help="CarbonAwareJobs (and floor Jobs) to run")
    ap.add_argument("--nodes", type=int, default=500, help="kwok GPU nodes (8 GPUs each)")
    ap.add_argument(
        "--rss-steps",
        default="",
        help="comma-separated job counts at which to record the operator's RSS while jobs are added "
        "(default: a quarter, half and all of --jobs)",
    )
    ap.add_argument("--tick-seconds", type=float, default=10.0, help="operator reconcile interval per job")
    ap.add_argument(
        "--steady-seconds", type=float, default=240.0, help="steady state measured before the change"
    )
    ap.add_argument(
        "--settle-seconds",
        type=float,
        help="time the replay clock leaves for every job to start before the steady window "
        "(default: 600 or 1.5 s per job, whichever is more)",
    )
    ap.add_argument("--timeout", type=float, default=300.0, help="give up this long after the change")
    ap.add_argument("--no-floor", action="store_true", help="skip the direct-suspend floor")
    ap.add_argument(
        "--unshared-strings",
        action="store_true",
        help="run the operator with its CarbonAwareJob bodies' strings not shared: the baseline "
        "for the watch transform's string sharing (issue 12)",
    )
    ap.add_argument(
        "--api-connections",
        type=int,
        help="run the operator with this many connections to the API server for its own requests "
        "(default: as shipped, gridwise.k8s.credentials.API_CONNECTIONS)",
    )
    ap.add_argument(
        "--worker-idle-seconds",
        type=float,
        help="run the operator with kopf's per-object workers idling this long before they give "
        "their slot back (default: as shipped, gridwise.k8s.runtime.WORKER_IDLE_S; kopf's own: 5)",
    )
    ap.add_argument(
        "--every-event",
        action="store_true",
        help="run the operator handling every watch event, also those a newer event of the same "
        "object has superseded: the baseline for the watch transform's skipping of them (issue 12)",
    )
    ap.add_argument(
        "--no-scrape",
        action="store_true",
        help="run the operator without scraping its trainers (every job's progress and energy "
        "estimated): what the scrape before each decision costs a zone wake (issue 12)",
    )
    ap.add_argument(
        "--scrape-in-wakes",
        action="store_true",
        help="run the operator asking every pod in a zone wake, also those whose last scrape got "
        "no answer (kwok's pods never answer): the baseline for skipping them in a wake (issue 12)",
    )
    ap.add_argument(
        "--pause-write-hold-seconds",
        type=float,
        help="passed to the operator: how long status writes wait for a mass pause's pods to be "
        "counted out (default: as shipped; 0, the baseline: status written as each job is paused)",
    )
    ap.add_argument("--json-out", type=Path, help="also write the result here")
    args = ap.parse_args()
    if args.api_connections is not None and args.api_connections < 1:
        ap.error("--api-connections must be at least 1")
    if args.worker_idle_seconds is not None and args.worker_idle_seconds <= 0:
        ap.error("--worker-idle-seconds must be more than 0")
    steps = sorted({int(x) for x in args.rss_steps.split(",") if x.strip()} | {args.jobs})
    if not args.rss_steps:
        steps = sorted({max(1, args.jobs // 4), max(1, args.jobs // 2), args.jobs})
    if steps[-1] > args.jobs:
        ap.error("--rss-steps may not exceed --jobs")

    work = Path(tempfile.mkdtemp(prefix="gridwise-scale-"))
    trace = work / "trace.csv"
    write_trace(trace)
    cp = LocalControlPlane(workdir=work / "cp", audit=True)
    log(f"starting control plane with {args.nodes} GPU nodes in {work}")
    cp.start()
    op: subprocess.Popen[bytes] | None = None
    try:
        cp.wait_nodes_ready(cp.add_gpu_nodes(GPUNodePool(count=args.nodes, gpus_per_node=8)), timeout=300)
        floor = None if args.no_floor else measure_floor(cp, args.jobs, args.timeout)
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd/carbonawarejobs.gridwise.dev")
        cp.kubectl("create", "namespace", "bench")
        while cp.kubectl("-n", "bench", "get", "sa", "default", check=False).returncode:
            time.sleep(0.2)
        # The replay clock runs at wall speed; its start leaves time for every job to start (about
        # 1.5 s per job on this machine when it is busy) plus the steady window before the change.
        settle_budget = (
            args.settle_seconds if args.settle_seconds is not None else max(600.0, args.jobs * 1.5)
        )
        lead = settle_budget + args.steady_seconds
        anchor = time.time() + 5
        start = CHANGE - timedelta(seconds=lead)
        change_wall = anchor + lead
        op_log = (work / "operator.log").open("wb")
        http_port = free_port()
        hold = (
            []
            if args.pause_write_hold_seconds is None
            else ["--pause-write-hold-seconds", str(args.pause_write_hold_seconds)]
        )
        op = subprocess.Popen(
            [
                *operator_launcher(
                    args.unshared_strings,
                    args.api_connections,
                    args.worker_idle_seconds,
                    every_event=args.every_event,
                    no_scrape=args.no_scrape,
                    scrape_in_wakes=args.scrape_in_wakes,
                ),
                "operator", "run",
                "--kubeconfig", str(cp.operator_kubeconfig()),
                "--namespace", "bench", "--no-leader-election",
                "--http-host", "127.0.0.1", "--http-port", str(http_port),
                "--tick-seconds", str(args.tick_seconds),
                "--clock", "replay", "--clock-start", start.isoformat(), "--clock-speed", "1",
                "--clock-anchor", str(anchor), "--signal-ttl-seconds", "5", "--log-level", "WARNING",
                *hold,
            ],
            stdout=op_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRIDWISE_TRACE_DIRS": str(work)},  # where the bench's trace lives
        )  # fmt: skip
        wait_ready(http_port, op)
        time.sleep(3 * args.tick_seconds)  # idle: imported, watching, a few safety-net passes
        timeline = RssTimeline(op.pid)
        idle_rss = timeline.hold("idle", 30.0)
        log(f"operator idle RSS {idle_rss} MiB; adding jobs in steps {steps}")
        rss_range: dict[str, dict[str, float]] = {"idle": idle_rss}
        applied = 0
        for step in steps:
            timeline.phase = f"adding {applied + 1}-{step}"
            docs = [caj(i, trace) for i in range(applied, step)]
            for k in range(0, len(docs), 100):
                cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[k : k + 100]))
            applied = step
            wait_all_running(
                cp, "bench", step, timeout=max(0.0, change_wall - args.steady_seconds - time.time())
            )
            # A few ticks at this size, and one heap trim at least.
            rss_range[str(step)] = timeline.hold(f"{step} running", max(30.0, 3 * args.tick_seconds))
            log(f"{step} jobs running; operator RSS {rss_range[str(step)]} MiB")
        steady_from = time.time()
        timeline.phase = "steady"
        if change_wall - steady_from < args.steady_seconds * 0.5:
            raise SystemExit("jobs took too long to start: raise --steady-seconds or lower --jobs")
        log(
            f"all {args.jobs} jobs running; grid turns dirty in {change_wall - steady_from:.0f}s "
            f"(operator pid {op.pid})"
        )
        watch = JobWatch(cp)
        while time.time() < change_wall - 1:
            time.sleep(0.2)
        own_before = operator_counters(http_port)
        cpu_before = cpu_reading(cp)
        while time.time() < change_wall:
            time.sleep(0.05)
        watch.armed = True
        timeline.phase = "wake"
        steady_until = time.time()
        while len(watch.first_done) < args.jobs and time.time() < change_wall + args.timeout:
            time.sleep(0.5)
        end = time.time()
        own_at_end = operator_counters(http_port)
        cluster_cpu = cpu_between(cpu_before, cpu_reading(cp))
        watch.close()
        timeline.phase = "30 s after the wake"
        time.sleep(30)  # the ticks after the wake: watch-event follow-ups and the safety net
        own_after = operator_counters(http_port)
        p50, p99, worst = percentiles([t - change_wall for t in watch.first_done.values()])
        peak_rss = rss_kib(op.pid, "VmHWM")
        timeline.close()
        time.sleep(3)  # let the batched audit backend flush
        steady = operator_requests(cp.audit_log, steady_from, steady_until)
        during = operator_requests(cp.audit_log, steady_until, end)
        spread = job_patch_spread(cp.audit_log, change_wall, end)
        job_hours = args.jobs * (steady_until - steady_from) / 3600
        per_job_hour = {k: round(v / job_hours, 2) for k, v in sorted(steady.items())}
        writes = sum(v for k, v in steady.items() if k.split(" ")[0] in WRITE_VERBS)
        result: dict[str, Any] = {
            "jobs": args.jobs,
            "nodes": args.nodes,
            "tick_seconds": args.tick_seconds,
            "strings": strings_label(args.unshared_strings),
            "api_connections": args.api_connections or "as shipped",
            "worker_idle_seconds": args.worker_idle_seconds or "as shipped",
            "superseded_events": "handled (baseline)" if args.every_event else "skipped (shipped)",
            "trainer_scrape": (
                "none (variant)"
                if args.no_scrape
                else "every pod, also in a wake (baseline)"
                if args.scrape_in_wakes
                else "as shipped"
            ),
            "pause_write_hold_seconds": (
                "as shipped" if args.pause_write_hold_seconds is None else args.pause_write_hold_seconds
            ),
            "operator": {
                "reached": len(watch.first_done),
                "p50_s": round(p50, 2) if p50 is not None else None,
                "p99_s": round(p99, 2) if p99 is not None else None,
                "max_s": round(worst, 2) if worst is not None else None,
            },
            "floor": floor,
            "api_requests_per_job_hour_steady": round(sum(steady.values()) / job_hours, 2),
            "api_writes_per_job_hour_steady": round(writes / job_hours, 2),
            "api_requests_per_job_hour_by_verb": per_job_hour,
            "api_requests_during_change_by_verb": dict(sorted(during.items())),
            "operator_job_patches_after_change": spread,
            # From 1 s before the change to the last Job done, and to 30 s after that.
            "operator_work_during_change": work_between(own_before, own_at_end, args.jobs),
            "operator_work_to_30s_after": work_between(own_before, own_after, args.jobs),
            # The control plane's CPU over the same window as operator_work_during_change.
            "cluster_cpu_s_during_change": cluster_cpu,
            # Medians of one-second samples over each step's window (the ranges below), and VmHWM.
            "operator_rss_mib": {
                **{at: r["median"] for at, r in rss_range.items()},
                "peak": round(peak_rss / 1024, 1),
            },
            "operator_rss_mib_range": rss_range,
            # Every one-second sample, by the phase it fell in: where the peak is.
            "operator_rss_mib_by_phase": timeline.by_phase(),
        }
        if floor and floor.get("p99_s") and p99 is not None:
            result["p99_over_floor_p99"] = round(p99 / floor["p99_s"], 2)
            result["p50_over_floor_p50"] = round((p50 or 0) / floor["p50_s"], 2)
        emit(result, args.json_out)
        return 0 if len(watch.first_done) == args.jobs else 1
    finally:
        stop(op)
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
