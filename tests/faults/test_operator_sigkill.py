"""The operator SIGKILLed mid-tick, again and again, and restarted: no total is counted twice.

All totals live in the CarbonAwareJob's status. A tick that dies after accounting but before
its status write, or a restart that re-reads an old status, must never book the same interval
twice. What a user checks afterwards: the job finished by its deadline, its energy, work and
emissions are what its one 400 W replica running for the time the pod ran gives (from the pod's
own timestamps, not from the operator), at no moment more, and the restarts left no trace in its
Events (one Job created, one success, no Warning).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from gridwise.devcluster import Cluster
from tests.cluster.harness import caj_manifest, events, get_json, replay_trace, wait_for

from .conftest import (
    Operators,
    Trainer,
    assert_finished_by_the_deadline,
    assert_totals_match_the_pods,
    condition,
    status,
)

pytestmark = pytest.mark.cluster

INTENSITY = 120.0
SPEED = 600.0
KILLS = 4
WORK_GPU_HOURS = 8.0  # 48 s of wall time at 600x on one replica: the kills land while it runs


def test_sigkill_mid_tick_and_restart_never_double_counts(
    cluster: Cluster, namespace: str, tmp_path: Path, operators: Operators
) -> None:
    rng = random.Random(11)
    trace = replay_trace(tmp_path / "trace.csv", [INTENSITY] * 48, history=INTENSITY)
    manifest = caj_manifest("restart", trace=trace, work_gpu_hours=WORK_GPU_HOURS, complete_within="12h",
                            policy={"type": "agnostic"})  # fmt: skip
    op = operators.start(speed=SPEED)
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    with Trainer(cluster, namespace, "restart", operators, speed=SPEED, gpu_hours=WORK_GPU_HOURS) as trainer:
        wait_for("a running pod", lambda: trainer.pods, log=op.log_tail)

        def last_time() -> str:
            return str(status(cluster, namespace, "restart").get("accounting", {}).get("lastTime", ""))

        for _ in range(KILLS):
            seen = last_time()

            def ticked(since: str = seen) -> bool:
                return last_time() > since

            wait_for("a tick to write status", ticked, log=op.log_tail)
            time.sleep(rng.uniform(0.0, 0.5))  # ticks are 0.5 s apart: this lands inside or between ticks
            op.stop(sig_kill=True)
            op = operators.start(speed=SPEED)
        assert trainer.finished_at is None, "the work finished before the last kill: make it longer"
        st = wait_for(
            "the job to succeed",
            lambda: (s := status(cluster, namespace, "restart")).get("phase") == "Succeeded" and s,
            timeout=120,
            log=op.log_tail,
        )
    assert len(trainer.pods) == 1, f"the training pod was restarted: {trainer.pods}"
    assert_finished_by_the_deadline(cluster, namespace, "restart", operators, SPEED, st)
    assert_totals_match_the_pods(trainer, st, grams_per_kwh=INTENSITY)
    reconciled = condition(st, "Reconciled")
    assert reconciled is not None and (reconciled["status"], reconciled["reason"]) == ("True", "Reconciled")
    assert [j["metadata"]["name"] for j in get_json(cluster, namespace, "jobs")["items"]] == ["restart"]
    posted = [(e["type"], e["reason"]) for e in events(cluster, namespace, "restart")]
    assert posted.count(("Normal", "JobCreated")) == 1, posted
    assert posted.count(("Normal", "RunNow")) == 1, posted  # a restart does not resume a running Job again
    assert posted.count(("Normal", "JobSucceeded")) == 1, posted
    assert not [e for e in posted if e[0] == "Warning"], posted
    # Run at once at its max (one replica) on a flat grid, the job avoided nothing, and says so.
    done = [e["message"] for e in events(cluster, namespace, "restart") if e["reason"] == "JobSucceeded"]
    assert done == ["training succeeded; avoided 0g CO2"], done
