"""The Indexed Job, headless Service and pod env the operator builds for 1, 2 and 4 replicas, and a scale.

kwok pods run no containers, so this asserts on the API objects the real control plane makes from the
operator's manifests (builders.build_job / build_headless_service, the same calls the reconciler
makes) and on the actuator's scale patch (builders.build_scale_patch) applied to the live Job.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwise.api import parse_job_spec
from gridwise.devcluster import Cluster
from gridwise.k8s.builders import build_headless_service, build_job, build_scale_patch
from tests.cluster.harness import caj_manifest, get_json, wait_for, write_trace

pytestmark = pytest.mark.cluster
INDEX = "batch.kubernetes.io/job-completion-index"


def _apply(cluster: Cluster, ns: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(obj))


def _pods(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    items = get_json(cluster, ns, "pods", "-l", f"job-name={name}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _create(cluster: Cluster, ns: str, tmp_path: Path, name: str, replicas: int) -> Any:
    trace = write_trace(tmp_path / f"{name}.csv", datetime(2030, 1, 1, tzinfo=UTC), [100.0] * 48)
    doc = yaml.safe_load(caj_manifest(name, trace=trace, min_replicas=1, max_replicas=replicas))
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=yaml.safe_dump(doc))
    body = get_json(cluster, ns, "caj", name)
    spec = parse_job_spec(name, ns, body["spec"], datetime.now(UTC))
    if replicas > 1:
        _apply(cluster, ns, build_headless_service(body, spec))
    _apply(cluster, ns, build_job(body, spec, replicas=replicas, suspend=False))
    return spec


def _check_pods(cluster: Cluster, ns: str, name: str, n: int) -> None:
    pods = wait_for(f"{n} pods", lambda: (p := _pods(cluster, ns, name)) and len(p) == n and p)
    indices = sorted(int(p["metadata"]["annotations"][INDEX]) for p in pods)
    assert indices == list(range(n))
    for p in pods:
        env = {e["name"]: e for e in p["spec"]["containers"][0]["env"]}
        assert p["spec"]["subdomain"] == name
        assert p["spec"]["hostname"] == f"{name}-{p['metadata']['annotations'][INDEX]}"
        assert env["GRIDWISE_NNODES"]["value"] == f"1:{4 if name.endswith('4') else 2}"
        assert env["GRIDWISE_RDZV_ENDPOINT"]["value"] == f"{name}-0.{name}.{ns}.svc:29400"
        assert env["GRIDWISE_RDZV_ID"]["value"] == name
        assert env["GRIDWISE_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"].endswith(f"['{INDEX}']")
        assert env["GRIDWISE_LOCAL_ADDR"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_single_replica_job_is_plain(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    _create(cluster, namespace, tmp_path, "one", 1)
    job = get_json(cluster, namespace, "job", "one")
    assert job["spec"]["parallelism"] == 1 and "completionMode" not in json.dumps(job["spec"]).replace(
        '"completionMode": "NonIndexed"', ""
    )
    pods = wait_for("1 pod", lambda: _pods(cluster, namespace, "one"))
    env = {e["name"] for e in pods[0]["spec"]["containers"][0]["env"]}
    assert "GRIDWISE_NNODES" not in env and "subdomain" not in pods[0]["spec"]
    assert cluster.kubectl("-n", namespace, "get", "svc", "one", check=False).returncode != 0


@pytest.mark.parametrize("replicas", [2, 4])
def test_elastic_job_service_and_pod_env(
    cluster: Cluster, namespace: str, tmp_path: Path, replicas: int
) -> None:
    name = f"el{replicas}"
    spec = _create(cluster, namespace, tmp_path, name, replicas)
    job = get_json(cluster, namespace, "job", name)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == replicas
    svc = get_json(cluster, namespace, "svc", name)
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in svc["spec"]["ports"]} == {29400, 9400}
    _check_pods(cluster, namespace, name, replicas)
    if replicas == 4:
        # The actuator's scale: parallelism and completions together; the highest indices go.
        patch = build_scale_patch(spec, 2, suspend=False)
        cluster.kubectl("-n", namespace, "patch", "job", name, "--type=merge", "-p", json.dumps(patch))
        job = get_json(cluster, namespace, "job", name)
        assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
        _check_pods(cluster, namespace, name, 2)
        patch = build_scale_patch(spec, 4, suspend=False)
        cluster.kubectl("-n", namespace, "patch", "job", name, "--type=merge", "-p", json.dumps(patch))
        _check_pods(cluster, namespace, name, 4)
