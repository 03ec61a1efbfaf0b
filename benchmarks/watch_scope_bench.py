"""What other workloads in the operator's namespaces cost it: its watches filtered by the API server
against kopf's client-side filter alone.

A GPU cluster runs much besides gridwise. kopf's `labels=` on a handler filters on the client, so
without a server-side `labelSelector` every Job and pod in the watched namespaces is listed,
streamed, decoded and queued by the operator, then dropped. Here, in one control plane with kwok
nodes, the operator runs a few CarbonAwareJobs while someone else's Deployment of `--foreign-pods`
pods starts and is deleted in the same namespace; measured twice, each with a fresh operator and
namespace: as shipped (`handlers.watch_only_owned`: the API server sends only gridwise's own Jobs
and pods) and the baseline (no selector: kopf's client-side filter only). Reported per variant:
the watch events that reached the operator (`gridwise_watch_events_total`), its CPU seconds and
its RSS over the churn.

    python benchmarks/watch_scope_bench.py --foreign-pods 2000 --jobs 20 --nodes 40
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from scale_bench import (
    CHANGE,
    RssTimeline,
    caj,
    cli_with,
    emit,
    log,
    operator_samples,
    rss_kib,
    stop,
    wait_all_running,
    wait_ready,
    write_trace,
)

from gridwise.devcluster import GPUNodePool, LocalControlPlane, free_port

VARIANTS = {
    "selector (shipped)": "",
    "client-side filter only (baseline)": (
        "from gridwise.k8s import runtime; runtime.watch_only_owned = lambda s: None; "
    ),
}


def foreign_deployment(namespace: str, replicas: int) -> dict[str, Any]:
    """Someone else's workload: plain pods without gridwise's label."""
    labels = {"app": "foreign"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "foreign", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        },
    }


def foreign_pods(cp: LocalControlPlane, namespace: str) -> tuple[int, int]:
    """How many foreign pods exist, and how many of them run."""
    out = cp.kubectl(
        "-n", namespace, "get", "pods", "-l", "app=foreign", "--no-headers",
        "-o", "custom-columns=PHASE:.status.phase",
    ).stdout.split()  # fmt: skip
    return len(out), out.count("Running")


def wait_until(what: str, check: Any, timeout: float) -> float:
    """Seconds until `check()` is true; fails the run after `timeout`."""
    start = time.time()
    while not check():
        if time.time() - start > timeout:
            raise SystemExit(f"{what}: not reached after {timeout:.0f}s")
        time.sleep(1)
    return time.time() - start


def counters(port: int) -> dict[str, float]:
    """The operator's CPU seconds and watch events by kind, now."""
    found: dict[str, float] = {}
    for sample in operator_samples(port):
        if sample.name == "process_cpu_seconds_total":
            found["cpu_seconds"] = sample.value
        elif sample.name == "gridwise_watch_events_total":
            found[f"events_{sample.labels['kind']}"] = sample.value
    return found


