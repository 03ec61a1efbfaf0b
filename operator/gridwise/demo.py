"""`gridwise demo`: the real operator on a local cluster, replaying a real grid trace at high speed.

It starts the local control plane with fake GPU nodes (or uses `--kubeconfig`), runs the
operator in this process on a replay clock, applies one CarbonAwareJob, and shows live
how the job pauses, scales and resumes. It ends with the job's emissions against running
at once at max replicas (the run-now baseline), both measured on the same trace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gridwise.clock import ReplayClock, parse_utc
from gridwise.decide import REASONS

DEFAULT_TRACE = "electricitymaps_ES_2022-06_hourly.csv"
EPILOG = """\
examples:
  gridwise demo                                   # Spain, June 2022, one day per ~12 s
  gridwise demo --policy threshold --threshold 150
  gridwise demo --trace ../shared/traces/electricitymaps_US-CAL-CISO_2022_hourly.csv --start 2022-04-10
  gridwise demo --kubeconfig ~/.kube/config       # use an existing cluster instead of a local one
  gridwise demo --real-node                       # the trainer image in real pods (root; see README)
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the operator on a local cluster against a replayed real trace",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trace", type=Path, help=f"hourly trace CSV (default: the shipped {DEFAULT_TRACE})")
    p.add_argument(
        "--start", default="2022-06-06T00:00:00Z", help="trace time to start at (default 2022-06-06)"
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="replayed seconds per real second (default 3600; 600 with --real-node)",
    )
    p.add_argument("--policy", choices=["forecast", "threshold", "agnostic"], default="forecast")
    p.add_argument("--threshold", type=float, default=150.0, help="gCO2/kWh for --policy threshold")
    p.add_argument("--work", type=float, default=24.0, help="GPU-hours of work at one replica (default 24)")
    p.add_argument("--complete-within", default="72h", help="deadline from the start (default 72h)")
    p.add_argument("--max-replicas", type=int, default=4)
    p.add_argument("--kubeconfig", help="use this cluster instead of starting the local control plane")
    p.add_argument("--timeout", type=float, default=180.0, help="give up after this many real seconds")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.add_argument(
        "--real-node",
        action="store_true",
        help="add a real node (containerd + kubelet) and run the trainer image there on CPU, with a "
        "checkpoint volume, so pauses stop and resume a real process (needs root and the trainer image)",
    )
    p.add_argument(
        "--trainer-image",
        help="podman image ref for --real-node (default: $GRIDWISE_TRAINER_IMAGE, else hack/build-images.sh)",
    )
    p.add_argument(
        "--total-steps", type=int, default=None, help="trainer steps (default 20000; 3000 with --real-node)"
    )


def _parse_start(text: str) -> datetime:
    try:
        return parse_utc(text)
    except (ValueError, OverflowError):
        raise SystemExit(
            f"gridwise demo: --start {text!r} is not an ISO 8601 time like 2022-06-06T00:00:00Z"
        ) from None


def _trace_path(arg: Path | None) -> Path:
    if arg is not None:
        if not arg.is_file():
            raise SystemExit(f"gridwise demo: trace {arg} does not exist")
        return arg.resolve()
    with resources.as_file(resources.files("gridwise").joinpath("data", "traces", DEFAULT_TRACE)) as p:
        return Path(p)


def _crds_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "crds" / "gridwise.dev_carbonawarejobs.yaml").is_file():
            return parent / "crds"
    raise SystemExit("gridwise demo: cannot find the crds/ folder; run it from a gridwise checkout")


def build_demo_job(args: argparse.Namespace, trace: Path, *, real_image: str | None = None) -> dict[str, Any]:
    policy: dict[str, Any] = {"type": args.policy, "maxPausesPerDay": 4}
    if args.policy == "threshold":
        policy["thresholdGramsPerKWh"] = args.threshold
    job: dict[str, Any] = {
        "apiVersion": "gridwise.dev/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {"name": "demo-training", "namespace": "default"},
        "spec": {
            "completeWithin": args.complete_within,
            "replicas": {"min": 1, "max": args.max_replicas},
            "work": {
                "gpuHours": args.work,
                "totalSteps": args.total_steps or (3000 if real_image else 20000),
                "powerPerReplicaWatts": 400,
                "scalingEfficiency": 0.9,
            },
            "carbon": {"provider": "trace", "zone": "ES", "tracePath": str(trace), "signalType": "average"},
            "policy": policy,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "gridwise/trainer:0.1.0",
                            "resources": {"limits": {"nvidia.com/gpu": 1}},
                        }
                    ]
                }
            },
        },
    }
    if real_image:
        _on_real_node(job, real_image)
    return job


