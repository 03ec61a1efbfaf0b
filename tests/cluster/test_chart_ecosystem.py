"""The chart as the ecosystem expects it (issue 15): .Capabilities guards on Prometheus Operator kinds, a
PodMonitor that finds the trainer pods the operator builds, a schema that refuses a ServiceMonitor without
its Service, an optional NetworkPolicy, a `helm test` hook, a README generated from values.yaml, the
image tag following appVersion, and a CRD upgrade that applies cleanly over the released CRD.

Rendering tests need helm (hack/build-control-plane.sh); the others use the session's control plane.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.devcluster import Cluster
from gridwise.k8s.builders import common_labels
from tests.cluster.harness import OperatorProcess, get_json, helm_binary
from tests.metrics.helm import CHART, KUBE_VERSION, render, template

REPO = Path(__file__).resolve().parents[2]
MONITORS = {
    "serviceMonitor": {"enabled": True},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
}
KINDS = {"serviceMonitor": "ServiceMonitor", "podMonitor": "PodMonitor", "prometheusRule": "PrometheusRule"}


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return [d["kind"] for d in docs]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def test_helm_lint_strict_with_every_option() -> None:
    for values in (
        {},
        {**MONITORS, "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {}}]}},
        {"service": {"enabled": False}, "watchNamespaces": ["ml"]},
    ):
        proc = subprocess.run(
            [helm_binary(), "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, "--values", "-"],
            input=yaml.safe_dump(values),
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "[ERROR]" not in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


# -- .Capabilities guards ---------------------------------------------------------------------------
def test_monitoring_kinds_are_left_out_without_their_crds() -> None:
    """On a cluster without the Prometheus Operator an install with them enabled still succeeds."""
    docs = render(MONITORS, api_versions=())
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & set(kinds(docs))
    assert "Deployment" in kinds(docs)


@pytest.mark.parametrize("key", list(KINDS))
def test_required_monitoring_kind_fails_naming_the_missing_crd(key: str) -> None:
    proc = template({key: {"enabled": True, "required": True}}, api_versions=(), check=False)
    assert proc.returncode != 0
    assert f"no monitoring.coreos.com/v1 {KINDS[key]}" in proc.stderr, proc.stderr
    assert f"--api-versions monitoring.coreos.com/v1/{KINDS[key]}" in proc.stderr
    # Only the missing kind matters: with its API present the same values render.
    docs = render(
        {key: {"enabled": True, "required": True}}, api_versions=(f"monitoring.coreos.com/v1/{KINDS[key]}",)
    )
    assert KINDS[key] in kinds(docs)


def test_monitoring_kinds_render_with_their_crds() -> None:
    docs = render(MONITORS)
    for kind in KINDS.values():
        assert kind in kinds(docs)
    sm = one(docs, "ServiceMonitor")
    dep = one(docs, "Deployment")
    svc = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True


def test_pod_monitor_selects_the_trainer_pods_the_operator_builds() -> None:
    """The selector and port are the ones gridwise/k8s/builders.py puts on every trainer pod."""
    from datetime import UTC, datetime

    from gridwise.api import parse_job_spec
    from gridwise.k8s.builders import build_job

    spec = parse_job_spec(
        "train",
        "ml",
        {
            "replicas": {"min": 1, "max": 2},
            "work": {"gpuHours": 1, "totalSteps": 10},
            "completeWithin": "1h",
            "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
        },
        datetime(2030, 1, 1, tzinfo=UTC),
    )
    job = build_job({"metadata": {"name": "train", "uid": "u", "labels": {}}}, spec, replicas=1)
    pod = job["spec"]["template"]
    pm = one(render(MONITORS), "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pm["spec"]["selector"]["matchLabels"].items() <= common_labels("x").items()
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert pm["spec"]["jobLabel"] == "app.kubernetes.io/name"  # job="gridwise-trainer" for the dashboard
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    relabel = pm["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel["targetLabel"] == "carbonawarejob"
    # The instance label the relabeling reads is the CarbonAwareJob's name.
    assert pod["metadata"]["labels"]["app.kubernetes.io/instance"] == "train"
    watched = one(render({**MONITORS, "watchNamespaces": ["ml", "research"]}), "PodMonitor")
    assert watched["spec"]["namespaceSelector"] == {"matchNames": ["ml", "research"]}


def test_trainer_pods_get_node_name_for_the_hostname_label() -> None:
    from datetime import UTC, datetime

    from gridwise.api import parse_job_spec
    from gridwise.k8s.builders import build_trainer_env

    spec = parse_job_spec(
        "j",
        "ns",
        {
            "replicas": {"min": 1, "max": 1},
            "work": {"gpuHours": 1, "totalSteps": 10},
            "completeWithin": "1h",
            "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
        },
        datetime(2030, 1, 1, tzinfo=UTC),
    )
    env = {e["name"]: e for e in build_trainer_env(spec)}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


# -- schema -----------------------------------------------------------------------------------------
def test_schema_refuses_a_service_monitor_without_the_service() -> None:
    proc = template({"serviceMonitor": {"enabled": True}, "service": {"enabled": False}}, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert "service" in proc.stderr and "enabled" in proc.stderr, proc.stderr
    # Each alone is fine.
    render({"serviceMonitor": {"enabled": True}})
    render({"service": {"enabled": False}})


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"networkPolicy": {"enabled": "yes"}}, "enabled"),
        ({"networkPolicy": {"apiServerPorts": [0]}}, "apiServerPorts"),
        ({"networkPolicy": {"typo": True}}, "typo"),
        ({"podMonitor": {"required": "always"}}, "required"),
        ({"prometheusRule": {"runbookBaseURL": "docs/runbooks"}}, "runbookBaseURL"),
        ({"operator": {"pauseWriteHoldSeconds": -1}}, "pauseWriteHoldSeconds"),
    ],
)
def test_schema_refuses_bad_new_values(values: dict[str, Any], needle: str) -> None:
    proc = template(values, check=False)
    assert proc.returncode != 0 and needle in proc.stderr, proc.stderr


# -- NetworkPolicy ----------------------------------------------------------------------------------
def test_network_policy_is_off_by_default_and_least_open_when_on() -> None:
    assert "NetworkPolicy" not in kinds(render())
    docs = render({"networkPolicy": {"enabled": True}})
    np = one(docs, "NetworkPolicy")["spec"]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert np["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert np["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = np["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}] and "from" not in ingress
    egress_ports = sorted((p["port"], p["protocol"]) for r in np["egress"] for p in r["ports"])
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (6443, "TCP"), (9400, "TCP")]
    trainer_rule = next(r for r in np["egress"] if r["ports"][0]["port"] == 9400)
    (peer,) = trainer_rule["to"]
    assert peer["podSelector"]["matchLabels"].items() <= common_labels("x").items()
    narrowed = one(
        render(
            {
                "networkPolicy": {
                    "enabled": True,
                    "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                    "apiServerTo": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
                }
            }
        ),
        "NetworkPolicy",
    )["spec"]
    test_pod = next(d for d in render() if d["kind"] == "Pod")["metadata"]["labels"]
    (monitoring, helm_test) = narrowed["ingress"][0]["from"]
    assert monitoring == {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    assert helm_test["podSelector"]["matchLabels"].items() <= test_pod.items()  # helm test still gets in
    assert {"ipBlock": {"cidr": "10.0.0.1/32"}} in next(
        r for r in narrowed["egress"] if r["ports"][0]["port"] == 443
    )["to"]


# -- the grid signal for trainers (issue 14) ---------------------------------------------------------
def _operator_args(values: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
    args: list[str] = one(render(values, **kwargs), "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    return args


def _signal_args(values: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
    return [a for a in _operator_args(values, **kwargs) if a.startswith("--signal-url")]


def test_every_flag_the_chart_passes_is_one_the_operator_takes() -> None:
    from gridwise.cli import build_parser

    def parsed(values: dict[str, Any] | None = None) -> Any:
        return build_parser().parse_args(["operator", "run", *_operator_args(values)])

    assert parsed().pause_write_hold_seconds == 30
    assert parsed({"operator": {"pauseWriteHoldSeconds": 0}}).pause_write_hold_seconds == 0, "0: off"
    assert parsed({"operator": {"tickSeconds": 5}}).tick_seconds == 5


def test_the_operator_tells_trainers_its_service_and_the_network_policy_lets_them_in() -> None:
    """Jobs get GRIDWISE_CARBON_URL=<Service>/v1/signal/...: the chart passes its Service as --signal-url."""
    docs = render()
    svc = one(docs, "Service")
    port = svc["spec"]["ports"][0]["port"]
    assert _signal_args() == [f"--signal-url=http://{svc['metadata']['name']}.gridwise-system.svc:{port}"]
    assert _signal_args({"service": {"port": 9090}}, release="rel", namespace="ml") == [
        "--signal-url=http://rel-gridwise.ml.svc:9090"
    ]
    assert _signal_args({"operator": {"signal": {"url": "http://op.example:8080/"}}}) == [
        "--signal-url=http://op.example:8080"
    ]
    assert _signal_args({"operator": {"signal": {"enabled": False}}}) == []
    assert _signal_args({"service": {"enabled": False}}) == [], "no Service, no url: trainers are not told"
    for bad in ("gw:8080", "http://gw/?x=1"):
        proc = template({"operator": {"signal": {"url": bad}}}, check=False)
        assert proc.returncode != 0 and "url" in proc.stderr, proc.stderr
    # metricsFrom narrows the port to the scrapers; trainer pods still reach their signal on it.
    narrowed = {"networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {"name": "mon"}}]}}
    ingress = one(render(narrowed), "NetworkPolicy")["spec"]["ingress"]
    (trainers,) = ingress[1:]
    assert trainers["ports"] == [{"port": "http", "protocol": "TCP"}]
    (peer,) = trainers["from"]
    assert peer["namespaceSelector"] == {}
    assert peer["podSelector"]["matchLabels"].items() <= common_labels("x").items()
    off = {"networkPolicy": narrowed["networkPolicy"], "operator": {"signal": {"enabled": False}}}
    assert len(one(render(off), "NetworkPolicy")["spec"]["ingress"]) == 1


# -- image tag, helm test ---------------------------------------------------------------------------
def app_version() -> str:
    return str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


def test_default_image_tag_follows_app_version() -> None:
    docs = render()
    image = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/gridwise/gridwise-operator:{app_version()}"
    pinned = render({"image": {"tag": "0.2.0-rc.1"}})
    assert one(pinned, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        ":0.2.0-rc.1"
    )


def test_helm_test_pod_checks_the_operator_through_its_service() -> None:
    docs = render()
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    dep_image = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert c["image"] == dep_image  # no second image to pull
    assert c["args"][-1] == "http://gridwise.gridwise-system.svc:8080"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and pod["spec"]["restartPolicy"] == "Never"
    # The Service must not select the test pod as an endpoint.
    svc = one(docs, "Service")["spec"]["selector"]
    assert not svc.items() <= pod["metadata"]["labels"].items()
    assert "Pod" not in kinds(render({"service": {"enabled": False}}))


@pytest.mark.cluster
def test_real_api_server_without_monitoring_crds_installs_and_notes_say_what_was_left_out(
    cluster: Cluster, namespace: str
) -> None:
    """.Capabilities from a real API server (no Prometheus Operator): the install goes on, NOTES explain."""
    proc = subprocess.run(
        [
            helm_binary(),
            "install",
            f"gw-{namespace}",
            str(CHART),
            "--dry-run=server",
            "--skip-crds",
            "--namespace",
            namespace,
            "--values",
            "-",
        ],
        input=yaml.safe_dump(MONITORS),
        capture_output=True,
        text=True,
        check=False,
        env=cluster.env(),
    )
    assert proc.returncode == 0, proc.stderr
    manifest, notes = proc.stdout.split("NOTES:", 1)
    assert "kind: ServiceMonitor" not in manifest and "kind: PrometheusRule" not in manifest
    for kind in KINDS.values():
        assert f"{kind}: left out" in notes, notes
    assert "kubectl apply --server-side" in notes


@pytest.mark.cluster
def test_helm_test_script_passes_against_a_real_operator_and_fails_without_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The test pod's own Python, run here against a real operator's HTTP server (kwok runs no containers)."""
    pod = next(d for d in render() if d["kind"] == "Pod")
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["python", "-c"]
    script = c["args"][0]
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log").start()
    try:
        url = f"http://127.0.0.1:{op.http_port}"
        ok = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=90)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "ok:" in ok.stdout
    finally:
        op.stop()
    fast_fail = script.replace("range(30)", "range(1)")
    bad = subprocess.run([sys.executable, "-c", fast_fail, url], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "is not healthy" in bad.stderr, bad.stderr


# -- a real install with the Prometheus Operator's kinds present ------------------------------------
def monitoring_crd(kind: str, plural: str) -> dict[str, Any]:
    """A stand-in for the Prometheus Operator's CRD (kind and group only; its schema is not shipped here)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


@pytest.mark.cluster
def test_install_with_monitoring_crds_and_network_policy(cluster: Cluster, namespace: str) -> None:
    """.Capabilities sees the CRDs on a real API server: the kinds render and are accepted with the rest."""
    crds = [
        ("ServiceMonitor", "servicemonitors"),
        ("PodMonitor", "podmonitors"),
        ("PrometheusRule", "prometheusrules"),
    ]
    manifest = "\n---\n".join(yaml.safe_dump(monitoring_crd(k, p)) for k, p in crds)
    cluster.kubectl("apply", "-f", "-", input=manifest)
    release = f"gw-{namespace}"
    env = cluster.env()
    try:
        for _, plural in crds:
            cluster.kubectl(
                "wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.monitoring.coreos.com"
            )
        values = {
            **{k: {"enabled": True, "required": True} for k in MONITORS},
            "fullnameOverride": release,
            "networkPolicy": {"enabled": True},
        }
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
        assert proc.returncode == 0, proc.stderr
        for kind in ("servicemonitor", "podmonitor", "prometheusrule", "networkpolicy"):
            names = cluster.kubectl("-n", namespace, "get", kind, "-o", "name").stdout.split()
            assert names, kind
        rule = get_json(cluster, namespace, "prometheusrule", release)
        assert rule["spec"]["groups"][0]["rules"]
        # The helm test hook is not installed until `helm test`; the API server accepts it as rendered.
        hook = subprocess.run(
            [helm_binary(), "get", "hooks", release, "--namespace", namespace],
            capture_output=True,
            text=True,
            env=env,
        )
        assert "helm.sh/hook: test" in hook.stdout, hook.stdout + hook.stderr
        cluster.kubectl("-n", namespace, "apply", "--dry-run=server", "-f", "-", input=hook.stdout)
    finally:
        subprocess.run(
            [helm_binary(), "uninstall", release, "--namespace", namespace, "--wait=false"],
            capture_output=True,
            env=env,
        )
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=manifest, check=False)


# -- CRD upgrades -----------------------------------------------------------------------------------
RELEASED_CRD = Path(__file__).parent / "data" / "carbonawarejobs-0.1.0.yaml"
CURRENT_CRD = REPO / "crds" / "gridwise.dev_carbonawarejobs.yaml"
RELEASED_EXAMPLE = Path(__file__).parent / "data" / "digits-forecast-0.1.0.yaml"


def regroup(text: str, group: str) -> str:
    """The CRD under a test-only group, so upgrading it never touches the session's CarbonAwareJob CRD."""
    return text.replace("gridwise.dev", group)


@pytest.mark.cluster
def test_crd_upgrade_applies_over_the_released_crd(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """docs/observability.md's upgrade step, `kubectl apply --server-side -f crds/`, over the 0.1.0 CRD."""
    group = f"u{uuid.uuid4().hex[:6]}.gridwise.dev"
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(regroup(RELEASED_CRD.read_text(), group))
    new.write_text(regroup(CURRENT_CRD.read_text(), group))
    crd = f"crd/carbonawarejobs.{group}"
    try:
        # helm install created the old CRD with its own field manager.
        cluster.kubectl("apply", "--server-side", "--field-manager=helm", "-f", str(old))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", crd)
        # A user's object stored under 0.1.0: the shipped example, as it was then.
        obj = yaml.safe_load(RELEASED_EXAMPLE.read_text())
        obj["apiVersion"] = f"{group}/v1alpha1"
        obj["metadata"]["name"] = "survivor"
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(obj))
        up = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(new))
        assert "serverside-applied" in up.stdout, up.stdout + up.stderr
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", crd)
        served = json.loads(cluster.kubectl("get", crd, "-o", "json").stdout)
        current = yaml.safe_load(new.read_text())
        for got_v, want_v in zip(served["spec"]["versions"], current["spec"]["versions"], strict=True):
            assert got_v["schema"] == want_v["schema"], "the API server serves the upgraded schema"
        # The object stored under 0.1.0 still reads (and validates) under the upgraded schema.
        got = json.loads(
            cluster.kubectl(
                "-n", namespace, "get", f"carbonawarejobs.{group}", "survivor", "-o", "json"
            ).stdout
        )
        assert got["spec"]["work"] == obj["spec"]["work"]
        cluster.kubectl("-n", namespace, "annotate", f"carbonawarejobs.{group}", "survivor", "touched=1")
        # Applying it again changes nothing: the upgrade step is safe to rerun.
        again = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(new))
        assert "serverside-applied" in again.stdout
    finally:
        cluster.kubectl("delete", crd, "--wait=false", check=False)


