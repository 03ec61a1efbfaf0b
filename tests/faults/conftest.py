"""Shared wiring for the fault-injection suite: real operators, a real control plane, real faults.

Every test here injects one fault a production operator meets (SIGKILL, a second replica, the API
server gone, the carbon provider gone, the trainer killed mid-write, RBAC denying a write) and
asserts what a user would check afterwards: the deadline, the totals, the conditions and Events.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gridwise.devcluster import Cluster
from tests.cluster.harness import REPLAY_START, OperatorProcess, events, get_json

T0 = REPLAY_START
WATTS = 400.0  # caj_manifest's powerPerReplicaWatts


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return dict(get_json(cluster, ns, "caj", name).get("status") or {})


def job(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    r = cluster.kubectl("-n", ns, "get", "job", name, "-o", "json", check=False)
    if r.returncode != 0:
        return None
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def condition(st: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in st.get("conditions") or [] if c.get("type") == type_), None)


def reasons(cluster: Cluster, ns: str, name: str) -> list[str]:
    return [e["reason"] for e in events(cluster, ns, name)]


def leader_gauge(op: OperatorProcess) -> float | None:
    """`gridwise_operator_leader` from the replica's /metrics (None while it does not answer)."""
    code, body = op.get("/metrics")
    if code != 200:
        return None
    for line in body.splitlines():
        if line.startswith("gridwise_operator_leader "):
            return float(line.split()[1])
    return None


class Operators:
    """Starts `gridwise operator run` children that share one replay clock anchor, so a restarted
    operator continues the same replayed time instead of starting it over."""

    def __init__(self, cluster: Cluster, namespace: str, tmp_path: Path) -> None:
        self.cluster, self.namespace, self.tmp_path = cluster, namespace, tmp_path
        self.anchor = time.time()
        self.started: list[OperatorProcess] = []

    def replay_now(self, speed: float) -> float:
        """Seconds of replayed time since T0, as every operator started here sees it."""
        return (time.time() - self.anchor) * speed

    def replayed(self, wall: float, speed: float) -> datetime:
        """The replayed time at Unix time `wall`, on the clock every operator started here runs."""
        return T0 + timedelta(seconds=(wall - self.anchor) * speed)

    def start(
        self,
        *,
        speed: float = 600.0,
        kubeconfig: Path | None = None,
        extra_args: tuple[str, ...] = (),
        wait_ready: bool = True,
        **kwargs: Any,
    ) -> OperatorProcess:
        op = OperatorProcess(
            kubeconfig or self.cluster.kubeconfig,
            self.tmp_path / f"operator-{len(self.started)}.log",
            clock_start=T0,
            speed=speed,
            lease_namespace=self.namespace,
            extra_args=["--namespace", self.namespace, "--clock-anchor", str(self.anchor), *extra_args],
            **kwargs,
        )
        self.started.append(op)
        return op.start(wait_ready=wait_ready)

    def stop_all(self) -> None:
        for op in self.started:
            op.stop(sig_kill=True)


@pytest.fixture
def operators(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Operators]:
    ops = Operators(cluster, namespace, tmp_path)
    yield ops
    ops.stop_all()


@dataclass
class PodRun:
    """When one pod of the job ran, in wall (Unix) seconds."""

    name: str
    started: float  # the pod's status.startTime: 1 s resolution, so at or before the real start
    seen_running: float  # the first poll that saw it Running: at or after the real start
    last_running: float  # the last poll that saw it Running
    stopped: float | None = None  # the first poll that saw it stopped (finished, terminating or gone)


def exported_energy(op: OperatorProcess, namespace: str, name: str) -> float | None:
    """`gridwise_job_energy_joules_total` of one job from the operator's /metrics (None if absent)."""
    code, body = op.get("/metrics")
    if code != 200:
        return None
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "gridwise_job_energy_joules_total" and sample.labels == {
                "namespace": namespace,
                "carbonawarejob": name,
            }:
                return float(sample.value)
    return None


