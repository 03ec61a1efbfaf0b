"""Shared pieces of the trainer tests on the real node: the trainer image, a local checkpoint PV,
CarbonAwareJobs that run the image on CPU, checkpoint inspection and an uninterrupted baseline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.devcluster import Cluster
from gridwise.devnode import NODE_LABEL, RealNode
from tests.cluster.harness import get_json

REPO = Path(__file__).resolve().parents[2]
BUILD_IMAGES = REPO / "hack" / "build-images.sh"
STORAGE_CLASS = "gridwise-local"
TRAINER_UID = 10001  # the trainer image's user (trainer-image/Dockerfile)
CKPT = re.compile(r"^ckpt-(\d{10})\.pt$")
# CPU-sized training: slow enough on this machine (a few steps/s) that a pause lands mid-run.
TRAINER_ENV = {
    "GRIDWISE_MODEL": "cnn",
    "GRIDWISE_CHECKPOINT_EVERY": "1000000",  # only the stop and the end write checkpoints
    "GRIDWISE_EVAL_EVERY": "0",
    "GRIDWISE_LOG_EVERY": "10",
    "GRIDWISE_DEVICE": "cpu",
}


def resolve_trainer_image(node: RealNode) -> str:
    """The trainer image built by hack/build-images.sh (or $GRIDWISE_TRAINER_IMAGE), in the node."""
    ref = os.environ.get("GRIDWISE_TRAINER_IMAGE", "").strip()
    if not ref:
        if not BUILD_IMAGES.is_file():
            pytest.fail(
                "the trainer image is needed: build it with `hack/build-images.sh` (issue 10 item 1) "
                "or set GRIDWISE_TRAINER_IMAGE to a podman image ref",
                pytrace=False,
            )
        proc = subprocess.run([str(BUILD_IMAGES)], capture_output=True, text=True, check=False, cwd=REPO)
        if proc.returncode != 0:
            pytest.fail(f"hack/build-images.sh failed:\n{proc.stderr[-3000:]}", pytrace=False)
        refs = [w for w in proc.stdout.split() if "trainer" in w and ":" in w]
        if not refs:
            pytest.fail(f"hack/build-images.sh printed no trainer image ref:\n{proc.stdout}", pytrace=False)
        ref = refs[-1]
    return node.load_image(ref)


def storage_class(cluster: Cluster) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": STORAGE_CLASS},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "WaitForFirstConsumer",
            }
        ),
    )


def local_volume(cluster: Cluster, node: RealNode, ns: str, claim: str, host_dir: Path) -> None:
    """A local PV on the real node pre-bound to `ns/claim`; the directory stays root-owned 0755,
    so only the pod's fsGroup makes it writable for the non-root trainer (as on a real cluster)."""
    storage_class(cluster)
    host_dir.mkdir(parents=True, exist_ok=True)
    host_dir.chmod(0o755)
    pv = f"{ns}-{claim}"
    docs = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": STORAGE_CLASS,
                "local": {"path": str(host_dir)},
                "claimRef": {"namespace": ns, "name": claim},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": NODE_LABEL, "operator": "In", "values": ["real"]}]}
                        ]
                    }
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": ns},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": STORAGE_CLASS,
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def trainer_caj(
    name: str,
    *,
    image: str,
    claim: str,
    carbon_url: str,
    total_steps: int,
    policy: dict[str, Any] | None = None,
    min_replicas: int = 1,
    max_replicas: int = 1,
) -> str:
    """A CarbonAwareJob running the real trainer image on CPU on the real node (no GPU request)."""
    doc = {
        "apiVersion": "gridwise.dev/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {"name": name},
        "spec": {
            "completeWithin": "24h",
            "replicas": {"min": min_replicas, "max": max_replicas},
            "work": {"gpuHours": 0.2, "totalSteps": total_steps, "powerPerReplicaWatts": 400},
            "carbon": {"provider": "electricitymaps", "zone": "XX", "baseURL": carbon_url},
            "policy": policy or {"type": "threshold", "thresholdGramsPerKWh": 200},
            "checkpoint": {"gracePeriodSeconds": 30, "volumeClaimName": claim, "path": "/checkpoints"},
            "template": {
                "spec": {
                    "nodeSelector": {NODE_LABEL: "real"},
                    "securityContext": {"fsGroup": TRAINER_UID},
                    "containers": [
                        {
                            "name": "trainer",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "env": [{"name": k, "value": v} for k, v in TRAINER_ENV.items()],
                            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                        }
                    ],
                }
            },
        },
    }
    return yaml.safe_dump(doc)


def checkpoints(host_dir: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in host_dir.iterdir() if (m := CKPT.match(p.name)))


def pods_of(cluster: Cluster, ns: str, job: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cluster, ns, "pods", "-l", f"job-name={job}")["items"]
    return items


def live_pods(cluster: Cluster, ns: str, job: str) -> list[dict[str, Any]]:
    return [p for p in pods_of(cluster, ns, job) if not p["metadata"].get("deletionTimestamp")]


def logs(cluster: Cluster, ns: str, pod: str) -> str:
    return cluster.kubectl("-n", ns, "logs", pod, check=False).stdout


RESUMED = re.compile(r"resumed from ckpt-\d{10}\.pt at step (\d+)")
STEP = re.compile(r"step=(\d+) loss=")


def resumed_at(text: str) -> int | None:
    m = RESUMED.search(text)
    return int(m.group(1)) if m else None


def job_conditions(cluster: Cluster, ns: str, job: str) -> dict[str, str]:
    j = get_json(cluster, ns, "job", job)
    return {c["type"]: c["status"] for c in j.get("status", {}).get("conditions", [])}


def state_dict_equal(a: Path, b: Path) -> bool:
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=False)
    sb = torch.load(b, map_location="cpu", weights_only=False)
    ma, mb = sa["model"], sb["model"]
    return bool(ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma))


def run_baseline(cluster: Cluster, ns: str, image: str, host_dir: Path, total_steps: int, job: str) -> Path:
    """The same training uninterrupted, in the same image on the same node: the reference model."""
    host_dir.mkdir(parents=True, exist_ok=True)
    host_dir.chmod(0o777)
    env = {
        **TRAINER_ENV,
        "GRIDWISE_JOB_NAME": job,
        "GRIDWISE_CHECKPOINT_DIR": "/checkpoints",
        "GRIDWISE_TOTAL_STEPS": str(total_steps),
        "GRIDWISE_METRICS_PORT": "9400",
        "GRIDWISE_SIGNAL_TYPE": "average",
        "GRIDWISE_COMPRESSION": "{}",
        "GRIDWISE_OBJECTIVE": "{}",
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "baseline"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {NODE_LABEL: "real"},
            "containers": [
                {
                    "name": "trainer",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                    "volumeMounts": [{"name": "out", "mountPath": "/checkpoints"}],
                }
            ],
            "volumes": [{"name": "out", "hostPath": {"path": str(host_dir), "type": "Directory"}}],
        },
    }
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(pod))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        phase = get_json(cluster, ns, "pod", "baseline")["status"].get("phase")
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(1)
    assert phase == "Succeeded", f"baseline run {phase}:\n{logs(cluster, ns, 'baseline')[-3000:]}"
    return host_dir