def _on_real_node(job: dict[str, Any], image: str) -> None:
    """The trainer image on the real node: CPU only (it has no GPUs), checkpoints on a local PV."""
    from gridwise.devnode import NODE_LABEL

    spec = job["spec"]
    # Elastic pods share the node's CPUs: more than two only slow each other down on a small machine.
    spec["replicas"]["max"] = min(spec["replicas"]["max"], 2)
    spec["checkpoint"] = {"volumeClaimName": "demo-checkpoints", "gracePeriodSeconds": 30}
    pod = spec["template"]["spec"]
    pod["nodeSelector"] = {NODE_LABEL: "real"}
    pod["securityContext"] = {"fsGroup": 10001}  # the trainer image's non-root user writes the volume
    env = {"GRIDWISE_MODEL": "mlp", "GRIDWISE_DEVICE": "cpu", "GRIDWISE_CHECKPOINT_EVERY": "1000000"}
    pod["containers"][0].update(
        image=image,
        imagePullPolicy="Never",
        resources={"requests": {"cpu": "100m", "memory": "256Mi"}},
        env=[{"name": k, "value": v} for k, v in env.items()],
    )


class LiveTable:
    """One row per replayed hour: a table that reads the same in a terminal and in a CI log."""

    HEADER = (
        f"{'time (UTC)':<17} {'gCO2/kWh':>8} {'phase':<9} {'replicas':>8} "
        f"{'progress':>8} {'CO2 (g)':>9} {'avoided':>9}"
    )

    def __init__(self) -> None:
        self.last_hour: str | None = None
        print(self.HEADER)
        print("-" * len(self.HEADER))

    def row(self, when: datetime, status: dict[str, Any]) -> None:
        hour = f"{when:%Y-%m-%d %H}:00"
        if hour == self.last_hour:
            return
        self.last_hour = hour
        ci = (status.get("carbonIntensity") or {}).get("gramsPerKWh")
        print(
            f"{hour:<17} {ci if ci is not None else '-':>8} {status.get('phase', '-'):<9} "
            f"{status.get('replicas', 0):>8} {status.get('progressDisplay', '-'):>8} "
            f"{status.get('emissionsGrams', 0):>9.0f} {status.get('avoidedEmissionsDisplay', '-'):>9}",
            flush=True,
        )


