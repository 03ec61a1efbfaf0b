"""The operator SIGKILLed mid-tick, again and again, and restarted: no total is counted twice.

All totals live in the CarbonAwareJob's status. A tick that dies after accounting but before
its status write, or a restart that re-reads an old status, must never book the same interval
twice. The bound a user can check: a 1-replica job at 400 W cannot have used more energy than
400 W for the replayed time since it was accepted, and cannot have emitted more than that energy
at the (constant) grid intensity.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from pathlib import Path

import pytest

from gridwise.devcluster import Cluster
from tests.cluster.harness import caj_manifest, get_json, replay_trace, wait_for

from .conftest import Operators, reasons, status

pytestmark = pytest.mark.cluster

WATTS = 400.0  # caj_manifest's powerPerReplicaWatts
INTENSITY = 120.0
SPEED = 600.0
KILLS = 4


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_sigkill_mid_tick_and_restart_never_double_counts(
    cluster: Cluster, namespace: str, tmp_path: Path, operators: Operators
) -> None:
    rng = random.Random(11)
    trace = replay_trace(tmp_path / "trace.csv", [INTENSITY] * 240, history=INTENSITY)
    manifest = caj_manifest("restart", trace=trace, work_gpu_hours=100, complete_within="9d",
                            policy={"type": "agnostic"})  # fmt: skip
    op = operators.start(speed=SPEED)
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    wait_for(
        "running", lambda: status(cluster, namespace, "restart").get("phase") == "Running", log=op.log_tail
    )

    def last_time() -> str:
        return str(status(cluster, namespace, "restart").get("accounting", {}).get("lastTime", ""))

    for _ in range(KILLS):
        seen = last_time()
        wait_for("a tick to write status", lambda s=seen: last_time() > s, log=op.log_tail)
        time.sleep(rng.uniform(0.0, 0.5))  # ticks are 0.5 s apart: this lands inside or between ticks
        op.stop(sig_kill=True)
        op = operators.start(speed=SPEED)
    final_last = status(cluster, namespace, "restart")["accounting"]["lastTime"]
    st = wait_for(
        "the restarted operator to account again",
        lambda: (s := status(cluster, namespace, "restart"))["accounting"]["lastTime"] > final_last and s,
        log=op.log_tail,
    )
    elapsed = (_t(st["accounting"]["lastTime"]) - _t(st["acceptedTime"])).total_seconds()
    assert elapsed > 0
    most = WATTS * elapsed  # one replica running every replayed second since acceptance
    energy = float(st["energyJoules"])
    assert energy <= most * 1.001, (
        f"energy {energy:.0f} J > {most:.0f} J possible: an interval was counted twice"
    )
    assert energy >= most * 0.5, f"energy {energy:.0f} J of {most:.0f} J: intervals were lost across restarts"
    grams = float(st["emissionsGrams"])
    assert grams <= energy / 3.6e6 * INTENSITY * 1.001 + 0.001
    assert grams >= energy / 3.6e6 * INTENSITY * 0.999 - 0.001
    assert [j["metadata"]["name"] for j in get_json(cluster, namespace, "jobs")["items"]] == ["restart"]
    assert reasons(cluster, namespace, "restart").count("JobCreated") == 1
