"""The live operator against the real control plane and kwok GPU nodes, on replayed traces.

Each test runs `gridwise operator run` as a child process with a replay clock, applies
CarbonAwareJobs, and watches the real Job, its pods, Events and status.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gridwise.devcluster import Cluster
from tests.cluster.harness import (
    REPLAY_START,
    OperatorProcess,
    caj_manifest,
    events,
    get_json,
    replay_trace,
    wait_for,
)

pytestmark = pytest.mark.cluster

T0 = REPLAY_START


def trace_from(tmp_path: Path, future: list[float], history: float = 100.0) -> Path:
    return replay_trace(tmp_path / "trace.csv", future, history)


@pytest.fixture
def operator_factory(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Any]:
    started: list[OperatorProcess] = []

    def start(*, speed: float = 600.0, extra_args: tuple[str, ...] = (), **kwargs: Any) -> OperatorProcess:
        n = len(started)
        op = OperatorProcess(
            cluster.kubeconfig,
            tmp_path / f"operator-{n}.log",
            clock_start=T0,
            speed=speed,
            extra_args=["--namespace", namespace, *extra_args],
            lease_namespace=namespace,
            **kwargs,
        )
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()


def job(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    r = cluster.kubectl("-n", ns, "get", "job", name, "-o", "json", check=False)
    if r.returncode != 0:
        return None
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return dict(get_json(cluster, ns, "caj", name).get("status") or {})


def running_pods(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    pods = get_json(cluster, ns, "pods", "-l", f"job-name={name}")["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def reasons(cluster: Cluster, ns: str, name: str) -> list[str]:
    return [e["reason"] for e in events(cluster, ns, name)]


def test_job_pods_run_on_a_kwok_gpu_node(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    op = operator_factory()
    trace = trace_from(tmp_path, [100.0] * 48)
    cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=caj_manifest("gpu", trace=trace, policy={"type": "agnostic"}),
    )
    pods = wait_for("a running pod", lambda: running_pods(cluster, namespace, "gpu"), log=op.log_tail)
    pod = pods[0]
    assert pod["spec"]["nodeName"].startswith("kwok-gpu-")
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["GRIDWISE_JOB_NAME"] == "gpu" and env["GRIDWISE_CHECKPOINT_DIR"] == "/checkpoints"
    j = job(cluster, namespace, "gpu")
    assert j is not None
    owner = j["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "CarbonAwareJob" and owner["controller"] is True
    st = wait_for(
        "status Running", lambda: (s := status(cluster, namespace, "gpu")).get("phase") == "Running" and s
    )
    assert st["replicas"] == 1 and st["carbonIntensity"]["signalType"] == "average"


def test_pauses_on_a_dirty_period_and_resumes_on_a_clean_one(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    # 3 dirty hours, then clean; threshold 200 g/kWh; plenty of slack.
    trace = trace_from(tmp_path, [500.0] * 3 + [80.0] * 45)
    op = operator_factory(speed=600.0)
    manifest = caj_manifest(
        "tp",
        trace=trace,
        work_gpu_hours=2,
        complete_within="30h",
        policy={"type": "threshold", "thresholdGramsPerKWh": 200},
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    paused = wait_for(
        "phase Paused", lambda: status(cluster, namespace, "tp").get("phase") == "Paused", log=op.log_tail
    )
    assert paused
    j = job(cluster, namespace, "tp")
    assert j is not None and j["spec"]["suspend"] is True
    assert not running_pods(cluster, namespace, "tp")
    st = status(cluster, namespace, "tp")
    assert st["carbonIntensity"]["gramsPerKWh"] == 500.0
    wait_for(
        "resume when the grid turns clean",
        lambda: status(cluster, namespace, "tp").get("phase") == "Running",
        timeout=60,
        log=op.log_tail,
    )
    wait_for("a running pod", lambda: running_pods(cluster, namespace, "tp"), log=op.log_tail)
    j = job(cluster, namespace, "tp")
    assert j is not None and j["spec"]["suspend"] is False
    msgs = [e["message"] for e in events(cluster, namespace, "tp")]
    assert any(m.startswith("resume to 1") for m in msgs), msgs
    assert "CarbonIntensity" in reasons(cluster, namespace, "tp")
    st = status(cluster, namespace, "tp")
    assert st["carbonIntensity"]["gramsPerKWh"] == 80.0
    # While paused nothing was emitted: every gram was emitted in clean hours (status keeps 3 decimals).
    assert st["emissionsGrams"] <= st["energyJoules"] / 3.6e6 * 80.0 + 0.0005


def test_deadline_guard_runs_a_job_through_dirty_hours(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    # Always dirty: the threshold alone would pause forever; the deadline guard must start it in time.
    trace = trace_from(tmp_path, [600.0] * 48, history=600.0)
    op = operator_factory(speed=1200.0)
    manifest = caj_manifest(
        "guard",
        trace=trace,
        work_gpu_hours=3,
        max_replicas=2,
        complete_within="6h",
        policy={"type": "threshold", "thresholdGramsPerKWh": 200},
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    wait_for(
        "initial pause", lambda: status(cluster, namespace, "guard").get("phase") == "Paused", log=op.log_tail
    )
    st = wait_for(
        "the deadline guard to run the job",
        lambda: (s := status(cluster, namespace, "guard")).get("phase") == "Running" and s,
        timeout=60,
        log=op.log_tail,
    )
    assert st["replicas"] >= 1
    done = wait_for(
        "the work to finish",
        lambda: (s := status(cluster, namespace, "guard")).get("progress", 0) >= 0.999 and s,
        timeout=60,
        log=op.log_tail,
    )
    finished_at = datetime.fromisoformat(done["accounting"]["lastTime"].replace("Z", "+00:00"))
    deadline = datetime.fromisoformat(done["deadline"].replace("Z", "+00:00"))
    # The work finished on the replay clock before the deadline (one tick of tolerance).
    assert finished_at <= deadline + timedelta(minutes=15), (finished_at, deadline)


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"upstream down")

    def log_message(self, *args: Any) -> None:
        pass


def test_carbon_signal_outage_keeps_the_job_running(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        op = operator_factory(extra_env={"ELECTRICITYMAPS_API_KEY": "test-key-never-logged"})
        trace = trace_from(tmp_path, [100.0])
        carbon = {
            "provider": "electricitymaps",
            "zone": "ES",
            "baseURL": f"http://127.0.0.1:{server.server_port}",
        }
        manifest = caj_manifest(
            "outage", trace=trace, max_replicas=3, policy={"type": "forecast"}, carbon=carbon
        )
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
        st = wait_for(
            "the stale condition",
            lambda: any(
                c["type"] == "CarbonSignalStale" and c["status"] == "True"
                for c in status(cluster, namespace, "outage").get("conditions", [])
            ),
            timeout=60,
            log=op.log_tail,
        )
        assert st
        st = wait_for(
            "running", lambda: (s := status(cluster, namespace, "outage")).get("phase") == "Running" and s
        )
        assert st["replicas"] == 3, "an outage runs the job at max replicas so the deadline holds"
        assert "CarbonSignalStale" in reasons(cluster, namespace, "outage")
        assert "test-key-never-logged" not in op.log_tail(10_000)
    finally:
        server.shutdown()


def test_operator_restart_loses_nothing_and_duplicates_nothing(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    trace = trace_from(tmp_path, [120.0] * 72)
    op = operator_factory(speed=600.0)
    cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=caj_manifest(
            "restart", trace=trace, work_gpu_hours=40, complete_within="60h", policy={"type": "agnostic"}
        ),
    )
    before = wait_for(
        "some accounted energy",
        lambda: (s := status(cluster, namespace, "restart")).get("energyJoules", 0) > 0 and s,
        log=op.log_tail,
    )
    op.stop(sig_kill=True)  # no chance to clean up: the worst case
    op2 = operator_factory(speed=600.0)
    after = wait_for(
        "accounting to continue",
        lambda: (
            (s := status(cluster, namespace, "restart")).get("energyJoules", 0) > before["energyJoules"] and s
        ),
        log=op2.log_tail,
    )
    assert after["accounting"]["workDoneGPUHours"] >= before["accounting"]["workDoneGPUHours"]
    assert after["acceptedTime"] == before["acceptedTime"], "the deadline reference survives a restart"
    jobs = get_json(cluster, namespace, "jobs")["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["restart"]
    assert reasons(cluster, namespace, "restart").count("JobCreated") == 1


def test_deleting_the_job_cleans_up_but_keeps_the_checkpoint_volume(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input="""
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: ckpt}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
""",
    )
    op = operator_factory()
    trace = trace_from(tmp_path, [100.0] * 48)
    manifest = caj_manifest(
        "gone",
        trace=trace,
        policy={"type": "agnostic"},
        extra_spec={"checkpoint": {"volumeClaimName": "ckpt"}},
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    j = wait_for("the Job", lambda: job(cluster, namespace, "gone"), log=op.log_tail)
    volumes = j["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "checkpoints", "persistentVolumeClaim": {"claimName": "ckpt"}}]
    cluster.kubectl("-n", namespace, "delete", "caj", "gone", "--timeout=60s")
    wait_for("the Job to be garbage-collected", lambda: job(cluster, namespace, "gone") is None, timeout=60)
    assert cluster.kubectl("-n", namespace, "get", "pvc", "ckpt", check=False).returncode == 0


def test_a_deadline_already_past_is_rejected_with_a_reason(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    op = operator_factory()
    trace = trace_from(tmp_path, [100.0] * 4)
    manifest = caj_manifest("late", trace=trace).replace(
        "completeWithin: 24h", "deadline: '2001-01-01T00:00:00Z'"
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    st = wait_for(
        "phase Failed",
        lambda: (s := status(cluster, namespace, "late")).get("phase") == "Failed" and s,
        log=op.log_tail,
    )
    cond = next(c for c in st["conditions"] if c["type"] == "InvalidSpec")
    assert "already past" in cond["message"]
    assert job(cluster, namespace, "late") is None, "nothing runs for a job that cannot be valid"
    assert "InvalidSpec" in reasons(cluster, namespace, "late")


def test_a_job_gridwise_does_not_own_is_left_alone(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    foreign = """
apiVersion: batch/v1
kind: Job
metadata: {name: mine}
spec:
  suspend: false
  template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}