async def _demo(args: argparse.Namespace) -> dict[str, Any]:
    from gridwise.devcluster import Cluster, GPUNodePool, LocalControlPlane
    from gridwise.k8s.runtime import OperatorConfig, run_operator

    trace = _trace_path(args.trace)
    start = _parse_start(args.start)
    cluster: Cluster
    local: LocalControlPlane | None = None
    if args.kubeconfig:
        cluster = Cluster(Path(args.kubeconfig), None)
    else:
        print(
            "starting the local control plane (etcd, kube-apiserver, controllers, kwok GPU nodes"
            + (", a real node" if args.real_node else "")
            + ")...",
            flush=True,
        )
        local = LocalControlPlane(real_node=args.real_node).start(timeout=300)
        cluster = local
        local.wait_nodes_ready(local.add_gpu_nodes(GPUNodePool(count=2, gpus_per_node=8)))
    real_image: str | None = None
    try:
        if args.real_node:
            real_image = _prepare_real_node(args, local)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(_crds_dir()))
        cluster.kubectl("wait", "--for=condition=Established", "crd/carbonawarejobs.gridwise.dev")
        deadline = time.monotonic() + 30
        while cluster.kubectl("get", "serviceaccount", "default", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("gridwise demo: the default ServiceAccount never appeared")
            await asyncio.sleep(0.2)
        cluster.kubectl("delete", "caj", "demo-training", "--ignore-not-found", "--wait=true")
        clock = ReplayClock(start, args.speed)
        config = OperatorConfig(
            kubeconfig=str(cluster.kubeconfig),
            # Re-plan every few replayed minutes, as the live operator does every 30 s.
            tick_seconds=max(0.05, 300.0 / args.speed),
            clock=clock,
            http_host="127.0.0.1",
            http_port=0,
            leader_election=False,
            signal_ttl_s=300.0,
            signal_min_interval_s=0.0,
            # The replayed trace's directory is the operator's trace directory (spec.carbon.tracePath).
            env={**os.environ, "GRIDWISE_TRACE_DIRS": str(trace.resolve().parent)},
        )
        stop = asyncio.Event()
        operator = asyncio.create_task(run_operator(config, stop))
        job = build_demo_job(args, trace, real_image=real_image)
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
        print(
            f"applied CarbonAwareJob demo-training: {args.work:g} GPU-hours, "
            f"1..{args.max_replicas} replicas, due within {args.complete_within}, policy {args.policy};\n"
            f"replaying {trace.name} from {start:%Y-%m-%d} at {args.speed:g}x\n",
            flush=True,
        )
        table = LiveTable()
        status: dict[str, Any] = {}
        completed_pods = False
        give_up = time.monotonic() + args.timeout
        while time.monotonic() < give_up:
            if operator.done():
                operator.result()
                raise SystemExit("gridwise demo: the operator stopped unexpectedly")
            out = cluster.kubectl("get", "caj", "demo-training", "-o", "json", check=False)
            if out.returncode == 0:
                status = json.loads(out.stdout).get("status") or {}
                if status.get("accounting"):
                    table.row(clock.now(), status)
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            if status.get("progress", 0) >= 1 and not completed_pods and not real_image:
                # kwok pods never exit: tell them the training finished, as a real trainer would.
                pods = cluster.kubectl(
                    "get", "pods", "-l", "job-name=demo-training", "-o", "name"
                ).stdout.split()
                for pod in pods:
                    cluster.kubectl(
                        "annotate", "--overwrite", pod, "gridwise.dev/kwok-complete=true", check=False
                    )
                completed_pods = bool(pods)
            await asyncio.sleep(0.2)
        else:
            print(
                f"\ngridwise demo: stopped after {args.timeout:g}s before the job finished", file=sys.stderr
            )
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(operator, 15)
        events = cluster.kubectl(
            "get", "events", "--field-selector=involvedObject.name=demo-training", "-o", "json"
        ).stdout
        # resourceVersion orders Events that share a timestamp second.
        items = sorted(json.loads(events)["items"], key=lambda e: int(e["metadata"]["resourceVersion"]))
        decisions = [e["message"] for e in items if e.get("reason") in REASONS]
        return _summary(status, decisions, clock.now(), start)
    finally:
        if local is not None:
            local.stop()


def _prepare_real_node(args: argparse.Namespace, local: Any) -> str:
    """Loads the trainer image into the node and makes the checkpoint volume; returns the image ref."""
    import tempfile

    from gridwise.devnode import NodeError, build_local_volume, built_image_ref

    if local is None or local.node is None:
        raise SystemExit("gridwise demo: --real-node starts its own cluster; drop --kubeconfig")
    try:
        ref = args.trainer_image or built_image_ref("trainer")
        print(f"loading {ref} into the real node (once per image)...", flush=True)
        image = str(local.node.load_image(ref))
    except NodeError as exc:
        raise SystemExit(f"gridwise demo: {exc}") from exc
    ckpt = Path(tempfile.mkdtemp(prefix="gridwise-demo-ckpt-", dir=local.workdir))
    ckpt.chmod(0o755)
    local.kubectl("delete", "pvc", "demo-checkpoints", "--ignore-not-found", "--wait=false")
    local.kubectl("delete", "pv", "default-demo-checkpoints", "--ignore-not-found", "--wait=false")
    docs = build_local_volume("default", "demo-checkpoints", ckpt)
    local.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    return image


def _summary(status: dict[str, Any], decisions: list[str], now: datetime, start: datetime) -> dict[str, Any]:
    emitted = float(status.get("emissionsGrams", 0.0))
    baseline = float(status.get("baselineEmissionsGrams", 0.0))
    return {
        "phase": status.get("phase"),
        "progress": status.get("progress"),
        "replayed_hours": round((now - start) / timedelta(hours=1), 1),
        "energy_kwh": round(float(status.get("energyJoules", 0.0)) / 3.6e6, 3),
        "emissions_g": round(emitted, 1),
        "baseline_emissions_g": round(baseline, 1),
        "avoided_g": round(float(status.get("avoidedEmissionsGrams", 0.0)), 1),
        "signal_type": (status.get("carbonIntensity") or {}).get("signalType", "average"),
        "decisions": decisions,
    }


def run(args: argparse.Namespace) -> int:
    if args.speed is None:
        # Real pods take seconds to start and stop: a slower replay keeps pauses visible.
        args.speed = 600.0 if getattr(args, "real_node", False) else 3600.0
    if args.speed <= 0:
        raise SystemExit("gridwise demo: --speed must be positive")
    summary = asyncio.run(_demo(args))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("\ndecisions:")
        for d in summary["decisions"]:
            print(f"  - {d}")
        base = summary["baseline_emissions_g"]
        saved = f" ({summary['avoided_g'] / base * 100:.0f}% less)" if base > 0 else ""
        print(
            f"\nresult: {summary['phase']} after {summary['replayed_hours']} replayed hours; "
            f"{summary['energy_kwh']} kWh, {summary['emissions_g']:.0f} gCO2 "
            f"({summary['signal_type']} signal) vs {base:.0f} g if run at once at max replicas: "
            f"avoided {summary['avoided_g']:.0f} g{saved}"
        )
    return 0 if summary["phase"] == "Succeeded" else 1
