"""The operator is sent only its own Jobs and pods, on the real API server.

A GPU cluster runs many workloads besides gridwise's, often in the same namespaces. The API server
filters the operator's watches by gridwise's label, so other Jobs and pods never reach it: they
cost it no decoding, queueing or memory. `gridwise_watch_events_total{kind}` counts what arrives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from gridwise.devcluster import Cluster
from tests.cluster.harness import (
    REPLAY_START,
    OperatorProcess,
    caj_manifest,
    get_json,
    replay_trace,
    wait_for,
)

pytestmark = pytest.mark.cluster

FOREIGN_PODS = 5
RUN_WHILE_CLEAN = {"type": "threshold", "thresholdGramsPerKWh": 300}


def _events(op: OperatorProcess) -> dict[str, float]:
    """`gridwise_watch_events_total` by kind."""
    return {labels["kind"]: value for labels, value in op.samples("gridwise_watch_events_total")}


def _steady(
    read: Callable[[], dict[str, float]], quiet_s: float = 3.0, timeout: float = 30.0
) -> dict[str, float]:
    """The counts once they have not moved for `quiet_s`."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"the operator's watch events never settled: {last}")


def test_other_jobs_and_pods_in_the_namespace_never_reach_the_operator(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    trace = replay_trace(tmp_path / "trace.csv", [100.0] * 48)  # clean: the job runs
    op = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        clock_start=REPLAY_START + timedelta(minutes=1),
        speed=1.0,  # the job runs on through the test: its own objects stay still
        extra_args=["--namespace", namespace],
    )
    op.start()
    try:
        own = caj_manifest("own", trace=trace, policy=RUN_WHILE_CLEAN)
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=own)
        wait_for("the operator to see its own Job and pod",
                 lambda: {"Job", "Pod"} <= set(_events(op)), timeout=60, log=op.log_tail)  # fmt: skip
        wait_for("the job running", lambda: (get_json(cluster, namespace, "caj", "own").get("status") or {})
                 .get("phase") == "Running", timeout=60, log=op.log_tail)  # fmt: skip
        before = _steady(lambda: _events(op))

        # Someone else's work in the same namespace: a Job (with its pod) and bare pods.
        cluster.kubectl("-n", namespace, "create", "job", "foreign", "--image=busybox:1.36", "--", "true")
        for i in range(FOREIGN_PODS):
            cluster.kubectl("-n", namespace, "run", f"foreign-{i}", "--image=busybox:1.36", "--restart=Never")
        wait_for("the foreign pods to exist", lambda: len(
            [n for n in cluster.kubectl("-n", namespace, "get", "pods", "-o", "name").stdout.split()
             if "foreign" in n]) >= FOREIGN_PODS + 1, timeout=30)  # fmt: skip
        after = _steady(lambda: _events(op))
        assert after.get("Pod") == before.get("Pod"), (before, after)
        assert after.get("Job") == before.get("Job"), (before, after)
    finally:
        op.stop()
