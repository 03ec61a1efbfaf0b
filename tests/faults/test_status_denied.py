"""RBAC denies the status write: the operator keeps running the Job, says so, and its timer survives.

The operator runs as the chart's ServiceAccount with the chart's RBAC minus `patch` on
`carbonawarejobs/status`. kopf stops an object's timer for good after a 4xx on its patch unless the
operator handles it; the proof that it did is that once the permission is granted back, status
appears without restarting anything.

The job is short enough to run to its end while status is denied: the operator resumes it,
observes its Job complete and says so in an Event, all from a status it can only keep in memory.
Once the write is allowed, that status is what the user reads: Succeeded by the deadline, with
the totals of the pod's whole run, counted once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from gridwise.devcluster import Cluster
from tests.cluster.harness import caj_manifest, events, replay_trace, wait_for
from tests.cluster.test_rbac import drop_verb, render_rbac

from .conftest import (
    Operators,
    Trainer,
    assert_finished_by_the_deadline,
    assert_totals_match_the_pods,
    condition,
    job,
    status,
)

pytestmark = pytest.mark.cluster

SPEED = 600.0
INTENSITY = 100.0
WORK_GPU_HOURS = 4.0  # 24 s of wall time at 600x on one replica: done well inside the denial
DENIED_FOR_S = 65.0
# The operator may back off a failing status write (the next attempt ~64 s after 65 s of failures).
RECOVERY_S = 150.0


def job_complete(cluster: Cluster, namespace: str, name: str) -> bool:
    j = job(cluster, namespace, name) or {}
    return any(
        c.get("type") == "Complete" and c.get("status") == "True"
        for c in (j.get("status") or {}).get("conditions") or []
    )


def test_a_denied_status_patch_does_not_stop_the_job_or_the_timer(
    cluster: Cluster, namespace: str, tmp_path: Path, operators: Operators
) -> None:
    release = f"gw-{namespace}"
    full = render_rbac(release, namespace, {"watchNamespaces": [namespace]})
    denied = drop_verb(full, "gridwise.dev", "carbonawarejobs/status", "patch")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(denied))
    try:
        sa = next(d for d in full if d["kind"] == "ServiceAccount")["metadata"]["name"]
        kubeconfig = cluster.kubeconfig_for_service_account(namespace, sa, tmp_path / "sa.kubeconfig")
        op = operators.start(
            kubeconfig=kubeconfig, leader_election=True, identity=f"{release}-0", speed=SPEED
        )
        trace = replay_trace(tmp_path / "trace.csv", [INTENSITY] * 48, history=INTENSITY)
        manifest = caj_manifest("nostatus", trace=trace, work_gpu_hours=WORK_GPU_HOURS, complete_within="8h",
                                policy={"type": "agnostic"})  # fmt: skip
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
        trainer = Trainer(cluster, namespace, "nostatus", operators, speed=SPEED, gpu_hours=WORK_GPU_HOURS)
        with trainer:
            # The operator acts on the Job although it cannot record anything.
            wait_for(
                "the Job to run",
                lambda: (
                    (j := job(cluster, namespace, "nostatus")) is not None
                    and j["spec"].get("suspend") is False
                ),
                timeout=60,
                log=op.log_tail,
            )
            # It says so in its log, naming the job and the refusal ...
            wait_for(
                "the denial in the operator log",
                lambda: "nostatus" in (tail := op.log_tail(300)) and "forbidden" in tail.lower(),
                timeout=60,
                log=op.log_tail,
            )
            denied_at = time.monotonic()
            # ... and goes on reconciling: the trainer finishes, the Job completes, the operator
            # sees it and posts the success, all while it can write no status. What it holds in
            # memory meanwhile is on /metrics (dashboards): never more than the pod has run.
            wait_for(
                "the Job to complete",
                lambda: (
                    trainer.record_exported(op) is not None and job_complete(cluster, namespace, "nostatus")
                ),
                timeout=90,
                log=op.log_tail,
            )
            wait_for(
                "the JobSucceeded Event while status is denied",
                lambda: "JobSucceeded" in [e["reason"] for e in events(cluster, namespace, "nostatus")],
                timeout=30,
                log=op.log_tail,
            )
            # Keep it denied past kopf's whole retry budget for a patch (1+1+2+3+5+8+13+21 s): a
            # timer that dies on the final 4xx would never write status again.
            time.sleep(max(0.0, DENIED_FOR_S - (time.monotonic() - denied_at)))
            assert status(cluster, namespace, "nostatus") == {}
            assert op.proc is not None and op.proc.poll() is None
            held = trainer.record_exported(op)
            # Grant the permission back: the same timer (no restart) writes the status it kept.
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(full))
            st = wait_for(
                "status after the permission is back",
                lambda: (s := status(cluster, namespace, "nostatus")).get("phase") == "Succeeded" and s,
                timeout=RECOVERY_S,
                log=op.log_tail,
            )
        assert len(trainer.pods) == 1, f"the training pod was restarted: {trainer.pods}"
        assert_finished_by_the_deadline(cluster, namespace, "nostatus", operators, SPEED, st)
        assert_totals_match_the_pods(trainer, st, grams_per_kwh=INTENSITY)
        assert st["energyJoules"] == held, "the status written is not the one the operator held"
        reconciled = condition(st, "Reconciled")
        assert reconciled is not None and (reconciled["status"], reconciled["reason"]) == (
            "True",
            "Reconciled",
        )
        # Where the job's owner looks (`kubectl describe`): one Warning naming the status write and
        # the refusal, since no condition can be written while status is denied.
        seen = events(cluster, namespace, "nostatus")
        described = [(e["type"], e["reason"], e["message"]) for e in seen]
        warnings = [e for e in seen if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == ["StatusWriteFailed"], described
        assert warnings[0].get("count", 1) == 1, described
        assert "forbidden" in warnings[0]["message"].lower(), described
        normal = [e["reason"] for e in seen if e["type"] == "Normal"]
        assert [normal.count(r) for r in ("JobCreated", "RunNow", "JobSucceeded")] == [1, 1, 1], described
        # Run at once at its max (one replica) on a flat grid, the job avoided nothing, and says so.
        done = [e["message"] for e in seen if e["reason"] == "JobSucceeded"]
        assert done == ["training succeeded; avoided 0g CO2"], done
        assert op.proc is not None and op.proc.poll() is None
    finally:
        for d in full:
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                cluster.kubectl(
                    "delete", d["kind"].lower(), d["metadata"]["name"], "--wait=false", check=False
                )
