"""The Helm chart: lint, rendered objects (security, probes, least RBAC), schema, and a real install.

Rendering tests need only the helm binary; the install test uses the session's control plane
(kwok runs no real containers: it proves the API server accepts every object).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.devcluster import Cluster
from tests.cluster.harness import get_json, helm_binary, helm_template, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gridwise"
KUBE_VERSION = "1.35.4"
ALL_ON = {
    "serviceMonitor": {"enabled": True},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "carbon": {"existingSecret": "carbon-keys"},
}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def helm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, check=False, env=env)


def test_chart_crds_are_a_byte_identical_copy() -> None:
    """Helm installs CRDs from the chart's crds/; they must never drift from the source of truth."""
    src = REPO / "crds" / "gridwise.dev_carbonawarejobs.yaml"
    copy = CHART / "crds" / src.name
    assert copy.read_bytes() == src.read_bytes(), f"run: cp {src} {copy}"
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(p.name for p in src.parent.iterdir())


def test_chart_dashboards_are_byte_identical_copies() -> None:
    """The dashboard ConfigMap is built with .Files.Get from the chart's copy of dashboards/."""
    src = sorted((REPO / "dashboards").glob("*.json"))
    assert src
    for path in src:
        copy = CHART / "dashboards" / path.name
        assert copy.read_bytes() == path.read_bytes(), f"run: cp {path} {copy}"
    assert sorted(p.name for p in (CHART / "dashboards").glob("*.json")) == [p.name for p in src]