class Trainer:
    """What the training container does, for kwok's fake pods (they run until told to stop).

    A thread polls the job's pods and its CarbonAwareJob. A Running pod trains at 1 GPU-hour per
    replayed hour (single-replica jobs: the planner's throughput at 1 replica); once the pods have
    run `gpu_hours` between them (counted from when a poll first saw each Running, so never early),
    the trainer "exits 0": kwok completes the pods and the Job completes as a real one would.

    Its record of when each pod ran is the expectation the operator's totals are checked against;
    it is independent of the operator (the pods' own timestamps and what the polls saw). Every
    status it sees is kept too, so a total that ran ahead of the pods at any moment is caught, not
    only at the end (where the model's cap at the work needed would hide an interval booked twice).
    """

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        name: str,
        operators: Operators,
        *,
        speed: float,
        gpu_hours: float,
        poll_s: float = 0.4,
    ) -> None:
        self.cluster, self.namespace, self.name, self.operators = cluster, namespace, name, operators
        self.speed, self.gpu_hours, self.poll_s = speed, gpu_hours, poll_s
        self.pods: dict[str, PodRun] = {}
        self.samples: list[dict[str, Any]] = []  # every distinct status a poll saw
        self.exported: list[tuple[float, float]] = []  # (wall time, energyJoules) seen on /metrics
        self.finished_at: float | None = None  # wall time the trainer exited 0 (asked kwok)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"trainer-{name}", daemon=True)

    def __enter__(self) -> Trainer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def replica_seconds(self, until: float | None = None, *, early: bool = True) -> float:
        """Replayed replica-seconds the pods ran up to wall time `until` (default: as far as seen).

        `early` counts each pod from its startTime to the poll that saw it stopped (the most it can
        have run); otherwise from the first poll that saw it Running to the last (the least).
        """
        total = 0.0
        for run in self.pods.values():
            if early:
                start, end = run.started, run.stopped if run.stopped is not None else run.last_running
            else:
                start, end = run.seen_running, run.last_running
            if until is not None:
                end = min(end, until)
            total += max(0.0, end - start)
        return total * self.speed

    def record_exported(self, op: OperatorProcess) -> float | None:
        """The job's energy as the operator exports it now (its in-memory status), kept for the check."""
        now = time.time()
        joules = exported_energy(op, self.namespace, self.name)
        if joules is not None:
            self.exported.append((now, joules))
        return joules

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception as exc:  # the API server may be down (an outage test): keep polling
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            self._stop.wait(self.poll_s)

    def _poll(self) -> None:
        r = self.cluster.kubectl(
            "-n", self.namespace, "get", "carbonawarejobs,pods", "-o", "json", "--request-timeout=5s",
            check=False,
        )  # fmt: skip
        now = time.time()
        if r.returncode != 0:
            return
        items = json.loads(r.stdout)["items"]
        for item in items:
            if item["kind"] == "CarbonAwareJob" and item["metadata"]["name"] == self.name:
                st = item.get("status") or {}
                if st.get("accounting") and (not self.samples or self.samples[-1] != st):
                    self.samples.append(st)
        running = set()
        for pod in items:
            if pod["kind"] != "Pod" or (pod["metadata"].get("labels") or {}).get("job-name") != self.name:
                continue
            meta, status = pod["metadata"], pod.get("status") or {}
            if status.get("phase") != "Running" or meta.get("deletionTimestamp"):
                continue
            uid = meta["uid"]
            running.add(uid)
            run = self.pods.get(uid)
            if run is None:
                started = parse_time(status["startTime"]).timestamp() if status.get("startTime") else now
                self.pods[uid] = PodRun(meta["name"], min(started, now), now, now)
            else:
                run.last_running = now
        for uid, run in self.pods.items():
            if uid not in running and run.stopped is None:
                run.stopped = now
        if self.finished_at is None and self.replica_seconds(early=False) >= self.gpu_hours * 3600.0:
            for uid in running:
                self.cluster.kubectl(
                    "-n", self.namespace, "annotate", "pod", self.pods[uid].name,
                    "gridwise.dev/kwok-complete=true", "--overwrite",
                )  # fmt: skip
            self.finished_at = now


def assert_finished_by_the_deadline(
    cluster: Cluster, namespace: str, name: str, operators: Operators, speed: float, st: dict[str, Any]
) -> None:
    """The job Succeeded (Complete=True, JobComplete), and both the CarbonAwareJob's Complete condition
    and the Job's own completionTime are no later than status.deadline on the replayed clock."""
    assert st.get("phase") == "Succeeded", st
    complete = condition(st, "Complete")
    assert complete is not None and complete["status"] == "True" and complete["reason"] == "JobComplete", st
    failed = condition(st, "Failed")
    assert failed is not None and failed["status"] == "False", st
    risk = condition(st, "DeadlineAtRisk")
    assert risk is not None and (risk["status"], risk["reason"]) == ("False", "Finished"), st
    deadline = parse_time(st["deadline"])
    assert parse_time(complete["lastTransitionTime"]) <= deadline, (complete, st["deadline"])
    j = job(cluster, namespace, name)
    assert j is not None and j["status"].get("completionTime"), j
    completed = operators.replayed(parse_time(j["status"]["completionTime"]).timestamp(), speed)
    assert completed <= deadline, (completed, deadline)