def run_variant(
    cp: LocalControlPlane,
    work: Path,
    trace: Path,
    name: str,
    prelude: str,
    namespace: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    cp.kubectl("create", "namespace", namespace)
    while cp.kubectl("-n", namespace, "get", "sa", "default", check=False).returncode:
        time.sleep(0.2)
    port = free_port()
    op_log = (work / f"operator-{namespace}.log").open("wb")
    op = subprocess.Popen(
        [
            *cli_with(prelude), "operator", "run",
            "--kubeconfig", str(cp.operator_kubeconfig()),
            "--namespace", namespace, "--no-leader-election",
            "--http-host", "127.0.0.1", "--http-port", str(port),
            "--clock", "replay", "--clock-start", (CHANGE - timedelta(days=2)).isoformat(),
            "--clock-speed", "1", "--log-level", "WARNING",
        ],
        stdout=op_log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GRIDWISE_TRACE_DIRS": str(work)},
    )  # fmt: skip
    try:
        wait_ready(port, op)
        docs = [caj(i, trace) for i in range(args.jobs)]
        for doc in docs:
            doc["metadata"]["namespace"] = namespace
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        wait_all_running(cp, namespace, args.jobs, timeout=300)
        timeline = RssTimeline(op.pid)
        quiet = timeline.hold("before", 35.0)  # one heap trim at least
        before = counters(port)
        timeline.phase = "churn"
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(foreign_deployment(namespace, args.foreign_pods)))
        started = wait_until(
            "foreign pods running", lambda: foreign_pods(cp, namespace)[1] >= args.foreign_pods, args.timeout
        )
        cp.kubectl("-n", namespace, "delete", "deployment", "foreign", "--wait=false")
        gone = wait_until("foreign pods gone", lambda: foreign_pods(cp, namespace)[0] == 0, args.timeout)
        time.sleep(10)  # the operator's queue drains
        after = counters(port)
        churn = timeline.by_phase()["churn"]
        timeline.close()
        result = {
            "variant": name,
            "foreign_pods_start_s": round(started, 1),
            "foreign_pods_gone_s": round(gone, 1),
            "operator_cpu_s": round(after["cpu_seconds"] - before["cpu_seconds"], 2),
            "watch_events": {
                k.removeprefix("events_"): int(after[k] - before.get(k, 0.0))
                for k in after
                if k.startswith("events_")
            },
            "rss_mib_before_median": quiet["median"],
            "rss_mib_churn_median": churn["median"],
            "rss_mib_churn_max": churn["max"],
            "peak_rss_mib": round(rss_kib(op.pid, "VmHWM") / 1024, 1),
        }
        log(f"{name}: {result}")
        return result
    finally:
        # The operator takes its finalizers off its jobs as they go; then the namespace can go.
        if op.poll() is None:
            cp.kubectl("-n", namespace, "delete", "caj", "--all", "--timeout=120s", check=False)
        stop(op)
        cp.kubectl("delete", "namespace", namespace, "--timeout=300s", check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--foreign-pods", type=int, default=2000, help="pods of another workload in the namespace"
    )
    ap.add_argument("--jobs", type=int, default=20, help="CarbonAwareJobs the operator runs meanwhile")
    ap.add_argument("--nodes", type=int, default=40, help="kwok nodes (110 pods each)")
    ap.add_argument("--timeout", type=float, default=600.0, help="longest wait for the foreign pods")
    ap.add_argument("--json-out", type=Path, help="also write the result here")
    args = ap.parse_args()
    if args.foreign_pods < 1 or args.jobs < 1:
        ap.error("--foreign-pods and --jobs must be at least 1")
    if args.nodes * 110 < args.foreign_pods + args.jobs:
        ap.error(f"{args.nodes} nodes hold at most {args.nodes * 110} pods: raise --nodes")
    work = Path(tempfile.mkdtemp(prefix="gridwise-watch-scope-"))
    trace = work / "trace.csv"
    write_trace(trace)
    cp = LocalControlPlane(workdir=work / "cp")
    log(f"starting control plane with {args.nodes} kwok nodes in {work}")
    cp.start()
    try:
        cp.wait_nodes_ready(cp.add_gpu_nodes(GPUNodePool(count=args.nodes, gpus_per_node=8)), timeout=300)
        cp.kubectl("apply", "--server-side", "-f", str(Path(__file__).resolve().parents[1] / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd/carbonawarejobs.gridwise.dev")
        runs = [
            run_variant(cp, work, trace, name, prelude, f"scope-{k}", args)
            for k, (name, prelude) in enumerate(VARIANTS.items())
        ]
    finally:
        cp.stop()
    shipped, baseline = runs
    emit(
        {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "foreign_pods": args.foreign_pods,
            "jobs": args.jobs,
            "runs": runs,
            "cpu_ratio_shipped_over_baseline": round(
                shipped["operator_cpu_s"] / max(baseline["operator_cpu_s"], 1e-9), 3
            ),
            "churn_rss_max_ratio": round(shipped["rss_mib_churn_max"] / baseline["rss_mib_churn_max"], 3),
        },
        args.json_out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
