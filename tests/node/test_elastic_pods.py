"""A 2-replica elastic trainer (Indexed Job + headless Service + torchrun c10d rendezvous) in real
pods survives a scale 2 -> 1 -> 2, continuing each time from its checkpoint.

The Job, Service and scale patches are the operator's own (`build_job`, `build_headless_service`,
`build_scale_patch`), applied directly: the planner's choice of replica count is tested elsewhere;
here what matters is that real pods find each other by DNS and re-form without losing steps.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from gridwise.api import parse_job_spec
from gridwise.devcluster import Cluster
from gridwise.devnode import RealNode
from gridwise.k8s.builders import build_headless_service, build_job, build_scale_patch
from tests.cluster.harness import get_json, wait_for
from tests.node.trainer_support import (
    STEP,
    checkpoints,
    live_pods,
    local_volume,
    logs,
    resolve_trainer_image,
    trainer_caj,
)

pytestmark = [pytest.mark.node, pytest.mark.slow]
INDEX = "batch.kubernetes.io/job-completion-index"
TOTAL_STEPS = 1600
RESUMED = re.compile(r"resumed from ckpt-\d{10}\.pt at step (\d+)")
# A user's model (--model module:factory, from a ConfigMap on PYTHONPATH) that takes >= 0.1 s a step
# while it trains alone: the scale back to 2 must land mid-run on any machine, and the plain CNN
# finishes its remaining steps alone in under a second on a quiet one (a replica started after the
# last step then only finds the finished checkpoint, tested in tests/trainer/test_elastic.py).
PACED_MODEL = """
import os
import time

from torch import nn


class PacedWhenAlone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        if self.training and os.environ.get("WORLD_SIZE") == "1":
            time.sleep(0.1)
        return self.net(x)


def make():
    return PacedWhenAlone()
"""


@pytest.fixture(scope="session")
def trainer_image(node: RealNode) -> str:
    return resolve_trainer_image(node)


def by_index(cluster: Cluster, ns: str, job: str) -> dict[int, str]:
    return {
        int(p["metadata"]["annotations"][INDEX]): p["metadata"]["name"]
        for p in live_pods(cluster, ns, job)
        if p["status"].get("phase") == "Running"
    }


def last_step(text: str) -> int:
    steps = [int(s) for s in STEP.findall(text)]
    return max(steps, default=0)


def test_elastic_trainer_survives_scale_down_and_up(
    cluster: Cluster, node: RealNode, namespace: str, tmp_path: Path, trainer_image: str
) -> None:
    ckpt = tmp_path / "ckpt"
    local_volume(cluster, node, namespace, "ckpt", ckpt)
    manifest = yaml.safe_load(
        trainer_caj(
            "el",
            image=trainer_image,
            claim="ckpt",
            carbon_url="http://127.0.0.1:9",  # no operator runs here: never contacted
            total_steps=TOTAL_STEPS,
            min_replicas=1,
            max_replicas=2,
        )
    )
    cluster.kubectl(
        "-n", namespace, "create", "configmap", "paced", f"--from-literal=paced_model.py={PACED_MODEL}"
    )
    pod = manifest["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "paced", "configMap": {"name": "paced"}}]
    (container,) = pod["containers"]
    container["volumeMounts"] = [{"name": "paced", "mountPath": "/opt/paced", "readOnly": True}]
    env = {e["name"]: e for e in container["env"]}
    env["GRIDWISE_MODEL"] = {"name": "GRIDWISE_MODEL", "value": "paced_model:make"}
    env["PYTHONPATH"] = {"name": "PYTHONPATH", "value": "/opt/paced"}
    env["GRIDWISE_KEEP_CHECKPOINTS"] = {"name": "GRIDWISE_KEEP_CHECKPOINTS", "value": "50"}
    container["env"] = list(env.values())
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    body = get_json(cluster, namespace, "caj", "el")
    spec = parse_job_spec("el", namespace, body["spec"], datetime.now(UTC))
    for obj in (build_headless_service(body, spec), build_job(body, spec, replicas=2, suspend=False)):
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(obj))

    def scale(n: int) -> None:
        patch = build_scale_patch(spec, n, suspend=False)
        cluster.kubectl("-n", namespace, "patch", "job", "el", "--type=merge", "-p", json.dumps(patch))

    pods = wait_for(
        "2 running pods", lambda: len(p := by_index(cluster, namespace, "el")) == 2 and p, timeout=120
    )
    wait_for(
        "training at 2 replicas", lambda: last_step(logs(cluster, namespace, pods[0])) >= 20, timeout=300
    )

    scale(1)
    wait_for("index 1 gone", lambda: list(by_index(cluster, namespace, "el")) == [0], timeout=90)
    assert by_index(cluster, namespace, "el")[0] == pods[0], "rank 0's pod keeps running through the scale"
    first_ckpt = wait_for("a checkpoint from the re-form", lambda: checkpoints(ckpt), timeout=90)
    mark = last_step(logs(cluster, namespace, pods[0]))
    wait_for(
        "training alone after the re-form",
        lambda: last_step(logs(cluster, namespace, pods[0])) >= max(mark, first_ckpt[-1]) + 10,
        timeout=300,
    )

    scale(2)
    wait_for("2 running pods again", lambda: len(by_index(cluster, namespace, "el")) == 2, timeout=120)
    wait_for(
        "Job complete",
        lambda: any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in get_json(cluster, namespace, "job", "el").get("status", {}).get("conditions", [])
        ),
        timeout=600,
        interval=1,
    )
    saved = checkpoints(ckpt)
    assert saved[-1] == TOTAL_STEPS
    text = logs(cluster, namespace, pods[0])
    resumes = [int(s) for s in RESUMED.findall(text)]
    # Each re-form (2->1, 1->2) restarts the worker from the newest checkpoint, never from scratch.
    assert len(resumes) >= 2, text[-3000:]
    assert resumes == sorted(resumes) and all(r in saved for r in resumes), (resumes, saved)
