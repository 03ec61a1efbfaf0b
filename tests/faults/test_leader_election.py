"""Two operator replicas at once, a leader SIGKILLed, a Lease held by a replica whose clock is off.

Real `gridwise operator run` processes campaign for a real Lease on the local API server.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from gridwise.devcluster import Cluster
from tests.cluster.harness import caj_manifest, get_json, replay_trace, wait_for

from .conftest import Operators, leader_gauge, reasons, status

pytestmark = pytest.mark.cluster

# Short Lease timings keep the takeover tests quick; the outage test uses the defaults.
FAST = ("--lease-duration-seconds", "6", "--renew-deadline-seconds", "4", "--retry-period-seconds", "1")


def holder(cluster: Cluster, namespace: str) -> str | None:
    r = cluster.kubectl("-n", namespace, "get", "lease", "gridwise-operator", "-o", "json", check=False)
    if r.returncode != 0:
        return None
    spec = json.loads(r.stdout).get("spec") or {}
    return spec.get("holderIdentity")


def test_two_replicas_only_the_leader_acts_and_a_standby_is_ready(
    cluster: Cluster, namespace: str, tmp_path: Path, operators: Operators
) -> None:
    a = operators.start(leader_election=True, identity="replica-a", extra_args=FAST)
    b = operators.start(leader_election=True, identity="replica-b", extra_args=FAST)
    # Both are Ready: /readyz means "can serve"; who leads is a metric and the Lease.
    assert a.get("/readyz")[0] == 200 and b.get("/readyz")[0] == 200
    assert "standby" in b.get("/readyz")[1]
    wait_for("the leader gauge", lambda: (leader_gauge(a), leader_gauge(b)) == (1.0, 0.0), log=a.log_tail)
    assert holder(cluster, namespace) == "replica-a"
    trace = replay_trace(tmp_path / "trace.csv", [100.0] * 72)
    manifest = caj_manifest("peer", trace=trace, work_gpu_hours=40, complete_within="60h",
                            policy={"type": "agnostic"})  # fmt: skip
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    wait_for("running", lambda: status(cluster, namespace, "peer").get("phase") == "Running", log=a.log_tail)
    time.sleep(3)  # many ticks of the leader; the standby must do nothing meanwhile
    assert "gridwise_job_replicas{" not in b.metrics(), "the standby reconciled a job"
    assert "gridwise_job_replicas{" in a.metrics()
    assert reasons(cluster, namespace, "peer").count("JobCreated") == 1

    # The leader dies without a chance to release the Lease: b takes over after the Lease expires
    # by b's own clock, and continues the same job (no second Job, totals continue).
    before = status(cluster, namespace, "peer")
    killed_at = time.monotonic()
    a.stop(sig_kill=True)
    wait_for("b to lead", lambda: holder(cluster, namespace) == "replica-b", timeout=30, log=b.log_tail)
    took = time.monotonic() - killed_at
    assert took >= 4, f"b took over {took:.1f}s after the kill: before the Lease could expire"
    wait_for("b's leader gauge", lambda: leader_gauge(b) == 1.0, log=b.log_tail)
    after = wait_for(
        "b to reconcile",
        lambda: (
            (s := status(cluster, namespace, "peer"))["accounting"]["lastTime"]
            != before["accounting"]["lastTime"]
            and s
        ),
        log=b.log_tail,
    )
    assert after["energyJoules"] >= before["energyJoules"]
    assert [j["metadata"]["name"] for j in get_json(cluster, namespace, "jobs")["items"]] == ["peer"]
    assert reasons(cluster, namespace, "peer").count("JobCreated") == 1
    assert "leading: replica-b" in b.log_tail(400)


def test_a_graceful_stop_hands_the_lease_over_at_once(
    cluster: Cluster, namespace: str, operators: Operators
) -> None:
    a = operators.start(leader_election=True, identity="replica-a")  # default 15 s Lease
    b = operators.start(leader_election=True, identity="replica-b")
    wait_for("a to lead", lambda: leader_gauge(a) == 1.0, log=a.log_tail)
    stopped_at = time.monotonic()
    a.stop()  # SIGTERM: a stops acting, then releases the Lease
    assert a.proc is not None and a.proc.returncode == 0, a.log_tail()
    wait_for("b to lead", lambda: leader_gauge(b) == 1.0, timeout=30, log=b.log_tail)
    assert time.monotonic() - stopped_at < 10, "b waited for expiry: the Lease was not released"
    assert "released the Lease" in a.log_tail(200)


def test_a_standby_with_a_skewed_clock_does_not_steal_a_live_lease(
    cluster: Cluster, namespace: str, operators: Operators
) -> None:
    """A live leader whose clock is years behind writes renewTimes in the past. A standby that
    compared renewTime with its own clock would take the Lease at once; one that judges expiry by
    when it saw the record change waits until the leader really stops renewing."""
    lease: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "gridwise-operator", "namespace": namespace},
        # 15 s as the chart's default: renewals by kubectl every ~1 s stay far inside it on a busy machine.
        "spec": {"holderIdentity": "skewed-leader", "leaseDurationSeconds": 15, "leaseTransitions": 0},
    }

    def renew(n: int) -> None:  # what the skewed leader does every second
        lease["spec"]["renewTime"] = f"2001-01-01T00:00:{n % 60:02d}.000000Z"
        cluster.kubectl("-n", namespace, "apply", "--server-side", "--force-conflicts", "-f", "-",
                        input=json.dumps(lease))  # fmt: skip

    renew(0)
    b = operators.start(leader_election=True, identity="replica-b", extra_args=FAST)
    began, n = time.monotonic(), 0
    while time.monotonic() - began < 20:  # longer than a lease duration of live renewals
        n += 1
        renew(n)
        assert holder(cluster, namespace) == "skewed-leader", b.log_tail()
        assert leader_gauge(b) == 0.0
    stopped = time.monotonic()  # the skewed leader dies: now b may take over, after a lease duration
    wait_for("b to lead", lambda: holder(cluster, namespace) == "replica-b", timeout=30, log=b.log_tail)
    assert time.monotonic() - stopped >= 14
