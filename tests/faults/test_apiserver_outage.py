"""The API server stopped for 30 s under two operator replicas with leader election (the chart default).

Before, the leader exited when a renewal failed past two thirds of the Lease. Now both replicas
ride the outage out: the leader stops acting at its renew deadline, neither process exits or
turns unhealthy, and once the API server is back exactly one of them leads and the job it was
running continues with nothing created twice. Its pod ran on through the outage (a kubelet does
not need the API server to keep a container running), so the job still finishes by its deadline,
and its totals are the pod's whole run, the outage included, counted once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gridwise.devcluster import Cluster, LocalControlPlane
from tests.cluster.harness import caj_manifest, events, get_json, replay_trace, wait_for

from .conftest import (
    Operators,
    Trainer,
    assert_finished_by_the_deadline,
    assert_totals_match_the_pods,
    condition,
    leader_gauge,
    status,
)

pytestmark = pytest.mark.cluster

OUTAGE_S = 30.0
SPEED = 600.0
INTENSITY = 100.0
# 60 s of wall time at 600x on one replica: it runs through the outage and the new election.
WORK_GPU_HOURS = 10.0


def test_operators_ride_out_a_30s_api_server_outage(
    cluster: Cluster, namespace: str, tmp_path: Path, operators: Operators
) -> None:
    if not isinstance(cluster, LocalControlPlane):
        pytest.skip("stopping the API server needs the local control plane, not a --kubeconfig cluster")
    a = operators.start(speed=SPEED, leader_election=True, identity="replica-a")  # chart defaults: 15/10/2 s
    b = operators.start(speed=SPEED, leader_election=True, identity="replica-b")

    def both() -> str:
        return a.log_tail() + "\n--- b ---\n" + b.log_tail()

    wait_for("a to lead", lambda: leader_gauge(a) == 1.0, log=a.log_tail)
    trace = replay_trace(tmp_path / "trace.csv", [INTENSITY] * 48, history=INTENSITY)
    manifest = caj_manifest("ride", trace=trace, work_gpu_hours=WORK_GPU_HOURS, complete_within="16h",
                            policy={"type": "agnostic"})  # fmt: skip
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    with Trainer(cluster, namespace, "ride", operators, speed=SPEED, gpu_hours=WORK_GPU_HOURS) as trainer:
        wait_for("a running pod", lambda: trainer.pods, log=a.log_tail)
        before = wait_for(
            "running", lambda: (s := status(cluster, namespace, "ride")).get("phase") == "Running" and s
        )

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
            # As sets, not sorted: a replica that does not answer (None) means "not yet", not a TypeError.
            lambda: {leader_gauge(a), leader_gauge(b)} == {0.0, 1.0},
            timeout=60,
            log=both,
        )
        last = before["accounting"]["lastTime"]
        after = wait_for(
            "the job to be reconciled again",
            lambda: (s := status(cluster, namespace, "ride"))["accounting"]["lastTime"] > last and s,
            timeout=60,
            log=both,
        )
        assert after["phase"] == "Running" and after["energyJoules"] >= before["energyJoules"]
        assert trainer.finished_at is None, "the work finished before the API server was back: make it longer"
        st = wait_for(
            "the job to succeed",
            lambda: (s := status(cluster, namespace, "ride")).get("phase") == "Succeeded" and s,
            timeout=120,
            log=both,
        )
    assert len(trainer.pods) == 1, f"the training pod was restarted: {trainer.pods}"
    assert_finished_by_the_deadline(cluster, namespace, "ride", operators, SPEED, st)
    assert_totals_match_the_pods(trainer, st, grams_per_kwh=INTENSITY)
    reconciled = condition(st, "Reconciled")
    assert reconciled is not None and (reconciled["status"], reconciled["reason"]) == ("True", "Reconciled")
    assert [j["metadata"]["name"] for j in get_json(cluster, namespace, "jobs")["items"]] == ["ride"]
    # One resume, one success: the leader that took over acted on the running Job as it found it.
    # No Warning: the status writes that failed during the outage could post theirs only to the
    # API server that was down, and the leader stepped down (and stopped posting) at 10 s.
    seen = [(e["type"], e["reason"]) for e in events(cluster, namespace, "ride")]
    assert seen.count(("Normal", "JobCreated")) == 1, seen
    assert seen.count(("Normal", "RunNow")) == 1, seen
    assert seen.count(("Normal", "JobSucceeded")) == 1, seen
    assert not [e for e in seen if e[0] == "Warning"], seen
    # Run at once at its max (one replica) on a flat grid, the job avoided nothing, and says so.
    done = [e["message"] for e in events(cluster, namespace, "ride") if e["reason"] == "JobSucceeded"]
    assert done == ["training succeeded; avoided 0g CO2"], done
    for op in (a, b):
        assert op.proc is not None and op.proc.poll() is None
        assert op.get("/readyz")[0] == 200