def timeline(trainer: Trainer) -> str:
    """Every status the trainer saw, one line each: where a total stalled or jumped, for a failure."""
    lines = []
    for s in trainer.samples:
        acc = s.get("accounting") or {}
        at = (parse_time(acc["lastTime"]) - T0).total_seconds() / trainer.speed
        lines.append(
            f"  wall +{at:7.2f}s {s.get('phase', '?'):<10} energy {float(s.get('energyJoules', 0)):>10.0f} J "
            f"working {acc.get('workingPods')} drawing {acc.get('drawingPods')} "
            f"pods seen {trainer.replica_seconds(trainer.operators.anchor + at):.0f} replica-s"
        )
    return "\n".join(lines)


def assert_not_behind_the_pods(trainer: Trainer, st: dict[str, Any], slack_wall_s: float = 1.0) -> None:
    """At the status `st`, energy is at least what the pods had surely run by its lastTime.

    The final check alone can miss an interval counted short if a later one is counted long.
    """
    at = (parse_time(st["accounting"]["lastTime"]) - T0).total_seconds() / trainer.speed
    ran = trainer.replica_seconds(trainer.operators.anchor + at, early=False)
    least = ran - 2 * slack_wall_s * trainer.speed
    energy = float(st["energyJoules"])
    assert energy >= WATTS * least, (
        f"energy {energy:.0f} J at {st['accounting']['lastTime']}: the pods had run at least {least:.0f} "
        f"replica-seconds by then at {WATTS:.0f} W; the statuses the trainer saw:\n{timeline(trainer)}"
    )


def assert_totals_match_the_pods(
    trainer: Trainer, st: dict[str, Any], *, grams_per_kwh: float, slack_wall_s: float = 1.0
) -> None:
    """Energy, work and emissions equal what the pods' run gives, never more at any moment.

    The expectation is the job's model (one replica draws WATTS and does 1 GPU-hour per hour;
    the trainer exits at its last step, so the work needed caps both), applied to the replica-seconds
    the Trainer saw the pods run, on a constant grid. Tolerance: `slack_wall_s` wall seconds of one
    replica (at 600x, 1 s is 10 replayed minutes) above the most the pods can have run, and twice
    that below the least: pod timestamps have 1 s resolution, polls and ticks are 0.4-0.5 s apart,
    and the operator books a change at the midpoint between two ticks. Measured, the operator's
    energy stays 0.5-1.5 s of one replica below that bound, so an interval booked twice is caught
    once it is longer than about 2 wall seconds (an operator restart's gap is longer).
    """
    slack = slack_wall_s * trainer.speed  # replayed seconds
    need = trainer.gpu_hours * 3600.0
    # At every status seen: not more than the pods can have run until its lastTime.
    for s in trainer.samples:
        at = (parse_time(s["accounting"]["lastTime"]) - T0).total_seconds() / trainer.speed
        most = trainer.replica_seconds(trainer.operators.anchor + at) + slack
        assert float(s["energyJoules"]) <= WATTS * most, (
            f"energy {s['energyJoules']} J at {s['accounting']['lastTime']} is more than {WATTS:.0f} W "
            f"for the {most:.0f} replica-seconds the pods can have run: an interval was counted twice"
        )
        assert float(s["accounting"]["workDoneGPUHours"]) * 3600.0 <= most, (s["accounting"], most)
    # The same for what the operator exported while it held the status in memory.
    for wall, joules in trainer.exported:
        most = trainer.replica_seconds(wall) + slack
        assert joules <= WATTS * most, f"exported energy {joules} J > {WATTS:.0f} W x {most:.0f} s"
    # At the end: what the pods ran, up to the work they needed.
    least = min(trainer.replica_seconds(early=False), need) - 2 * slack
    most = min(trainer.replica_seconds(early=True), need) + slack
    energy = float(st["energyJoules"])
    assert WATTS * least <= energy <= WATTS * most, (
        f"energy {energy:.0f} J; the pods ran {least:.0f}..{most:.0f} replica-seconds of work "
        f"at {WATTS:.0f} W; the statuses the trainer saw:\n{timeline(trainer)}"
    )
    work = float(st["accounting"]["workDoneGPUHours"]) * 3600.0
    assert least <= work <= most, (work, least, most)
    grams = float(st["emissionsGrams"])
    expected = energy / 3.6e6 * grams_per_kwh
    assert abs(grams - expected) <= 0.001 * expected + 0.01, (grams, expected)
