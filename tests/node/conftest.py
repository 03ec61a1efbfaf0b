"""Fixtures for tests on the real node: the real-node cluster and images built for it.

Every test here runs real containers. `cluster` is overridden so the shared `namespace`
fixture creates namespaces in the real-node cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.devcluster import Cluster, LocalControlPlane
from gridwise.devnode import NODE_LABEL, RealNode

PROBE_SRC = Path(__file__).parent / "probe"


@pytest.fixture(scope="session")
def cluster(real_cluster: LocalControlPlane) -> Cluster:
    return real_cluster


@pytest.fixture(scope="session")
def node(real_cluster: LocalControlPlane) -> RealNode:
    assert real_cluster.node is not None
    return real_cluster.node


@pytest.fixture(scope="session")
def probe_image(node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox plus the `probe` HTTP/DNS client (tests/node/probe), as a local scratch image."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("go not found: the probe test image is built with Go (see hack/build-control-plane.sh)")
    out = tmp_path_factory.mktemp("probe") / "probe"
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    subprocess.run(
        [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."],
        cwd=PROBE_SRC,
        env=env,
        check=True,
        capture_output=True,
    )
    return node.busybox_image({"/bin/probe": out}, name="probe")


def pod_manifest(
    name: str,
    image: str,
    command: list[str],
    *,
    labels: dict[str, str] | None = None,
    extra_spec: dict[str, Any] | None = None,
    restart: str = "Never",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "restartPolicy": restart,
            "nodeSelector": {NODE_LABEL: "real"},
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}],
            **(extra_spec or {}),
        },
    }


def apply(cluster: Cluster, ns: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=yaml.safe_dump_all(docs))


def pod(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("-n", ns, "get", "pod", name, "-o", "json").stdout)
    return out


def wait_pod_phase(
    cluster: Cluster, ns: str, name: str, phases: set[str], timeout: float = 60
) -> dict[str, Any]:
    """Waits for one of `phases`; a pod that ends elsewhere fails with its logs and events."""
    deadline = time.monotonic() + timeout
    p: dict[str, Any] = {}
    while time.monotonic() < deadline:
        p = pod(cluster, ns, name)
        phase = p["status"].get("phase")
        if phase in phases:
            return p
        if phase in {"Succeeded", "Failed"}:
            break
        time.sleep(0.3)
    logs = cluster.kubectl("-n", ns, "logs", name, check=False)
    ev = cluster.kubectl(
        "-n", ns, "get", "events", f"--field-selector=involvedObject.name={name}", check=False
    )
    raise AssertionError(
        f"pod {name} is {p.get('status', {}).get('phase')} not {phases}:\n"
        f"{json.dumps(p.get('status'), indent=1)}\nlogs:\n{logs.stdout}{logs.stderr}\nevents:\n{ev.stdout}"
    )


def wait_ready(cluster: Cluster, ns: str, name: str, timeout: float = 60) -> None:
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", f"--timeout={int(timeout)}s", f"pod/{name}")
