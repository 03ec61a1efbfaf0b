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
from gridwise.trainer_contract import EXIT_EARLY_STOP, METRIC_INTENSITY
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


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


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
    # While paused nothing was emitted: every gram was emitted in clean hours (the totals are unrounded).
    assert st["emissionsGrams"] <= st["energyJoules"] / 3.6e6 * 80.0 * (1 + 1e-9)


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
        # Work counts only once pods run. At 1200x replay the ~2-3 s a kwok pod takes to be scheduled
        # and started is ~40-60 replay minutes: the restart cost a user states for such a job.
        policy={"type": "threshold", "thresholdGramsPerKWh": 200, "switchingCostMinutes": 60},
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
        url = f"http://127.0.0.1:{server.server_port}"
        # Allow-listed at the operator, with the job's own key: the outage is the provider's 503,
        # not a refusal of the override (tests/cluster/test_security.py covers those).
        op = operator_factory(extra_env={"GRIDWISE_CARBON_ALLOWED_URLS": url})
        cluster.kubectl(
            "-n", namespace, "create", "secret", "generic", "em-key",
            "--from-literal=ELECTRICITYMAPS_API_KEY=test-key-never-logged",
        )  # fmt: skip
        trace = trace_from(tmp_path, [100.0])
        carbon = {
            "provider": "electricitymaps",
            "zone": "ES",
            "baseURL": url,
            "secretRef": {"name": "em-key"},
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
        # 4 GPU-hours in 24 h fit at 1 replica: an outage runs the job as its deadline requires,
        # not at max replicas forever.
        assert st["replicas"] == 1
        assert condition(st, "CarbonSignalStale")["reason"] == "NoUsableSignal"
        assert "HTTP 503" in condition(st, "CarbonSignalStale")["message"], "the provider was reached"
        assert condition(st, "DeadlineAtRisk")["status"] == "Unknown", "no plan: never 'OnTrack'"
        warnings = [e for e in events(cluster, namespace, "outage") if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings].count("CarbonSignalStale") == 1, "a Warning once"
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
    cond = condition(st, "Failed")
    assert cond["status"] == "True" and cond["reason"] == "InvalidSpec" and "already past" in cond["message"]
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
        lambda: (
            condition(s := status(cluster, namespace, "mine"), "Reconciled").get("reason") == "JobConflict"
            and s
        ),
        log=op.log_tail,
    )
    assert st["phase"] == "Pending", "not Failed for good: the job runs once the foreign Job is gone"
    assert reasons(cluster, namespace, "mine").count("JobConflict") == 1
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
        # b was Ready all along (a standby can serve): leadership shows in the Lease and the gauge.
        wait_for(
            "b to hold the Lease",
            lambda: (
                get_json(cluster, namespace, "lease", "gridwise-operator")["spec"].get("holderIdentity")
                == "replica-b"
            ),
            timeout=30,
            log=b.log_tail,
        )
        wait_for("b's leader gauge", lambda: "gridwise_operator_leader 1.0" in b.metrics(), log=b.log_tail)
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
                ((s := status(cluster, namespace, "scraped"))["accounting"].get("trainerEnergyJoules") or 0)
                > first
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
    # SIGTERM before the last step: checkpointed and "stopped early", which the Job's podFailurePolicy
    # ignores; 0 would have completed the Job at partial progress.
    assert trainer.returncode == EXIT_EARLY_STOP, err.decode()[-2000:]


