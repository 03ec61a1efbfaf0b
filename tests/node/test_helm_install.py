"""`helm install --wait` of charts/gridwise with the locally built operator image on the real node.

What a user does first (issue 10 item 3): the chart's default values (two replicas, leader election,
least-privilege RBAC, hardened pod), only the image pointed at the podman-built one and the pods
pinned to the real kubelet node (kwok nodes would report a pod Ready without running anything).
The operator then reconciles a CarbonAwareJob from inside the cluster under its ServiceAccount.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.devcluster import LocalControlPlane
from gridwise.devnode import NODE_LABEL, NODE_NAME, NodeError, RealNode, built_image_ref
from tests.cluster.harness import caj_manifest, get_json, helm_binary

pytestmark = [pytest.mark.node, pytest.mark.images, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gridwise"
INSTALL_TIMEOUT = "300s"


def helm(cp: LocalControlPlane, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], input=stdin, capture_output=True, text=True, check=False, env=cp.env()
    )


def diagnose(cp: LocalControlPlane, ns: str) -> str:
    """What a person would look at when the install does not go green."""
    parts = []
    for args in (
        ("get", "pods,deploy,events", "-o", "wide"),
        ("describe", "pods"),
        ("logs", "-l", "app.kubernetes.io/name=gridwise", "--all-containers", "--tail=60", "--prefix"),
    ):
        proc = cp.kubectl("-n", ns, *args, check=False)
        parts.append(f"$ kubectl -n {ns} {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)[-12000:]


def operator_pods(cp: LocalControlPlane, ns: str, release: str) -> list[dict[str, Any]]:
    pods = get_json(cp, ns, "pods", "-l", f"app.kubernetes.io/instance={release}")["items"]
    return [p for p in pods if p["metadata"].get("deletionTimestamp") is None]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture
def operator_image(node: RealNode) -> str:
    try:
        return node.load_image(built_image_ref("operator", REPO))
    except NodeError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_helm_install_runs_the_operator_on_the_real_node(
    real_cluster: LocalControlPlane, operator_image: str
) -> None:
    cp = real_cluster
    release = f"gw-{uuid.uuid4().hex[:6]}"
    ns = f"{release}-system"
    # The chart's default watches (and grants rights in) its own release namespace only.
    jobs_ns = ns
    repository, tag = operator_image.rsplit(":", 1)
    # Only what a local image needs; every other value is the chart's default.
    values = {"image": {"repository": repository, "tag": tag}, "nodeSelector": {NODE_LABEL: "real"}}
    t0 = time.monotonic()
    install = helm(
        cp,
        "install",
        release,
        str(CHART),
        "--namespace",
        ns,
        "--create-namespace",
        "--wait",
        "--timeout",
        INSTALL_TIMEOUT,
        "--values",
        "-",
        stdin=yaml.safe_dump(values),
    )
    try:
        assert install.returncode == 0, (
            f"helm install --wait failed after {time.monotonic() - t0:.0f}s: {install.stderr}\n"
            + diagnose(cp, ns)
        )
        status = json.loads(helm(cp, "status", release, "--namespace", ns, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"
        # The chart's own check, as a user runs it after an install: a pod calls the Service.
        # (No --logs: the pod is deleted on success before helm could read them, helm/helm#9098.)
        check = helm(cp, "test", release, "--namespace", ns, "--timeout", "180s")
        assert check.returncode == 0, f"helm test failed: {check.stdout}{check.stderr}\n" + diagnose(cp, ns)
        assert re.search(r"Phase:\s+Succeeded", check.stdout), check.stdout

        (dep,) = get_json(cp, ns, "deployment", "-l", f"app.kubernetes.io/instance={release}")["items"]
        replicas = dep["spec"]["replicas"]
        pods = operator_pods(cp, ns, release)
        assert len(pods) == replicas, diagnose(cp, ns)
        service_account = dep["spec"]["template"]["spec"]["serviceAccountName"]
        assert service_account and service_account != "default"
        for pod in pods:
            assert pod["spec"]["nodeName"] == NODE_NAME, "the operator must run on the real kubelet node"
            assert pod["spec"]["serviceAccountName"] == service_account
            assert is_ready(pod), diagnose(cp, ns)
            (container,) = pod["status"]["containerStatuses"]
            assert container["image"].endswith(operator_image.split("/", 1)[1]), container["image"]
            assert container["restartCount"] == 0, diagnose(cp, ns)
            assert container["state"].get("running"), container["state"]

        # Least privilege, as the API server's authorizer sees the operator's identity.
        sa = f"system:serviceaccount:{ns}:{service_account}"

        def can(*args: str) -> bool:
            proc = cp.kubectl("auth", "can-i", "--as", sa, *args, check=False)
            return proc.stdout.strip() == "yes"

        assert can("patch", "carbonawarejobs.gridwise.dev/status", "-n", jobs_ns)
        assert can("create", "jobs.batch", "-n", jobs_ns)
        assert not can("list", "secrets", "-n", jobs_ns)
        assert not can("delete", "nodes")
        assert not can("create", "pods", "-n", jobs_ns)

        # The in-cluster operator (and nothing else: no local operator runs in this test) reconciles a job.
        manifest = caj_manifest(
            "static-job",
            trace=Path("/nonexistent"),
            carbon={"provider": "static", "zone": "XX", "staticGramsPerKWh": 50},
            policy={"type": "threshold", "thresholdGramsPerKWh": 300},
        )
        cp.kubectl("-n", jobs_ns, "apply", "-f", "-", input=manifest)
        deadline = time.monotonic() + 120
        caj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            caj = get_json(cp, jobs_ns, "carbonawarejob", "static-job")
            status = caj.get("status") or {}
            generation = caj["metadata"]["generation"]
            conditions = status.get("conditions") or []
            if conditions and (
                status.get("observedGeneration") == generation
                or any(c.get("observedGeneration") == generation for c in conditions)
            ):
                break
            time.sleep(1)
        else:
            pytest.fail(f"no status from the in-cluster operator: {caj.get('status')}\n{diagnose(cp, ns)}")
        # Clean grid (50 < 300 gCO2/kWh): the operator creates the Job (suspended until its first
        # plan, written to status at once) and resumes it on the next reconcile, within a second or two.
        deadline = time.monotonic() + 60
        while True:
            jobs = get_json(cp, jobs_ns, "jobs")["items"]
            if (jobs and jobs[0]["spec"].get("suspend") is not True) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
        owner = jobs[0]["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "CarbonAwareJob" and owner["name"] == "static-job"
        assert jobs[0]["spec"].get("suspend") is not True, diagnose(cp, ns)
        logs = cp.kubectl("-n", ns, "logs", "-l", f"app.kubernetes.io/instance={release}", "--tail=-1").stdout
        # The in-cluster leader created the Job (no other operator runs here).
        assert f"{jobs_ns}/static-job: JobCreated" in logs, logs[-4000:]
    finally:
        helm(cp, "uninstall", release, "--namespace", ns, "--wait", "--timeout", "120s")
        cp.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
