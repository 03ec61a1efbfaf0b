"""The API server stopped for 30 s under two operator replicas with leader election (the chart default).

Before, the leader exited when a renewal failed past two thirds of the Lease. Now both replicas
ride the outage out: the leader stops acting at its renew deadline, neither process exits or
turns unhealthy, and once the API server is back exactly one of them leads and the job it was
running continues with nothing created twice.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gridwise.devcluster import Cluster, LocalControlPlane
from tests.cluster.harness import caj_manifest, get_json, replay_trace, wait_for

from .conftest import Operators, leader_gauge, reasons, status

pytestmark = pytest.mark.cluster

OUTAGE_S = 30.0


def test_operators_ride_out_a_30s_api_server_outage(
    cluster: Cluster, namespace: str, tmp_path: Path, operators: Operators
) -> None:
    if not isinstance(cluster, LocalControlPlane):
        pytest.skip("stopping the API server needs the local control plane, not a --kubeconfig cluster")
    a = operators.start(leader_election=True, identity="replica-a")  # chart defaults: 15/10/2 s
    b = operators.start(leader_election=True, identity="replica-b")
    wait_for("a to lead", lambda: leader_gauge(a) == 1.0, log=a.log_tail)
    trace = replay_trace(tmp_path / "trace.csv", [100.0] * 240)
    manifest = caj_manifest("ride", trace=trace, work_gpu_hours=100, complete_within="9d",
                            policy={"type": "agnostic"})  # fmt: skip
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    wait_for("running", lambda: status(cluster, namespace, "ride").get("phase") == "Running", log=a.log_tail)
    before = status(cluster, namespace, "ride")

    cluster.stop_apiserver()
    try:
        down_at = time.monotonic()
        while time.monotonic() - down_at < OUTAGE_S:
            for op in (a, b):
                assert op.proc is not None and op.proc.poll() is None, f"exited:\n{op.log_tail()}"
                assert op.get("/healthz")[0] == 200, "a replica turned unhealthy (its pod would restart)"
            time.sleep(1)
        # The leader stepped down at its renew deadline: it must not act without a Lease.
        assert leader_gauge(a) == 0.0 and leader_gauge(b) == 0.0
        assert "lost leadership (renew deadline)" in a.log_tail(400), a.log_tail()
    finally:
        cluster.start_apiserver()

    wait_for(
        "exactly one leader again",
        lambda: sorted([leader_gauge(a), leader_gauge(b)]) == [0.0, 1.0],
        timeout=60,
        log=lambda: a.log_tail() + "\n--- b ---\n" + b.log_tail(),
    )
    last = before["accounting"]["lastTime"]
    after = wait_for(
        "the job to be reconciled again",
        lambda: (s := status(cluster, namespace, "ride"))["accounting"]["lastTime"] > last and s,
        timeout=60,
        log=lambda: a.log_tail() + "\n--- b ---\n" + b.log_tail(),
    )
    assert after["phase"] == "Running" and after["energyJoules"] >= before["energyJoules"]
    assert [j["metadata"]["name"] for j in get_json(cluster, namespace, "jobs")["items"]] == ["ride"]
    assert reasons(cluster, namespace, "ride").count("JobCreated") == 1
    for op in (a, b):
        assert op.proc is not None and op.proc.poll() is None
        assert op.get("/readyz")[0] == 200
