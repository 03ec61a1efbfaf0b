"""Event-driven reaction and write-light status, on the real API server.

The operator's per-job interval is set to a slow safety net (60 s); a grid change must still
be acted on at once (its zone watcher wakes every job in the zone), a planned change must
happen at its time, and a job whose state does not change must not be rewritten.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gridwise.devcluster import Cluster
from tests.cluster.harness import (
    REPLAY_START,
    OperatorProcess,
    Revisions,
    caj_manifest,
    get_json,
    replay_trace,
    wait_for,
)

pytestmark = pytest.mark.cluster
THRESHOLD = {"type": "threshold", "thresholdGramsPerKWh": 300}

SAFETY_TICK_S = 60.0  # far longer than any wait below: only wakeups can explain a prompt reaction
SPEED = 60.0  # one replayed minute per wall second
LEAD_S = 40.0  # wall seconds from the operator's start to the grid change: room for a slow start


@pytest.fixture
def slow_tick_operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Any]:
    started: list[OperatorProcess] = []

    def start(clock_start: Any, anchor: float) -> OperatorProcess:
        op = OperatorProcess(
            cluster.kubeconfig,
            tmp_path / f"operator-{len(started)}.log",
            clock_start=clock_start,
            speed=SPEED,
            tick_seconds=SAFETY_TICK_S,
            # TTL of a replayed day: only the end of the current hour can trigger a re-read.
            extra_args=[
                "--namespace",
                namespace,
                "--signal-ttl-seconds",
                "86400",
                "--clock-anchor",
                str(anchor),
            ],
        )
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()


def _job(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    r = cluster.kubectl("-n", ns, "get", "job", name, "-o", "json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def _suspended(cluster: Cluster, ns: str, name: str) -> bool | None:
    spec = _job(cluster, ns, name).get("spec")
    return None if spec is None else bool(spec.get("suspend"))


def test_a_grid_change_is_acted_on_at_once_not_at_the_next_poll(
    cluster: Cluster, namespace: str, tmp_path: Path, slow_tick_operator: Any
) -> None:
    # Clean until 12:00 of the replay day, dirty after; threshold 300 g/kWh.
    trace = replay_trace(tmp_path / "trace.csv", [100.0] * 12 + [600.0] * 12 + [100.0] * 24)
    change = REPLAY_START + timedelta(hours=12)
    start = change - timedelta(seconds=LEAD_S * SPEED)
    anchor = time.time()
    op = slow_tick_operator(start, anchor)
    manifest = caj_manifest("react", trace=trace, policy=THRESHOLD, complete_within="48h")
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    wait_for("the job running on the clean grid", lambda: _suspended(cluster, namespace, "react") is False,
             timeout=LEAD_S, log=op.log_tail)  # fmt: skip
    change_wall = anchor + LEAD_S
    assert time.time() < change_wall, "the job started too late for the test to mean anything"
    jobs = Revisions(cluster, namespace, "job", "react", '{.spec.suspend}{" "}{.status.active}')
    cajs = Revisions(cluster, namespace, "caj", "react", "{.status.phase}")
    try:
        wait_for("the pause", lambda: _suspended(cluster, namespace, "react") is True,
                 timeout=change_wall - time.time() + 8, interval=0.1, log=op.log_tail)  # fmt: skip
        reacted = time.time() - change_wall
        assert reacted < 8, f"paused {reacted:.1f}s after the grid changed (safety tick {SAFETY_TICK_S:.0f}s)"
        wait_for("the Paused status", lambda: cajs.first(lambda f: f == ["Paused"]) is not None,
                 timeout=20, log=op.log_tail)  # fmt: skip
    finally:
        jobs.close()
        cajs.close()
    wakes = op.samples("gridwise_zone_wakes_total")
    assert wakes and wakes[0][1] >= 1, op.metrics()
    # The status is written once the Job controller counts no active pod: in a mass pause the
    # cluster stops pods before it takes a thousand status writes (drains.py).
    drained = jobs.first(lambda f: f == ["true"])
    running = jobs.first(lambda f: f == ["false", "1"])
    paused = cajs.first(lambda f: f == ["Paused"])
    assert running is not None and drained is not None and paused is not None, jobs.lines
    assert drained < paused, (jobs.lines, cajs.lines)


def test_a_planned_resume_happens_at_its_time(
    cluster: Cluster, namespace: str, tmp_path: Path, slow_tick_operator: Any
) -> None:
    # Dirty until 12:00, clean after: the threshold job waits, and resumes when the hour turns.
    trace = replay_trace(tmp_path / "trace.csv", [600.0] * 12 + [100.0] * 36)
    clean = REPLAY_START + timedelta(hours=12)
    start = clean - timedelta(seconds=LEAD_S * SPEED)
    anchor = time.time()
    op = slow_tick_operator(start, anchor)
    manifest = caj_manifest(
        "resume",
        trace=trace,
        policy=THRESHOLD,
        complete_within="48h",
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    wait_for("the job created and paused", lambda: _suspended(cluster, namespace, "resume") is True,
             timeout=LEAD_S, log=op.log_tail)  # fmt: skip
    clean_wall = anchor + LEAD_S
    wait_for("the resume", lambda: _suspended(cluster, namespace, "resume") is False,
             timeout=clean_wall - time.time() + 8, interval=0.1, log=op.log_tail)  # fmt: skip
    assert time.time() - clean_wall < 8
    assert time.time() - clean_wall > -2, "resumed well before the grid turned clean"


def test_a_job_whose_state_does_not_change_is_not_rewritten(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    # A fast safety tick (0.2 s) re-decides constantly; a paused job on a flat dirty grid must not
    # produce status writes, because nothing a reader uses changes (only the clock moves).
    trace = replay_trace(tmp_path / "trace.csv", [600.0] * 48)
    op = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        clock_start=REPLAY_START + timedelta(minutes=1),
        speed=1.0,
        tick_seconds=0.2,
        extra_args=["--namespace", namespace],
    ).start()
    try:
        manifest = caj_manifest(
            "quiet",
            trace=trace,
            policy=THRESHOLD,
            complete_within="40h",
        )
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
        wait_for("a paused status", lambda: (get_json(cluster, namespace, "caj", "quiet").get("status") or {})
                 .get("phase") == "Paused", timeout=20, log=op.log_tail)  # fmt: skip
        time.sleep(2)  # let the first writes settle
        before = get_json(cluster, namespace, "caj", "quiet")["metadata"]["resourceVersion"]
        ticks_before = _reconciles(op)
        time.sleep(6)
        after = get_json(cluster, namespace, "caj", "quiet")["metadata"]["resourceVersion"]
        ticks = _reconciles(op) - ticks_before
        assert ticks >= 10, f"the operator reconciled only {ticks} times in 6 s; the test proves nothing"
        assert before == after, f"status rewritten though nothing changed ({ticks} reconciles)"
    finally:
        op.stop()


def _reconciles(op: OperatorProcess) -> float:
    counts = op.samples("gridwise_reconcile_duration_seconds_count")
    return counts[0][1] if counts else 0.0
