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
    # The default is namespaced to the release namespace; cluster-wide is an explicit opt-in.
    values: dict[str, Any] = {"rbac": {"clusterWide": True}} if clusterwide else {}
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


# --- least privilege, proven with `kubectl auth can-i` as the chart's ServiceAccount ------------------------


def can_i(
    cluster: Cluster, who: str, verb: str, resource: str, namespace: str | None = None, sub: str = ""
) -> bool:
    """`kubectl auth can-i`; `resource/name` names one object, `sub` a subresource."""
    args = ["auth", "can-i", verb, resource, f"--as={who}"]
    args += [f"--subresource={sub}"] if sub else []
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    out = cluster.kubectl(*args, check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i gave {answer!r}: {out.stderr}"
    return answer == "yes"


@pytest.fixture
def applied(cluster: Cluster) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
    """Applies chart objects and deletes the cluster-scoped ones afterwards (namespaces go with the test)."""
    docs_all: list[dict[str, Any]] = []

    def apply(docs: list[dict[str, Any]]) -> None:
        docs_all.extend(docs)
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    yield apply
    for d in docs_all:
        if "namespace" not in d["metadata"]:
            cluster.kubectl("delete", d["kind"], d["metadata"]["name"], "--wait=false", check=False)


def test_default_rbac_is_namespaced(cluster: Cluster, namespace: str, applied: Any) -> None:
    """Default values: rights in the release namespace only; no kube-system Secrets, no Jobs elsewhere."""
    release = f"gw-{namespace}"
    applied(render_rbac(release, namespace, {}))
    sa = f"system:serviceaccount:{namespace}:{release}"
    assert can_i(cluster, sa, "create", "jobs.batch", namespace)
    assert can_i(cluster, sa, "get", "secrets", namespace)
    assert can_i(cluster, sa, "patch", "carbonawarejobs.gridwise.dev", namespace, sub="status")
    assert not can_i(cluster, sa, "get", "secrets", "kube-system")
    assert not can_i(cluster, sa, "get", "secrets", "default")
    assert not can_i(cluster, sa, "list", "secrets", namespace)  # get by name only
    assert not can_i(cluster, sa, "create", "jobs.batch", "default")
    assert not can_i(cluster, sa, "create", "jobs.batch", "kube-system")
    assert not can_i(cluster, sa, "create", "jobs.batch")  # not cluster-wide
    assert not can_i(cluster, sa, "create", "services", "kube-system")
    assert not can_i(cluster, sa, "create", "pods", namespace)  # Jobs make pods; the operator never does


def test_watch_namespaces_grant_only_those(cluster: Cluster, namespace: str, applied: Any) -> None:
    other = f"{namespace}-ml"
    cluster.kubectl("create", "namespace", other)
    try:
        release = f"gw-{namespace}"
        applied(render_rbac(release, namespace, {"watchNamespaces": [other]}))
        sa = f"system:serviceaccount:{namespace}:{release}"
        assert can_i(cluster, sa, "create", "jobs.batch", other)
        assert can_i(cluster, sa, "get", "secrets", other)
        assert not can_i(cluster, sa, "create", "jobs.batch", namespace)  # the release ns is not watched
        assert not can_i(cluster, sa, "get", "secrets", "kube-system")
        assert can_i(cluster, sa, "update", "leases.coordination.k8s.io/gridwise-operator", namespace)
        assert not can_i(cluster, sa, "update", "leases.coordination.k8s.io/other", namespace)
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_cluster_wide_mode_reads_only_named_secrets(cluster: Cluster, namespace: str, applied: Any) -> None:
    release = f"gw-{namespace}"
    values = {"rbac": {"clusterWide": True, "providerSecretNames": ["carbon-keys"]}}
    applied(render_rbac(release, namespace, values))
    sa = f"system:serviceaccount:{namespace}:{release}"
    assert can_i(cluster, sa, "create", "jobs.batch")
    assert can_i(cluster, sa, "get", "secrets/carbon-keys", "ml-team")
    assert not can_i(cluster, sa, "get", "secrets/bootstrap-token-abc", "kube-system")
    assert not can_i(cluster, sa, "get", "secrets", "kube-system")
    assert not can_i(cluster, sa, "list", "secrets")
    no_names = render_rbac(release + "-b", namespace, {"rbac": {"clusterWide": True}})
    assert not [
        r for d in no_names if d["kind"] == "ClusterRole" for r in d["rules"] if "secrets" in r["resources"]
    ], "cluster-wide without providerSecretNames must not read Secrets at all"


def test_caj_rights_follow_job_rights(cluster: Cluster, namespace: str, applied: Any) -> None:
    """view may read CarbonAwareJobs; only edit/admin (who may create Jobs) may create them."""
    release = f"gw-{namespace}"
    applied([d for d in render_rbac(release, namespace, {}) if d["kind"] == "ClusterRole"])
    for user, role in (("viewer", "view"), ("editor", "edit")):
        cluster.kubectl(
            "-n",
            namespace,
            "create",
            "rolebinding",
            f"{user}-{role}",
            f"--clusterrole={role}",
            f"--user={user}",
        )
    wait_for(
        "the aggregated roles to reach edit",
        lambda: can_i(cluster, "editor", "create", "carbonawarejobs.gridwise.dev", namespace),
        timeout=30,
    )
    assert can_i(cluster, "editor", "create", "jobs.batch", namespace)
    assert can_i(cluster, "editor", "delete", "carbonawarejobs.gridwise.dev", namespace)
    assert can_i(cluster, "viewer", "list", "carbonawarejobs.gridwise.dev", namespace)
    assert not can_i(cluster, "viewer", "create", "carbonawarejobs.gridwise.dev", namespace)
    assert not can_i(cluster, "viewer", "create", "jobs.batch", namespace)
    assert not can_i(cluster, "editor", "patch", "carbonawarejobs.gridwise.dev", namespace, sub="status")


# --- the admission policy: no privileged pods through the operator ----------------------------------------


def _caj(name: str, pod: dict[str, Any]) -> str:
    container: dict[str, Any] = {"name": "t", "image": "trainer"}
    container.update(pod.pop("container", {}))
    doc = {
        "apiVersion": "gridwise.dev/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {"name": name},
        "spec": {
            "completeWithin": "12h",
            "replicas": {"max": 1},
            "work": {"gpuHours": 1, "totalSteps": 10},
            "carbon": {"provider": "static", "staticGramsPerKWh": 100},
            "template": {"spec": {"containers": [container], **pod}},
        },
    }
    return yaml.safe_dump(doc)


HOSTILE: dict[str, dict[str, Any]] = {
    "privileged": {"container": {"securityContext": {"privileged": True}}},
    "privileged-init": {
        "initContainers": [{"name": "i", "image": "x", "securityContext": {"privileged": True}}]
    },
    "host-network": {"hostNetwork": True},
    "host-pid": {"hostPID": True},
    "host-ipc": {"hostIPC": True},
    "host-path": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
}


def test_admission_policy_refuses_privileged_templates(
    cluster: Cluster, namespace: str, applied: Any
) -> None:
    release = f"gw-{namespace}"
    docs = helm_template(CHART, release, namespace, {"fullnameOverride": release})
    policy = [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert {d["kind"] for d in policy} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    applied(policy)

    def refused(name: str, pod: dict[str, Any]) -> str | None:
        out = cluster.kubectl(
            "-n",
            namespace,
            "apply",
            "--dry-run=server",
            "-f",
            "-",
            input=_caj(name, copy.deepcopy(pod)),
            check=False,
        )
        return out.stderr if out.returncode != 0 else None

    wait_for(
        "the policy to be enforced", lambda: refused("probe", HOSTILE["privileged"]) is not None, timeout=30
    )
    for case, pod in HOSTILE.items():
        err = refused(case, pod)
        assert err is not None, f"{case} was admitted"
        assert "not allowed" in err and "gridwise.dev/allow-privileged-templates" in err, err
    assert refused("plain", {}) is None
    assert refused("hardened", {"container": {"securityContext": {"privileged": False}}}) is None
    # A namespace that opts in (a trusted system namespace) may.
    cluster.kubectl("label", "namespace", namespace, "gridwise.dev/allow-privileged-templates=true")
    wait_for("the opt-in to apply", lambda: refused("opted-in", HOSTILE["privileged"]) is None, timeout=30)
    for case, pod in HOSTILE.items():
        assert refused(case, pod) is None, case
