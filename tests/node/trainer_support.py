"""Shared pieces of the trainer tests on the real node: the trainer image, a local checkpoint PV,
CarbonAwareJobs that run the image on CPU, checkpoint inspection and an uninterrupted baseline.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.api import parse_job_spec
from gridwise.devcluster import Cluster
from gridwise.devnode import NODE_LABEL, NodeError, RealNode, build_local_volume, built_image_ref
from gridwise.k8s.builders import build_trainer_env
from tests.cluster.harness import get_json

REPO = Path(__file__).resolve().parents[2]
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
    try:
        return node.load_image(built_image_ref("trainer", REPO))
    except NodeError as exc:
        pytest.fail(str(exc), pytrace=False)


def local_volume(cluster: Cluster, node: RealNode, ns: str, claim: str, host_dir: Path) -> None:
    """A local PV on the real node pre-bound to `ns/claim`; the directory stays root-owned 0755,
    so only the pod's fsGroup makes it writable for the non-root trainer (as on a real cluster)."""
    host_dir.mkdir(parents=True, exist_ok=True)
    host_dir.chmod(0o755)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(build_local_volume(ns, claim, host_dir)))


CARBON_SECRET = "carbon-key"


def create_carbon_secret(cluster: Cluster, ns: str) -> None:
    """The job's own Electricity Maps key (the stand-in accepts any)."""
    key = "--from-literal=ELECTRICITYMAPS_API_KEY=local-test-key"
    cluster.kubectl("-n", ns, "create", "secret", "generic", CARBON_SECRET, key)


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
            # The stand-in's URL must be on the operator's allow-list, and the job brings its own
            # key: an override never borrows the operator's credentials.
            "carbon": {
                "provider": "electricitymaps",
                "zone": "XX",
                "baseURL": carbon_url,
                "secretRef": {"name": CARBON_SECRET},
            },
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
    # Exactly the env the operator gives the CarbonAwareJob's pods (same manifest, same builder).
    manifest = yaml.safe_load(
        trainer_caj(
            job, image=image, claim="unused", carbon_url="http://127.0.0.1:9", total_steps=total_steps
        )
    )
    spec = parse_job_spec(job, ns, manifest["spec"], datetime.now(UTC))
    env = {e["name"]: e["value"] for e in build_trainer_env(spec) if "value" in e}
    env.update(TRAINER_ENV)
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
