"""RBAC denies the status write: the operator keeps running the Job, says so, and its timer survives.

The operator runs as the chart's ServiceAccount with the chart's RBAC minus `patch` on
`carbonawarejobs/status`. kopf stops an object's timer for good after a 4xx on its patch unless the
operator handles it; the proof that it did is that once the permission is granted back, status
appears without restarting anything.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from gridwise.devcluster import Cluster
from tests.cluster.harness import caj_manifest, events, replay_trace, wait_for
from tests.cluster.test_rbac import drop_verb, render_rbac

from .conftest import Operators, job, status

pytestmark = pytest.mark.cluster

DENIED_FOR_S = 65.0
# The operator may back off a failing status write (the next attempt ~64 s after 65 s of failures).
RECOVERY_S = 150.0


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
            kubeconfig=kubeconfig, leader_election=True, identity=f"{release}-0", speed=600.0
        )
        trace = replay_trace(tmp_path / "trace.csv", [100.0] * 72)
        manifest = caj_manifest("nostatus", trace=trace, work_gpu_hours=40, complete_within="60h",
                                policy={"type": "agnostic"})  # fmt: skip
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
        # The operator acts on the Job although it cannot record anything.
        wait_for(
            "the Job to run",
            lambda: (
                (j := job(cluster, namespace, "nostatus")) is not None and j["spec"].get("suspend") is False
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
        # Keep it denied past kopf's whole retry budget for a patch (1+1+2+3+5+8+13+21 s): a timer
        # that dies on the final 4xx would never write status again.
        time.sleep(DENIED_FOR_S)
        assert status(cluster, namespace, "nostatus") == {}
        assert op.proc is not None and op.proc.poll() is None
        # Grant the permission back: the same timer (no restart) writes status within a few ticks.
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(full))
        st = wait_for(
            "status after the permission is back",
            lambda: (s := status(cluster, namespace, "nostatus")).get("phase") == "Running" and s,
            timeout=RECOVERY_S,
            log=op.log_tail,
        )
        # ... and where the job's owner looks (`kubectl describe`): a Warning Event naming the status
        # write, since no condition can be written while status is denied.
        warnings = [
            e
            for e in events(cluster, namespace, "nostatus")
            if e["type"] == "Warning" and "status" in e["message"].lower()
        ]
        assert warnings, [
            (e["type"], e["reason"], e["message"]) for e in events(cluster, namespace, "nostatus")
        ]
        assert any("forbidden" in e["message"].lower() or "denied" in e["message"].lower() for e in warnings)
        assert st["energyJoules"] >= 0
        assert op.proc is not None and op.proc.poll() is None
    finally:
        for d in full:
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                cluster.kubectl(
                    "delete", d["kind"].lower(), d["metadata"]["name"], "--wait=false", check=False
                )