def test_an_operator_run_trainer_reports_the_intensity_of_the_jobs_status(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    """Issue 14: the real trainer, started with the env the operator put in the Job, reads the
    operator's own reading (GRIDWISE_CARBON_URL -> GET /v1/signal/<ns>/<name>) and exports the
    intensity the CarbonAwareJob's status shows; no --carbon-intensity, no provider credentials."""
    import os
    import re
    import subprocess
    import sys
    import urllib.request

    from gridwise.devcluster import free_port

    port, http_port = free_port(), free_port()
    # The operator runs on the host: the URL it hands the Job must reach it from the host's trainer.
    op = operator_factory(
        http_port=http_port,
        extra_args=(
            "--trainer-metrics-port", str(port), "--signal-url", f"http://127.0.0.1:{http_port}",
        ),
    )  # fmt: skip
    trace = trace_from(tmp_path, [217.5] * 48, history=217.5)
    cluster.kubectl(
        "-n", namespace, "apply", "-f", "-",
        input=caj_manifest("signal", trace=trace, work_gpu_hours=500, complete_within="30d",
                           policy={"type": "agnostic"}),
    )  # fmt: skip
    wait_for("a running pod", lambda: running_pods(cluster, namespace, "signal"), log=op.log_tail)
    created = job(cluster, namespace, "signal")
    assert created is not None
    (container,) = created["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    url = env["GRIDWISE_CARBON_URL"]
    assert url == f"http://127.0.0.1:{http_port}/v1/signal/{namespace}/signal"
    assert not [k for k in env if k.startswith("GRIDWISE_CARBON") and k != "GRIDWISE_CARBON_URL"]
    # The Job's GRIDWISE_* env as the pod gets it; only paths and ports are the host's.
    trainer_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GRIDWISE_")},
        **{k: v for k, v in env.items() if k.startswith("GRIDWISE_")},
        "GRIDWISE_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "GRIDWISE_METRICS_PORT": str(port),
        "GRIDWISE_TOTAL_STEPS": "1000000",
        "GRIDWISE_CARBON_POLL_SECONDS": "1",
    }
    trainer = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gridwise-trainer")),
            "--model", "mlp", "--checkpoint-every", "100000", "--eval-every", "0", "--log-every", "0",
        ],
        env=trainer_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    metric = re.compile(rf'^{METRIC_INTENSITY}\{{signal_type="(\w+)"\}} (\S+)$', re.M)

    def exported() -> tuple[str, float] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                found = metric.search(resp.read().decode())
        except OSError:
            return None  # not serving yet
        return (found.group(1), float(found.group(2))) if found else None

    try:
        st = wait_for(
            "the job's status intensity",
            lambda: (s := status(cluster, namespace, "signal")).get("carbonIntensity") and s,
            log=op.log_tail,
        )
        carbon = st["carbonIntensity"]
        assert carbon["gramsPerKWh"] > 0 and not carbon["stale"]
        signal_type, grams = wait_for(
            "the trainer's intensity metric to equal the status",
            lambda: (e := exported()) and e[1] == carbon["gramsPerKWh"] and e,
            timeout=90,
            log=lambda: f"trainer exported {exported()!r}, status {carbon!r}\n{op.log_tail()}",
        )
        assert grams == status(cluster, namespace, "signal")["carbonIntensity"]["gramsPerKWh"]
        assert signal_type == carbon["signalType"]
        # The operator's own answer, as the trainer read it.
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc = json.loads(resp.read())
        assert (doc["gramsPerKWh"], doc["signalType"], doc["zone"]) == (grams, signal_type, "XX")
    finally:
        trainer.terminate()
        _, err = trainer.communicate(timeout=60)
    assert trainer.returncode == EXIT_EARLY_STOP, err.decode()[-2000:]
    assert b"carbon intensity configured" not in err, "the trainer was told where the signal is"


