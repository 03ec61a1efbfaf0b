"""The operator works with exactly the chart's RBAC, and stops working when a rule it needs is removed.

The chart's ServiceAccount and RBAC objects (helm template) are applied to the control plane, and
the real `gridwise operator run` acts as that ServiceAccount (a TokenRequest kubeconfig), with
leader election on the Lease in the release namespace, as it would in the Deployment.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.devcluster import Cluster
from tests.cluster.harness import (
    REPLAY_START,
    OperatorProcess,
    caj_manifest,
    get_json,
    helm_template,
    replay_trace,
    wait_for,
)

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gridwise"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
T0 = REPLAY_START


def render_rbac(release: str, namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Only the ServiceAccount and RBAC objects of the chart (the Deployment cannot run here)."""
    docs = helm_template(CHART, release, namespace, {"fullnameOverride": release, **values})
    return [d for d in docs if d["kind"] in RBAC_KINDS]


def drop_verb(docs: list[dict[str, Any]], group: str, resource: str, verb: str) -> list[dict[str, Any]]:
    """A copy of the RBAC objects without `verb` on `group/resource` (the rule is removed if empty)."""
    out = copy.deepcopy(docs)
    found = False
    for d in out:
        if d["kind"] not in ("ClusterRole", "Role"):
            continue
        kept = []
        for rule in d["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
                found = True
                rule["verbs"] = [v for v in rule["verbs"] if v != verb]
            if rule["verbs"]:
                kept.append(rule)
        d["rules"] = kept
    assert found, f"the chart grants no {verb} on {group}/{resource}: the test is stale"
    return out


def trace(tmp_path: Path, future: list[float]) -> Path:
    return replay_trace(tmp_path / "trace.csv", future)


@pytest.fixture
def as_chart_sa(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Applies (possibly edited) chart RBAC and starts the operator as the chart's ServiceAccount."""
    release = f"gw-{namespace}"
    started: list[OperatorProcess] = []
    applied: list[dict[str, Any]] = []

    def start(
        docs: list[dict[str, Any]], *, clusterwide: bool = False, wait_ready: bool = True
    ) -> OperatorProcess:
        applied.extend(docs)
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
        kubeconfig = cluster.kubeconfig_for_service_account(namespace, sa, tmp_path / "sa.kubeconfig")
        op = OperatorProcess(
            kubeconfig,
            tmp_path / f"operator-{len(started)}.log",
            clock_start=T0,
            speed=1800.0,
            leader_election=True,
            lease_namespace=namespace,
            identity=f"{release}-0",
            extra_args=[] if clusterwide else ["--namespace", namespace],
        )
        started.append(op)
        return op.start(wait_ready=wait_ready)

    start.release = release  # type: ignore[attr-defined]
    yield start
    for op in started:
        op.stop(sig_kill=True)  # the Lease dies with the namespace; a graceful stop only costs time
    for d in applied:
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            cluster.kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--wait=false", check=False)


def phase(cluster: Cluster, ns: str, name: str) -> str | None:
    return (get_json(cluster, ns, "caj", name).get("status") or {}).get("phase")


def job_suspended(cluster: Cluster, ns: str, name: str) -> bool | None:
    r = cluster.kubectl("-n", ns, "get", "job", name, "-o", "json", check=False)
    return None if r.returncode != 0 else bool(json.loads(r.stdout)["spec"].get("suspend"))


@pytest.mark.parametrize("clusterwide", [False, True], ids=["watch-namespace", "clusterwide"])
def test_pause_and_resume_with_only_the_chart_rbac(
    cluster: Cluster, namespace: str, tmp_path: Path, as_chart_sa: Any, clusterwide: bool
) -> None:
    values: dict[str, Any] = {} if clusterwide else {"watchNamespaces": [namespace]}
    op = as_chart_sa(render_rbac(as_chart_sa.release, namespace, values), clusterwide=clusterwide)
    lease = get_json(cluster, namespace, "lease", "gridwise-operator")
    assert lease["spec"]["holderIdentity"] == f"{as_chart_sa.release}-0"
    manifest = caj_manifest(
        "rb",
        trace=trace(tmp_path, [500.0] * 3 + [80.0] * 45),
        work_gpu_hours=2,
        complete_within="30h",
        policy={"type": "threshold", "thresholdGramsPerKWh": 200},
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    wait_for("phase Paused", lambda: phase(cluster, namespace, "rb") == "Paused", log=op.log_tail)
    assert job_suspended(cluster, namespace, "rb") is True
    wait_for("phase Running", lambda: phase(cluster, namespace, "rb") == "Running", log=op.log_tail)
    assert job_suspended(cluster, namespace, "rb") is False
    reasons = {
        e["reason"]
        for e in get_json(cluster, namespace, "events", "--field-selector=involvedObject.name=rb")["items"]
    }
    assert reasons, "no Events were posted on the CarbonAwareJob"
    assert not _rbac_denied(op), op.log_tail()


def _rbac_denied(op: OperatorProcess) -> bool:
    """An RBAC denial for the ServiceAccount (not, say, a write into a namespace being deleted)."""
    return 'is forbidden: User \\"system:serviceaccount:' in op.log_tail(400) or (
        'is forbidden: User "system:serviceaccount:' in op.log_tail(400)
    )


@pytest.mark.parametrize(
    ("group", "resource", "verb"),
    [
        ("batch", "jobs", "patch"),
        ("batch", "jobs", "create"),
        ("gridwise.dev", "carbonawarejobs/status", "patch"),
        ("coordination.k8s.io", "leases", "update"),
    ],
    ids=["jobs-patch", "jobs-create", "status-patch", "leases-update"],
)
def test_operator_fails_without_a_needed_rule(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    as_chart_sa: Any,
    group: str,
    resource: str,
    verb: str,
) -> None:
    """Each rule the chart grants is needed: without it the job is not run (and the log says why)."""
    docs = drop_verb(
        render_rbac(as_chart_sa.release, namespace, {"watchNamespaces": [namespace]}), group, resource, verb
    )
    op = as_chart_sa(docs, wait_ready=resource != "leases")
    if resource == "leases":
        # The Lease is created, but never renewed: the leader must step down rather than act unsure.
        wait_for(
            "the operator to give up leadership",
            lambda: op.proc is not None and op.proc.poll() is not None,
            timeout=40,
            log=op.log_tail,
        )
        assert op.proc is not None and op.proc.returncode != 0
        assert "lost" in op.log_tail(200).lower(), op.log_tail()
        return
    # agnostic: the operator wants to run the job at once, which needs every rule above.
    trace_path = trace(tmp_path, [80.0] * 48)
    cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=caj_manifest("deny", trace=trace_path, policy={"type": "agnostic"}),
    )
    wait_for("an RBAC denial in the operator log", lambda: _rbac_denied(op), timeout=30, log=op.log_tail)
    time.sleep(3)  # several more ticks (each 0.5 s): none of them may get the job running
    if resource == "carbonawarejobs/status":
        # The Job may run, but the operator cannot record anything: no phase, no accounting, no deadline.
        assert get_json(cluster, namespace, "caj", "deny").get("status") in (None, {}), op.log_tail()
    else:
        assert job_suspended(cluster, namespace, "deny") in (None, True)
        assert phase(cluster, namespace, "deny") != "Running"