def test_released_crd_is_the_0_1_0_crd() -> None:
    """The frozen copy is what chart 0.1.0 shipped; a bump of the chart's version needs a new frozen copy."""
    released = yaml.safe_load(RELEASED_CRD.read_text())
    assert released["metadata"]["name"] == "carbonawarejobs.gridwise.dev"
    assert [v["name"] for v in released["spec"]["versions"]] == ["v1alpha1"]


# -- chart README -----------------------------------------------------------------------------------
def helm_docs() -> str:
    found = shutil.which("helm-docs") or str(Path.home() / ".cache/gridwise/lint-tools/bin/helm-docs")
    if not Path(found).is_file():
        pytest.fail("helm-docs not found: run hack/install-lint-tools.sh", pytrace=False)
    return found


def test_chart_readme_is_generated_from_values(tmp_path: Path) -> None:
    """charts/gridwise/README.md is what hack/chart-docs.sh generates from values.yaml's `# --` comments."""
    copy = tmp_path / "gridwise"
    shutil.copytree(CHART, copy)
    proc = subprocess.run(
        [helm_docs(), "--chart-search-root", str(copy), "--template-files", "README.md.gotmpl"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    generated = (copy / "README.md").read_text()
    assert generated == (CHART / "README.md").read_text(), (
        "charts/gridwise/README.md is stale: run hack/chart-docs.sh"
    )
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in (
        "networkPolicy.enabled",
        "podMonitor.required",
        "serviceMonitor.enabled",
        "prometheusRule.runbookBaseURL",
    ):
        assert f"| {key} |" in generated, key
    assert "kubectl apply --server-side" in generated  # the CRD upgrade step
    assert values["networkPolicy"]["enabled"] is False
    assert re.search(r"!\[AppVersion: " + re.escape(app_version()), generated)
