"""The operator away (SIGKILLed, restarted 12-16 s later) while its job's pod starts and while it finishes.

A restarted operator re-integrates from the last status written, which said what the pods did
then. Here that status is stale on purpose. The first time it says the pod was Pending (it could
not be scheduled until a node was labelled, after the kill): halving the gap, as before, counted
about 6 s of the pod's 13 s too little; the container's start says when it began. The second time
it says the pod was running, and the trainer finished 3 s into a 16 s absence: the Job's
completionTime says when it stopped (with the model's work exact, the cap at the work needed
also stops the energy there; tests/unit covers a finish the cap does not catch). At the end the
totals equal the pod's run, with one Job, one success and no Warning.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gridwise.devcluster import Cluster
from tests.cluster.harness import caj_manifest, events, replay_trace, wait_for

from .conftest import (
    Operators,
    Trainer,
    assert_finished_by_the_deadline,
    assert_not_behind_the_pods,
    assert_totals_match_the_pods,
    status,
)

pytestmark = pytest.mark.cluster

INTENSITY = 150.0
SPEED = 600.0
WORK_GPU_HOURS = 6.0  # 36 s of wall time at 600x on one replica


def test_a_pod_that_starts_or_finishes_while_the_operator_is_away_is_counted_as_it_ran(
    cluster: Cluster, namespace: str, tmp_path: Path, operators: Operators
) -> None:
    label = f"gridwise.test/{namespace}"
    trace = replay_trace(tmp_path / "trace.csv", [INTENSITY] * 48, history=INTENSITY)
    manifest = caj_manifest(
        "away", trace=trace, work_gpu_hours=WORK_GPU_HOURS, complete_within="12h",
        policy={"type": "agnostic"},
        extra_spec={"template": {"spec": {
            "nodeSelector": {label: "open"},  # no node has it yet: the pod stays Pending
            "containers": [{"name": "trainer", "image": "gridwise/trainer:test",
                            "resources": {"limits": {"nvidia.com/gpu": 1}}}],
        }}},
    )  # fmt: skip
    op = operators.start(speed=SPEED)
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    try:
        with Trainer(cluster, namespace, "away", operators, speed=SPEED, gpu_hours=WORK_GPU_HOURS) as trainer:

            def pending_written() -> dict[str, Any] | bool:
                s = status(cluster, namespace, "away")
                acc = s.get("accounting") or {}
                return s.get("phase") == "Running" and acc.get("workingPods") == 0 and s

            wait_for("the Job resumed with its pod Pending, written", pending_written, log=op.log_tail)
            op.stop(sig_kill=True)
            stale = status(cluster, namespace, "away")
            assert stale["accounting"]["workingPods"] == 0 and not trainer.pods, stale["accounting"]

            # Away 1: the pod is scheduled and runs for about 12 s before the operator is back.
            cluster.kubectl("label", "nodes", "--all", f"{label}=open", "--overwrite")
            wait_for("the pod to run", lambda: trainer.pods, timeout=30)
            time.sleep(12)
            op = operators.start(speed=SPEED)

            def running_written() -> dict[str, Any] | bool:
                s = status(cluster, namespace, "away")
                return (s.get("accounting") or {}).get("workingPods") == 1 and s

            back = wait_for("a status that says the pod runs", running_written, log=op.log_tail)
            # Checked here: the second absence, counted long by halving, would hide it at the end.
            assert_not_behind_the_pods(trainer, back)

            # Away 2: gone 3 s before the trainer finishes, back 13 s after.
            need = WORK_GPU_HOURS * 3600.0
            wait_for(
                "3 s of work left",
                lambda: trainer.replica_seconds(early=False) >= need - 3 * SPEED,
                timeout=60,
                log=op.log_tail,
            )
            op.stop(sig_kill=True)
            wait_for("the trainer to finish", lambda: trainer.finished_at is not None, timeout=30)
            time.sleep(13)
            op = operators.start(speed=SPEED)
            st = wait_for(
                "the job to succeed",
                lambda: (s := status(cluster, namespace, "away")).get("phase") == "Succeeded" and s,
                timeout=60,
                log=op.log_tail,
            )
    finally:
        cluster.kubectl("label", "nodes", "--all", f"{label}-", check=False)
    assert len(trainer.pods) == 1, f"the training pod was restarted: {trainer.pods}"
    assert_finished_by_the_deadline(cluster, namespace, "away", operators, SPEED, st)
    assert_totals_match_the_pods(trainer, st, grams_per_kwh=INTENSITY)
    posted = [(e["type"], e["reason"]) for e in events(cluster, namespace, "away")]
    assert posted.count(("Normal", "JobCreated")) == 1, posted
    assert posted.count(("Normal", "JobSucceeded")) == 1, posted
    assert not [e for e in posted if e[0] == "Warning"], posted