"""
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=foreign)
    op = operator_factory()
    trace = trace_from(tmp_path, [900.0] * 4)
    cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=caj_manifest("mine", trace=trace, policy={"type": "threshold", "thresholdGramsPerKWh": 10}),
    )
    st = wait_for(
        "JobConflict",
        lambda: (s := status(cluster, namespace, "mine")).get("phase") == "Failed" and s,
        log=op.log_tail,
    )
    assert any(c["type"] == "JobConflict" for c in st["conditions"])
    j = job(cluster, namespace, "mine")
    assert j is not None and j["spec"]["suspend"] is False, "a foreign Job is never suspended"


def test_kueue_managed_jobs_are_observed_not_toggled(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    op = operator_factory()
    trace = trace_from(tmp_path, [900.0] * 48, history=900.0)
    manifest = caj_manifest("queued", trace=trace, policy={"type": "threshold", "thresholdGramsPerKWh": 100})
    manifest = manifest.replace("name: queued", "name: queued\n  labels: {kueue.x-k8s.io/queue-name: gpu}")
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    j = wait_for("the Job", lambda: job(cluster, namespace, "queued"), log=op.log_tail)
    assert j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    # Kueue admits the Job by unsuspending it: gridwise must not suspend it back, even on a dirty grid.
    cluster.kubectl(
        "-n", namespace, "patch", "job", "queued", "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    st = wait_for(
        "KueueManaged",
        lambda: (s := status(cluster, namespace, "queued")).get("phase") == "Running" and s,
        log=op.log_tail,
    )
    assert any(c["type"] == "KueueManaged" for c in st["conditions"])
    j = job(cluster, namespace, "queued")
    assert j is not None and j["spec"]["suspend"] is False


def test_two_operator_replicas_never_act_twice(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    a = operator_factory(leader_election=True, identity="replica-a")
    b = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "replica-b.log",
        clock_start=T0,
        speed=600.0,
        tick_seconds=0.5,
        leader_election=True,
        identity="replica-b",
        lease_namespace=namespace,
        extra_args=["--namespace", namespace],
    ).start(wait_ready=False)
    try:
        wait_for("b to be a healthy standby", lambda: b.get("/healthz")[0] == 200)
        # A standby is Ready (it can serve); leadership is the gridwise_operator_leader metric.
        wait_for("b to be a ready standby", lambda: b.get("/readyz") == (200, "ready (standby)"))
        assert "gridwise_operator_leader 0.0" in b.metrics()
        lease = get_json(cluster, namespace, "lease", "gridwise-operator")
        assert lease["spec"]["holderIdentity"] == "replica-a"
        trace = trace_from(tmp_path, [100.0] * 48)
        cluster.kubectl(
            "-n",
            namespace,
            "apply",
            "-f",
            "-",
            input=caj_manifest("peer", trace=trace, policy={"type": "agnostic"}),
        )
        wait_for(
            "running", lambda: status(cluster, namespace, "peer").get("phase") == "Running", log=a.log_tail
        )
        a.stop()  # SIGTERM: a releases the Lease, b takes over at once
        b.wait_ready(timeout=30)
        lease = get_json(cluster, namespace, "lease", "gridwise-operator")
        assert lease["spec"]["holderIdentity"] == "replica-b"
        assert reasons(cluster, namespace, "peer").count("JobCreated") == 1
        before = status(cluster, namespace, "peer")["accounting"]["lastTime"]
        wait_for(
            "b to reconcile",
            lambda: status(cluster, namespace, "peer")["accounting"]["lastTime"] != before,
            log=b.log_tail,
        )
        assert f'gridwise_job_replicas{{carbonawarejob="peer",namespace="{namespace}"}} 1.0' in b.metrics()
    finally:
        b.stop()


def test_progress_and_energy_come_from_the_real_trainer(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    """kwok pod IPs are on loopback: a real trainer listening there is what the operator scrapes."""
    import subprocess
    import sys

    from gridwise.devcluster import free_port

    port = free_port()
    op = operator_factory(extra_args=("--trainer-metrics-port", str(port)))
    trace = trace_from(tmp_path, [100.0] * 48)
    cluster.kubectl(
        "-n", namespace, "apply", "-f", "-",
        input=caj_manifest("scraped", trace=trace, work_gpu_hours=500, complete_within="30d",
                           policy={"type": "agnostic"}),
    )  # fmt: skip
    wait_for("a running pod", lambda: running_pods(cluster, namespace, "scraped"), log=op.log_tail)
    trainer = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gridwise-trainer")),
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--total-steps", "1000000", "--model", "mlp",
            "--metrics-port", str(port), "--carbon-intensity", "100", "--job-name", "scraped",
            "--checkpoint-every", "100000", "--eval-every", "0", "--log-every", "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        st = wait_for(
            "progress read from the trainer",
            lambda: (
                (s := status(cluster, namespace, "scraped")).get("progressSource") == "trainer"
                and s["accounting"].get("trainerEnergyJoules")
                and s
            ),
            timeout=90,
            log=op.log_tail,
        )
        first = st["accounting"]["trainerEnergyJoules"]
        later = wait_for(
            "more measured energy",
            lambda: (
                (s := status(cluster, namespace, "scraped"))["accounting"]["trainerEnergyJoules"] > first
                and s
            ),
            timeout=60,
            log=op.log_tail,
        )
        # Progress is the trainer's steps / totalSteps, not the operator's replica-hours estimate:
        # 500 GPU-hours at 1 replica would take weeks of replayed time.
        assert 0 < later["progress"] < 0.9
        assert later["energyJoules"] > 0
        # The trainer's own samples/s at 1 replica becomes the planner's scaling curve.
        assert later["measuredThroughput"]["1"] > 0
    finally:
        trainer.terminate()
        _, err = trainer.communicate(timeout=60)
    assert trainer.returncode == 0, err.decode()[-2000:]