def test_kubectl_wait_for_complete_and_conventional_conditions(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    """The summary condition works with kubectl wait; the API server accepts every condition we write."""
    op = operator_factory()
    trace = trace_from(tmp_path, [100.0] * 48)
    cluster.kubectl(
        "-n", namespace, "apply", "-f", "-",
        input=caj_manifest("done", trace=trace, work_gpu_hours=500, complete_within="30d",
                           policy={"type": "agnostic"}),
    )  # fmt: skip
    pod = wait_for("a running pod", lambda: running_pods(cluster, namespace, "done"), log=op.log_tail)[0]
    st = status(cluster, namespace, "done")
    for c in st["conditions"]:
        assert c["observedGeneration"] == 1 and c["reason"] and c["lastTransitionTime"]
    assert condition(st, "Complete")["status"] == "False"
    # The trainer finishes: kwok completes the pod when asked, the Job completes.
    cluster.kubectl(
        "-n", namespace, "annotate", "pod", pod["metadata"]["name"], "gridwise.dev/kwok-complete=true"
    )  # fmt: skip
    cluster.kubectl(
        "-n", namespace, "wait", "--for=condition=Complete", "caj/done", "--timeout=60s"
    )  # fmt: skip
    st = status(cluster, namespace, "done")
    assert st["phase"] == "Succeeded" and condition(st, "Failed")["status"] == "False"
    assert "JobSucceeded" in reasons(cluster, namespace, "done")
    # A status the schema does not describe is pruned, and a non-CamelCase reason is refused.
    bad = json.dumps({"status": {"conditions": [{**condition(st, "Complete"), "reason": "not camel case!"}]}})
    r = cluster.kubectl(
        "-n", namespace, "patch", "caj", "done", "--subresource=status", "--type=merge", "-p", bad,
        check=False,
    )  # fmt: skip
    assert r.returncode != 0 and "reason" in r.stderr


def test_an_externally_deleted_job_is_recreated_with_a_warning(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    op = operator_factory()
    trace = trace_from(tmp_path, [100.0] * 48)
    cluster.kubectl(
        "-n", namespace, "apply", "-f", "-",
        input=caj_manifest("del", trace=trace, work_gpu_hours=500, complete_within="30d",
                           policy={"type": "agnostic"}),
    )  # fmt: skip
    wait_for("running", lambda: status(cluster, namespace, "del").get("phase") == "Running", log=op.log_tail)
    first = job(cluster, namespace, "del")
    assert first is not None
    cluster.kubectl("-n", namespace, "delete", "job", "del", "--wait=true", "--timeout=60s")
    again = wait_for(
        "a new Job",
        lambda: (
            (j := job(cluster, namespace, "del")) and j["metadata"]["uid"] != first["metadata"]["uid"] and j
        ),
        log=op.log_tail,
    )
    assert again["metadata"]["ownerReferences"][0]["kind"] == "CarbonAwareJob"
    evs = [e for e in events(cluster, namespace, "del") if e["reason"] == "JobMissing"]
    assert evs and evs[0]["type"] == "Warning" and "last checkpoint" in evs[0]["message"]
    assert reasons(cluster, namespace, "del").count("JobCreated") == 1, "a recreation is not a creation"
    wait_for("running again", lambda: status(cluster, namespace, "del").get("phase") == "Running")


def test_a_job_that_lost_its_owner_reference_is_adopted(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    op = operator_factory()
    trace = trace_from(tmp_path, [100.0] * 48)
    cluster.kubectl(
        "-n", namespace, "apply", "-f", "-",
        input=caj_manifest("orphan", trace=trace, work_gpu_hours=500, complete_within="30d",
                           policy={"type": "agnostic"}),
    )  # fmt: skip
    wait_for(
        "running", lambda: status(cluster, namespace, "orphan").get("phase") == "Running", log=op.log_tail
    )
    cluster.kubectl(
        "-n", namespace, "patch", "job", "orphan", "--type=json",
        "-p", '[{"op":"remove","path":"/metadata/ownerReferences"}]',
    )  # fmt: skip
    wait_for(
        "the owner reference back",
        lambda: ((job(cluster, namespace, "orphan") or {}).get("metadata") or {}).get("ownerReferences"),
        log=op.log_tail,
    )
    evs = [e for e in events(cluster, namespace, "orphan") if e["reason"] == "JobOrphaned"]
    assert evs and evs[0]["type"] == "Warning"
    st = wait_for(
        "reconciled again",
        lambda: (
            condition(s := status(cluster, namespace, "orphan"), "Reconciled").get("status") == "True" and s
        ),
        log=op.log_tail,
    )
    assert st["phase"] == "Running"
    # Deleting the CarbonAwareJob now takes the adopted Job with it: it is not left running unobserved.
    cluster.kubectl("-n", namespace, "delete", "caj", "orphan", "--timeout=60s")
    wait_for("the Job garbage-collected", lambda: job(cluster, namespace, "orphan") is None, timeout=60)


def test_raising_max_replicas_across_the_elastic_boundary_rebuilds_the_job(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    """1 -> 3 replicas needs an Indexed Job and a headless Service: the Job is rebuilt, not patched."""
    op = operator_factory()
    trace = trace_from(tmp_path, [100.0] * 48)
    manifest = caj_manifest("grow", trace=trace, work_gpu_hours=500, complete_within="30d",
                            policy={"type": "agnostic"})  # fmt: skip
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    wait_for("running", lambda: status(cluster, namespace, "grow").get("phase") == "Running", log=op.log_tail)
    before = job(cluster, namespace, "grow")
    assert before is not None and before["spec"].get("completionMode") == "NonIndexed"
    cluster.kubectl(
        "-n", namespace, "patch", "caj", "grow", "--type=merge", "-p", '{"spec":{"replicas":{"max":3}}}'
    )  # fmt: skip
    st = wait_for(
        "generation 2 acted on",
        lambda: (
            (s := status(cluster, namespace, "grow")).get("observedGeneration") == 2
            and s.get("phase") == "Running"
            and s
        ),
        timeout=90,
        log=op.log_tail,
    )
    after = job(cluster, namespace, "grow")
    assert after is not None and after["metadata"]["uid"] != before["metadata"]["uid"]
    assert after["spec"]["completionMode"] == "Indexed" and after["spec"]["parallelism"] == 3
    assert after["metadata"]["annotations"]["gridwise.dev/generation"] == "2"
    assert cluster.kubectl("-n", namespace, "get", "service", "grow", check=False).returncode == 0
    assert condition(st, "SpecApplied")["status"] == "True"
    assert condition(st, "Reconciled")["status"] == "True", "no tick failed along the way"
    rs = reasons(cluster, namespace, "grow")
    assert "SpecChanged" in rs and "JobRecreated" in rs and "JobMissing" not in rs
    assert "JobPatchFailed" not in rs


def test_a_missing_secret_does_not_keep_the_job_suspended(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    op = operator_factory()
    trace = trace_from(tmp_path, [100.0])
    carbon = {"provider": "electricitymaps", "zone": "ES", "secretRef": {"name": "no-such-secret"}}
    manifest = caj_manifest("nosecret", trace=trace, max_replicas=2, carbon=carbon)
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    st = wait_for(
        "running without a signal",
        lambda: (s := status(cluster, namespace, "nosecret")).get("phase") == "Running" and s,
        log=op.log_tail,
    )
    cond = condition(st, "CarbonSignalStale")
    assert cond["status"] == "True" and "Secret no-such-secret not found" in cond["message"]
    j = job(cluster, namespace, "nosecret")
    assert j is not None and j["spec"]["suspend"] is False


DENY_STATUS = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: deny-caj-status-NS}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [gridwise.dev]
        apiVersions: ["*"]
        operations: [UPDATE]
        resources: [carbonawarejobs/status]
  validations:
    - expression: "object.metadata.namespace != 'NS'"
      message: status writes are denied by the test
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: deny-caj-status-NS}
spec:
  policyName: deny-caj-status-NS
  validationActions: [Deny]
"""


def test_a_denied_status_write_does_not_stop_the_reconcile_timer(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Any
) -> None:
    """kopf ends a timer whose own status patch gets a 4xx; the operator writes status itself and retries."""
    op = operator_factory()
    trace = trace_from(tmp_path, [100.0] * 48)
    cluster.kubectl(
        "-n", namespace, "apply", "-f", "-",
        input=caj_manifest("denied", trace=trace, work_gpu_hours=500, complete_within="30d",
                           policy={"type": "agnostic"}),
    )  # fmt: skip
    wait_for(
        "running", lambda: status(cluster, namespace, "denied").get("phase") == "Running", log=op.log_tail
    )
    policy = DENY_STATUS.replace("NS", namespace)
    cluster.kubectl("apply", "-f", "-", input=policy)
    try:
        wait_for(
            "a denied status write in the operator log",
            lambda: "status write failed" in op.log_tail(200) and "denied by the test" in op.log_tail(200),
            timeout=60,
            log=op.log_tail,
        )
        frozen = status(cluster, namespace, "denied")["accounting"]["lastTime"]
    finally:
        cluster.kubectl("delete", "-f", "-", input=policy, check=False)
    wait_for(
        "status written again",
        lambda: status(cluster, namespace, "denied")["accounting"]["lastTime"] != frozen,
        timeout=60,
        log=op.log_tail,
    )
    assert status(cluster, namespace, "denied")["phase"] == "Running"
