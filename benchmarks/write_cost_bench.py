"""What one write of each kind the operator makes in a wake costs the API server (and etcd).

The scale benchmark's sixth round found the API server spending more CPU on the operator's traffic
in a zone wake than the operator spends on itself. This splits that bill per request kind, on real
objects: the operator runs N CarbonAwareJobs through one grid change (clean, then dirty), and the
statuses it wrote before and after are kept. With the operator stopped, each kind of write is then
replayed M times with bounded concurrency while `/proc` says what the API server and etcd used:

- `status wake`: the merge patch from a job's running status to its paused one, and back (what the
  operator sends each job in a wake);
- `status clock`: only `accounting.lastTime` moves (the steady write);
- `event`: a core/v1 Event of the operator's shape;
- `configmap` (the baseline): a ConfigMap merge patch of the same bytes as a wake patch, on a core
  object with no schema or CEL to check;
- the same status writes on copies of the objects (same spec and status, without kopf's annotations
  and the operator's managed fields) under variant CRDs: as shipped, without `status.acceptedSpec`,
  without the CRD's CEL rules, and with an open schema, to see what each costs.

One watcher of each resource written runs throughout (the operator watches its CarbonAwareJobs, so
every write is also encoded for a watch).

    python benchmarks/write_cost_bench.py --jobs 200 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_bench import CHANGE, caj, emit, stop, wait_ready, write_trace

from gridwise.devcluster import GPUNodePool, LocalControlPlane, free_port
from gridwise.status_writes import status_patch

REPO = Path(__file__).resolve().parents[1]
MERGE = "application/merge-patch+json"
GROUP = "gridwise.dev"
Send = Callable[[client.ApiClient, int], Awaitable[None]]


def log(msg: str) -> None:
    print(f"[write-cost {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def statuses(cp: LocalControlPlane) -> dict[str, dict[str, Any]]:
    out = json.loads(cp.kubectl("-n", "bench", "get", "carbonawarejobs", "-o", "json").stdout)
    return {o["metadata"]["name"]: o for o in out["items"]}


def wait_phase(cp: LocalControlPlane, phase: str, count: int, timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.time() + timeout
    while True:
        objs = statuses(cp)
        done = sum(1 for o in objs.values() if (o.get("status") or {}).get("phase") == phase)
        if done >= count:
            return objs
        if time.time() > deadline:
            raise SystemExit(f"only {done}/{count} CarbonAwareJobs reached {phase} in {timeout:.0f}s")
        time.sleep(2)


def wake_patches(running: dict[str, Any], paused: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merge patches running -> paused and paused -> running, as `status_patch` makes them."""
    return status_patch(running, paused), status_patch(paused, running)


async def replay(kubeconfig: Path, count: int, send: Send, concurrency: int) -> float:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = concurrency
    async with client.ApiClient(cfg) as api:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await send(api, i)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - t0


def measure(cp: LocalControlPlane, label: str, count: int, send: Send, concurrency: int) -> dict[str, Any]:
    time.sleep(2)  # let the previous kind's watch traffic drain
    before = cp.cpu_seconds()
    wall = asyncio.run(replay(cp.kubeconfig, count, send, concurrency))
    time.sleep(1)
    after = cp.cpu_seconds()
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    api, etcd = used.get("kube-apiserver", 0.0), used.get("etcd", 0.0)
    row = {
        "kind": label,
        "writes": count,
        "wall_s": round(wall, 2),
        "apiserver_ms_per_write": round(1000 * api / count, 3),
        "etcd_ms_per_write": round(1000 * etcd / count, 3),
        "others_ms_per_write": round(1000 * (sum(used.values()) - api - etcd) / count, 3),
    }
    log(json.dumps(row))
    return row