def test_helm_lint_is_clean() -> None:
    single = {"watchNamespaces": ["ml"], "leaderElection": {"enabled": False}, "replicaCount": 1}
    for values in ({}, ALL_ON, single):
        proc = subprocess.run(
            [helm_binary(), "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, "--values", "-"],
            input=yaml.safe_dump(values),
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "[ERROR]" not in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


def test_deployment_is_hardened_and_probed() -> None:
    docs = helm_template(CHART, "gw", "gridwise-system", ALL_ON)
    dep = one(docs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080}
    assert "--lease-namespace=gridwise-system" in c["args"]
    assert "--no-leader-election" not in c["args"]
    assert c["envFrom"] == [{"secretRef": {"name": "carbon-keys"}}]
    labels = dep["metadata"]["labels"]
    for key in (
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
    ):
        assert key in labels, key
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's rules (not the users' view/edit roles aggregated into the built-in ones)."""
    return [
        r
        for d in docs
        if d["kind"] in ("ClusterRole", "Role")
        and not any(k.startswith("rbac.authorization.k8s.io/aggregate-to") for k in d["metadata"]["labels"])
        for r in d["rules"]
    ]


def test_rbac_is_least_privilege() -> None:
    """No wildcards, no escalation verbs, Secrets read-only and optional, Leases only in the release ns."""
    docs = helm_template(CHART, "gw", "gridwise-system")
    rules = _rules(docs)
    assert rules
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(key, []), rule
        forbidden = {"escalate", "bind", "impersonate", "delete", "deletecollection"}
        if rule["resources"] == ["jobs"] and rule["apiGroups"] == ["batch"]:
            # The operator deletes a Job it owns to rebuild it after a pod-template edit.
            forbidden.discard("delete")
        assert not forbidden & set(rule["verbs"]), rule
        assert not rule.get("nonResourceURLs"), rule
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    leases = [r for r in rules if "leases" in r["resources"]]
    assert leases and all(
        d["kind"] == "Role" and d["metadata"]["namespace"] == "gridwise-system"
        for d in docs
        if d["kind"] in ("Role", "ClusterRole") and any("leases" in r["resources"] for r in d["rules"])
    )
    for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] != "cluster-admin"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "gw-gridwise", "namespace": "gridwise-system"}
        ]
    no_secrets = helm_template(CHART, "gw", "gridwise-system", {"rbac": {"readProviderSecrets": False}})
    assert not [r for r in _rules(no_secrets) if "secrets" in r["resources"]]


def test_watch_namespaces_binds_per_namespace() -> None:
    docs = helm_template(CHART, "gw", "ops", {"watchNamespaces": ["ml", "research"]})
    bindings = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml", "research"]
    assert [b["metadata"]["name"] for b in by_kind(docs, "ClusterRoleBinding")] == ["gw-gridwise-discovery"]
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args and "--namespace=research" in args


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"replicaCount": "two"}, "replicaCount"),
        ({"rbac": {"readProviderSecrets": "yes"}}, "readProviderSecrets"),
        ({"operator": {"logLevel": "LOUD"}}, "logLevel"),
        ({"replicas": 2}, "replicas"),
        # Without leader election every replica would act on the same Jobs.
        ({"leaderElection": {"enabled": False}}, "replicaCount"),
        ({"leaderElection": {"enabled": False}, "replicaCount": 3}, "replicaCount"),
        ({"podAntiAffinity": "sometimes"}, "podAntiAffinity"),
        ({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailble": 0}}}, "maxUnavailble"),
    ],
)
def test_schema_rejects_bad_values_readably(values: dict[str, Any], needle: str) -> None:
    proc = subprocess.run(
        [helm_binary(), "template", "gw", str(CHART), "--kube-version", KUBE_VERSION, "--values", "-"],
        input=yaml.safe_dump(values),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr


def test_upgrades_roll_without_losing_a_ready_replica() -> None:
    """Standbys are Ready, so a surge pod becomes Ready before an old one goes: no Recreate gap."""
    docs = helm_template(CHART, "gw", "gridwise-system")
    dep = one(docs, "Deployment")
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    for flag in ("--lease-duration-seconds=15", "--renew-deadline-seconds=10", "--retry-period-seconds=2"):
        assert flag in args, args
    # The operator's own parser accepts exactly what the chart renders.
    from gridwise.cli import build_parser

    parsed = build_parser().parse_args(["operator", "run", *[a.replace("$(POD_NAME)", "p") for a in args]])
    assert parsed.lease_duration_seconds == 15 and parsed.renew_deadline_seconds == 10


def test_pdb_and_anti_affinity_spread_the_replicas() -> None:
    docs = helm_template(CHART, "gw", "gridwise-system")
    dep = one(docs, "Deployment")
    selector = dep["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["metadata"]["namespace"] == "gridwise-system"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti  # one node still schedules both
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    # The selector matches the pods the Deployment makes, or the PDB and the spreading do nothing.
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


def test_single_replica_gets_no_pdb_and_anti_affinity_can_be_changed() -> None:
    single = helm_template(CHART, "gw", "ns", {"replicaCount": 1, "leaderElection": {"enabled": False}})
    assert not by_kind(single, "PodDisruptionBudget"), "a PDB on one replica would block every node drain"
    assert (
        "--no-leader-election"
        in one(single, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    required = one(helm_template(CHART, "gw", "ns", {"podAntiAffinity": "required"}), "Deployment")
    anti = required["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert (
        anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    )
    none = one(helm_template(CHART, "gw", "ns", {"podAntiAffinity": "none"}), "Deployment")
    assert "affinity" not in none["spec"]["template"]["spec"]
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}}  # fmt: skip
    custom = one(helm_template(CHART, "gw", "ns", {"affinity": own}), "Deployment")
    assert custom["spec"]["template"]["spec"]["affinity"] == own
    off = helm_template(CHART, "gw", "ns", {"podDisruptionBudget": {"enabled": False}})
    assert not by_kind(off, "PodDisruptionBudget")


def test_prometheus_rule_has_the_alerts() -> None:
    from tests.metrics.helm import render  # as on a cluster with the Prometheus Operator's CRDs

    docs = render(ALL_ON, release="gw")
    rules = one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    exprs = {r["alert"]: r for r in rules}
    assert "gridwise_carbon_signal_stale" in exprs["GridwiseCarbonSignalStale"]["expr"]
    assert exprs["GridwiseCarbonSignalStale"]["for"] == "15m"
    assert "gridwise_job_deadline_slack_seconds" in exprs["GridwiseJobMissesDeadline"]["expr"]
    assert "gridwise_job_deadline_slack_seconds" in exprs["GridwiseJobDeadlineAtRisk"]["expr"]
    assert "gridwise_reconcile_errors_total" in exprs["GridwiseReconcileErrors"]["expr"]
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"] is True
    assert one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"  # the trainers


def test_dashboard_configmap_carries_the_dashboards() -> None:
    cm = one(helm_template(CHART, "gw", "gridwise-system"), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    for path in sorted((REPO / "dashboards").glob("*.json")):
        assert json.loads(cm["data"][path.name]) == json.loads(path.read_text())


@pytest.mark.cluster
def test_helm_install_is_accepted_by_the_api_server(cluster: Cluster, namespace: str) -> None:
    """A real `helm install`: every object (Deployment, RBAC, Service, ConfigMap) passes API validation."""
    release = f"gw-{namespace}"
    env = cluster.env()
    values = {"fullnameOverride": release, "carbon": {"existingSecret": "carbon-keys"}}
    proc = subprocess.run(
        [
            helm_binary(),
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--skip-crds",
            "--values",
            "-",
        ],
        input=yaml.safe_dump(values),
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    try:
        assert proc.returncode == 0, proc.stderr
        status = helm("status", release, "--namespace", namespace, "-o", "json", env=env)
        assert json.loads(status.stdout)["info"]["status"] == "deployed"
        dep = get_json(cluster, namespace, "deployment", release)
        assert dep["spec"]["replicas"] == 2
        pdb = get_json(cluster, namespace, "pdb", release)
        assert pdb["spec"]["maxUnavailable"] == 1
        assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
        for kind in ("serviceaccount", "service", "configmap", "role", "rolebinding"):
            cluster.kubectl(
                "-n", namespace, "get", kind, "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
            )
        cluster.kubectl(
            "get", "clusterrole", release, f"{release}-discovery", f"{release}-view", f"{release}-edit"
        )
        # Least privilege by default: the operator's rights are bound in its namespace only.
        cluster.kubectl("get", "clusterrolebinding", f"{release}-discovery")
        cluster.kubectl("-n", namespace, "get", "rolebinding", release)
        assert cluster.kubectl("get", "clusterrolebinding", release, check=False).returncode != 0
        cluster.kubectl(
            "get",
            "validatingadmissionpolicy,validatingadmissionpolicybinding",
            f"{release}-template-privileges",
        )
        # The controller manager turns the Deployment into pods with the hardened spec the API accepted.
        pods = wait_for(
            "the Deployment's pods",
            lambda: (
                len(
                    items := get_json(
                        cluster, namespace, "pods", "-l", f"app.kubernetes.io/instance={release}"
                    )["items"]
                )
                == 2
                and items
            ),
            timeout=30,
        )
        sc = pods[0]["spec"]["containers"][0]["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        # The NOTES render for users.
        notes = helm("get", "notes", release, "-n", namespace, env=env).stdout
        assert "Lease" in notes, notes
    finally:
        helm("uninstall", release, "--namespace", namespace, "--wait=false", env=env)