def median_row(label: str, got: list[dict[str, Any]]) -> dict[str, Any]:
    """The pass with the median API-server cost, and the spread over all passes."""
    ranked = sorted(got, key=lambda row: row["apiserver_ms_per_write"])
    row = dict(ranked[len(ranked) // 2])
    row["apiserver_ms_range"] = [ranked[0]["apiserver_ms_per_write"], ranked[-1]["apiserver_ms_per_write"]]
    return row


def status_sender(
    names: list[str], patches: dict[str, tuple[dict[str, Any], dict[str, Any]]], group: str = GROUP
) -> Send:
    async def send(api: client.ApiClient, i: int) -> None:
        name = names[i % len(names)]
        patch = patches[name][(i // len(names)) % 2]
        crd: Any = client.CustomObjectsApi(api)
        resp = await crd.patch_namespaced_custom_object_status(
            group, "v1alpha1", "bench", "carbonawarejobs", name, {"status": patch},
            _content_type=MERGE, _preload_content=False,
        )  # fmt: skip
        resp.release()

    return send


def clock_sender(names: list[str], start: datetime, group: str = GROUP) -> Send:
    async def send(api: client.ApiClient, i: int) -> None:
        at = start + timedelta(seconds=i)
        patch = {"accounting": {"lastTime": at.strftime("%Y-%m-%dT%H:%M:%SZ")}}
        crd: Any = client.CustomObjectsApi(api)
        resp = await crd.patch_namespaced_custom_object_status(
            group, "v1alpha1", "bench", "carbonawarejobs", names[i % len(names)], {"status": patch},
            _content_type=MERGE, _preload_content=False,
        )  # fmt: skip
        resp.release()

    return send


def event_sender(objs: dict[str, dict[str, Any]]) -> Send:
    names = sorted(objs)

    async def send(api: client.ApiClient, i: int) -> None:
        obj = objs[names[i % len(names)]]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": "gridwise-", "namespace": "bench"},
            "involvedObject": {
                "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
                "namespace": "bench", "uid": obj["metadata"]["uid"],
            },
            "reason": "Paused", "type": "Normal", "message": "grid at 600 g/kWh, above 300: paused (1 -> 0)",
            "source": {"component": "gridwise-operator"}, "firstTimestamp": now, "lastTimestamp": now,
            "count": 1, "reportingComponent": "gridwise-operator", "reportingInstance": "gridwise-operator",
        }  # fmt: skip
        core: Any = client.CoreV1Api(api)
        resp = await core.create_namespaced_event("bench", body, _preload_content=False)
        resp.release()

    return send


def configmap_sender(names: list[str], size: int) -> Send:
    async def send(api: client.ApiClient, i: int) -> None:
        value = (str(i) * size)[:size]
        core: Any = client.CoreV1Api(api)
        resp = await core.patch_namespaced_config_map(
            names[i % len(names)],
            "bench",
            {"data": {"v": value}},
            _content_type=MERGE,
            _preload_content=False,
        )
        resp.release()

    return send


def _drop_key(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        return {k: _drop_key(v, key) for k, v in node.items() if k != key}
    if isinstance(node, list):
        return [_drop_key(v, key) for v in node]
    return node


def variant_crd(group: str, schema: str) -> dict[str, Any]:
    """The shipped CRD under another group, its schema as shipped, without CEL rules, or open."""
    crd: dict[str, Any] = yaml.safe_load((REPO / "crds" / "gridwise.dev_carbonawarejobs.yaml").read_text())
    crd["metadata"] = {"name": f"carbonawarejobs.{group}"}
    crd["spec"]["group"] = group
    crd["spec"]["names"].pop("shortNames", None)
    crd["spec"]["names"].pop("categories", None)
    for version in crd["spec"]["versions"]:
        if schema == "no CEL":
            version["schema"] = _drop_key(version["schema"], "x-kubernetes-validations")
        elif schema == "open":
            version["schema"] = {
                "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            }
    return crd


def copy_objects(cp: LocalControlPlane, group: str, objs: dict[str, dict[str, Any]]) -> None:
    """The same spec and status as the operator's objects, in a variant group."""
    docs = [
        {"apiVersion": f"{group}/v1alpha1", "kind": "CarbonAwareJob",
         "metadata": {"name": n, "namespace": "bench"}, "spec": o["spec"]}
        for n, o in objs.items()
    ]  # fmt: skip
    for k in range(0, len(docs), 100):
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[k : k + 100]))

    async def statuses() -> None:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            crd: Any = client.CustomObjectsApi(api)
            for n, o in objs.items():
                resp = await crd.patch_namespaced_custom_object_status(
                    group, "v1alpha1", "bench", "carbonawarejobs", n, {"status": o["status"]},
                    _content_type=MERGE, _preload_content=False,
                )  # fmt: skip
                resp.release()

    asyncio.run(statuses())


def watch(cp: LocalControlPlane, resource: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [cp.tool("kubectl"), "--kubeconfig", str(cp.kubeconfig), "-n", "bench", "get", resource, "-w",
         "-o", "name"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def run_operator(cp: LocalControlPlane, work: Path, trace: Path, settle: float) -> subprocess.Popen[bytes]:
    anchor = time.time() + 5
    start = CHANGE - timedelta(seconds=settle)
    port = free_port()
    op = subprocess.Popen(
        [
            sys.executable, "-m", "gridwise.cli", "operator", "run",
            "--kubeconfig", str(cp.operator_kubeconfig()), "--namespace", "bench", "--no-leader-election",
            "--http-host", "127.0.0.1", "--http-port", str(port), "--tick-seconds", "10",
            "--clock", "replay", "--clock-start", start.isoformat(), "--clock-speed", "1",
            "--clock-anchor", str(anchor), "--signal-ttl-seconds", "5", "--log-level", "WARNING",
        ],
        stdout=(work / "operator.log").open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "GRIDWISE_TRACE_DIRS": str(work)},
    )  # fmt: skip
    wait_ready(port, op)
    return op


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200, help="CarbonAwareJobs the operator runs first")
    ap.add_argument("--nodes", type=int, default=30, help="kwok GPU nodes (8 GPUs each)")
    ap.add_argument("--rounds", type=int, default=5, help="writes of each kind per job")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="passes over every kind; the median is kept")
    ap.add_argument("--settle-seconds", type=float, default=180.0, help="replayed time before the change")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gridwise-writes-"))
    trace = work / "trace.csv"
    write_trace(trace)
    cp = LocalControlPlane(workdir=work / "cp")
    cp.start()
    op: subprocess.Popen[bytes] | None = None
    try:
        cp.wait_nodes_ready(cp.add_gpu_nodes(GPUNodePool(count=args.nodes, gpus_per_node=8)), timeout=300)
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd/carbonawarejobs.gridwise.dev")
        cp.kubectl("create", "namespace", "bench")
        op = run_operator(cp, work, trace, args.settle_seconds)
        docs = [caj(i, trace) for i in range(args.jobs)]
        for k in range(0, len(docs), 100):
            cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[k : k + 100]))
        running = wait_phase(cp, "Running", args.jobs, args.settle_seconds)
        log(f"{args.jobs} jobs running; waiting for the change")
        paused = wait_phase(cp, "Paused", args.jobs, args.settle_seconds + 300)
        stop(op, timeout=30.0)
        op = None
        names = sorted(paused)
        paused_status = {n: paused[n]["status"] for n in names}

        def lean(status: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in status.items() if k != "acceptedSpec"}

        patches = {n: wake_patches(running[n]["status"], paused_status[n]) for n in names}
        for n in names:
            cp.kubectl("-n", "bench", "create", "configmap", f"cm-{n}", "--from-literal=v=0")
        # Every kind is written with one watcher of its resource, as the operator watches its jobs.
        watchers = [watch(cp, "carbonawarejobs.gridwise.dev"), watch(cp, "configmaps"), watch(cp, "events")]
        # Copies of the same spec and status (without kopf's annotations or the operator's managed
        # fields) under variant CRDs: the shipped schema, the same without `acceptedSpec` in the
        # status, without its CEL rules, and an open schema. Each is compared with the first.
        lean_status = {n: lean(s) for n, s in paused_status.items()}
        copies = {
            "copy": ("copy.bench.gridwise.dev", "shipped", paused_status),
            "copy without acceptedSpec": ("lean.bench.gridwise.dev", "shipped", lean_status),
            "copy, CRD without CEL": ("nocel.bench.gridwise.dev", "no CEL", paused_status),
            "copy, CRD with an open schema": ("open.bench.gridwise.dev", "open", paused_status),
        }
        for group, schema, status_of in copies.values():
            cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(variant_crd(group, schema)))
            cp.kubectl("wait", "--for=condition=Established", f"crd/carbonawarejobs.{group}")
            copy_objects(cp, group, {n: {**paused[n], "status": status_of[n]} for n in names})
            watchers.append(watch(cp, f"carbonawarejobs.{group}"))
        count = args.jobs * args.rounds * 2  # even: each job ends on the status it started from
        sample = paused[names[0]]
        wake_bytes = round(sum(len(json.dumps(p[0])) for p in patches.values()) / len(patches))
        sizes: dict[str, int] = {
            "object": len(json.dumps(sample)),
            "status": len(json.dumps(sample["status"])),
            "status.acceptedSpec": len(json.dumps(sample["status"].get("acceptedSpec"))),
            "metadata.annotations": len(json.dumps(sample["metadata"].get("annotations"))),
            "wake patch (mean)": wake_bytes,
        }
        log(f"sizes (bytes of JSON): {sizes}")
        later = CHANGE + timedelta(days=1)

        def clock(group: str) -> Callable[[int], Send]:
            return lambda r: clock_sender(names, later + timedelta(hours=r), group)

        lean_patches = {n: (lean(patches[n][0]), lean(patches[n][1])) for n in names}
        copy_group, lean_group = copies["copy"][0], copies["copy without acceptedSpec"][0]
        kinds: dict[str, Callable[[int], Send]] = {
            "configmap patch (baseline, the bytes of a wake patch)":
                lambda r: configmap_sender([f"cm-{n}" for n in names], wake_bytes),
            "event create": lambda r: event_sender(paused),
            "status wake": lambda r: status_sender(names, patches),
            "status clock": clock(GROUP),
            "status wake, copy": lambda r: status_sender(names, patches, copy_group),
            "status wake, copy without acceptedSpec":
                lambda r: status_sender(names, lean_patches, lean_group),
            **{f"status clock, {label}": clock(group) for label, (group, _, _) in copies.items()},
        }  # fmt: skip
        samples: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for r in range(args.repeats):  # interleaved, so a warming or busier server touches every kind
            for label, sender in kinds.items():
                samples[label].append(measure(cp, label, count, sender(r), args.concurrency))
        rows = [median_row(label, got) for label, got in samples.items()]
        base = rows[0]["apiserver_ms_per_write"]
        for row in rows:
            row["apiserver_vs_baseline"] = round(row["apiserver_ms_per_write"] / base, 2) if base else None
        for proc in watchers:
            proc.terminate()
        result = {"jobs": args.jobs, "writes_per_kind": count, "repeats": args.repeats, "sizes": sizes,
                  "rows": rows}  # fmt: skip
        emit(result, args.json_out)
        return 0
    finally:
        stop(op)
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
