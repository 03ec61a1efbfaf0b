"""The operator pauses, evicts and resumes the real trainer image on the real node.

A host `gridwise operator run` drives CarbonAwareJobs whose trainer pods train on CPU with a
checkpoint PVC (a local PV). The dirty period is replayed by a local Electricity Maps stand-in
the moment the trainer has made progress, so the pause lands mid-run on any machine. Every run
is compared with the same training uninterrupted, in the same image on the same node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridwise.devcluster import Cluster
from gridwise.devnode import RealNode
from tests.cluster.harness import OperatorProcess, get_json, wait_for
from tests.node.carbon_server import CarbonServer
from tests.node.trainer_support import (
    checkpoints,
    create_carbon_secret,
    job_conditions,
    live_pods,
    local_volume,
    logs,
    pods_of,
    resolve_trainer_image,
    resumed_at,
    run_baseline,
    state_dict_equal,
    trainer_caj,
)

pytestmark = [pytest.mark.node, pytest.mark.slow]

TOTAL_STEPS = 1200  # long enough that a stop lands mid-run on a quiet machine too
# The trainer's "stopped early after a checkpoint" exit code (gridwise.trainer_contract, branch trainer),
# which the Job's podFailurePolicy ignores.
EXIT_EARLY_STOP = 85
CLEAN, DIRTY = 80.0, 500.0


@pytest.fixture(scope="session")
def trainer_image(node: RealNode) -> str:
    return resolve_trainer_image(node)


@pytest.fixture(scope="session")
def baseline(cluster: Cluster, trainer_image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.pt of an uninterrupted run with the same settings (computed once per session)."""
    ns = f"baseline-{int(time.time())}"
    cluster.kubectl("create", "namespace", ns)
    wait_for(
        "default SA", lambda: cluster.kubectl("-n", ns, "get", "sa", "default", check=False).returncode == 0
    )
    out = run_baseline(cluster, ns, trainer_image, tmp_path_factory.mktemp("baseline"), TOTAL_STEPS, "pr")
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    return out


@pytest.fixture
def carbon() -> Iterator[CarbonServer]:
    with CarbonServer(CLEAN) as server:
        yield server


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, tmp_path: Path, carbon: CarbonServer
) -> Iterator[OperatorProcess]:
    create_carbon_secret(cluster, namespace)
    op = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        tick_seconds=0.5,
        lease_namespace=namespace,
        extra_env={"GRIDWISE_CARBON_ALLOWED_URLS": carbon.url},
        extra_args=[
            "--namespace", namespace,
            "--signal-ttl-seconds", "1",
            "--signal-min-interval-seconds", "1",
        ],
    ).start()  # fmt: skip
    yield op
    op.stop()


def status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return dict(get_json(cluster, ns, "caj", name).get("status") or {})


def wait_trainer_progress(
    cluster: Cluster, ns: str, name: str, at_least: float, op: OperatorProcess
) -> dict[str, Any]:
    """The operator's own scrape of the trainer pod (pod IP over the bridge) reports progress."""
    st: dict[str, Any] = wait_for(
        f"trainer progress >= {at_least}",
        lambda: (
            (s := status(cluster, ns, name)).get("progressSource") == "trainer"
            and s.get("progress", 0) >= at_least
            and s
        ),
        timeout=300,
        interval=0.5,
        log=op.log_tail,
    )
    return st


def test_dirty_period_pauses_the_trainer_which_resumes_from_its_checkpoint(
    cluster: Cluster,
    node: RealNode,
    namespace: str,
    tmp_path: Path,
    trainer_image: str,
    baseline: Path,
    carbon: CarbonServer,
    operator: OperatorProcess,
) -> None:
    ckpt = tmp_path / "ckpt"
    local_volume(cluster, node, namespace, "ckpt", ckpt)
    manifest = trainer_caj(
        "pr", image=trainer_image, claim="ckpt", carbon_url=carbon.url, total_steps=TOTAL_STEPS
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    st = wait_trainer_progress(cluster, namespace, "pr", 0.2, operator)
    # (d) progress and energy come from the trainer's /metrics, scraped pod to pod.
    assert st["accounting"].get("trainerEnergyJoules", 0) > 0, st
    (first_pod,) = [p["metadata"]["name"] for p in live_pods(cluster, namespace, "pr")]
    # checkpoint-every is huge: any checkpoint now is from an epoch boundary, and the stop must add one.
    before = checkpoints(ckpt)

    carbon.value = DIRTY  # the dirty period starts now
    wait_for(
        "the Job suspended",
        lambda: get_json(cluster, namespace, "job", "pr")["spec"].get("suspend") is True,
        timeout=60,
        log=operator.log_tail,
    )
    wait_for(
        "the trainer pod gone",
        lambda: not pods_of(cluster, namespace, "pr"),
        timeout=60,
        log=operator.log_tail,
    )
    saved = checkpoints(ckpt)
    stop_step = saved[-1]  # the newest: written on SIGTERM (or at the epoch end just before it), mid-run
    assert max(before, default=0) < stop_step < TOTAL_STEPS, (before, saved)
    conds = job_conditions(cluster, namespace, "pr")
    assert conds.get("Suspended") == "True" and "Complete" not in conds and "Failed" not in conds, conds
    j = get_json(cluster, namespace, "job", "pr")["status"]
    assert not j.get("succeeded") and not j.get("failed"), j
    wait_for("phase Paused", lambda: status(cluster, namespace, "pr").get("phase") == "Paused", timeout=30)
    time.sleep(3)  # stays paused: no pod comes back while the grid is dirty
    assert not pods_of(cluster, namespace, "pr") and checkpoints(ckpt) == saved

    carbon.value = CLEAN
    pod = wait_for(
        "a new trainer pod",
        lambda: [
            p["metadata"]["name"]
            for p in live_pods(cluster, namespace, "pr")
            if p["metadata"]["name"] != first_pod
        ],
        timeout=60,
        log=operator.log_tail,
    )[0]
    resumed = wait_for("the resume log line", lambda: resumed_at(logs(cluster, namespace, pod)), timeout=120)
    assert resumed == stop_step, "the trainer continues exactly from the checkpoint the stop wrote"
    final = wait_for(
        "phase Succeeded",
        lambda: (s := status(cluster, namespace, "pr")).get("phase") == "Succeeded" and s,
        timeout=600,
        interval=1,
        log=operator.log_tail,
    )
    assert final["progress"] == pytest.approx(1.0)
    assert job_conditions(cluster, namespace, "pr").get("Complete") == "True"
    assert checkpoints(ckpt)[-1] == TOTAL_STEPS
    assert checkpoints(baseline)[-1] == TOTAL_STEPS
    assert state_dict_equal(ckpt / "model.pt", baseline / "model.pt"), "pause/resume changed the model"


def test_eviction_mid_run_does_not_complete_the_job(
    cluster: Cluster,
    node: RealNode,
    namespace: str,
    tmp_path: Path,
    trainer_image: str,
    baseline: Path,
    carbon: CarbonServer,
    operator: OperatorProcess,
) -> None:
    ckpt = tmp_path / "ckpt"
    local_volume(cluster, node, namespace, "ckpt", ckpt)
    manifest = trainer_caj(
        "ev", image=trainer_image, claim="ckpt", carbon_url=carbon.url, total_steps=TOTAL_STEPS
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    wait_trainer_progress(cluster, namespace, "ev", 0.2, operator)
    (victim,) = [p["metadata"]["name"] for p in live_pods(cluster, namespace, "ev")]
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": victim, "namespace": namespace},
    }
    cluster.kubectl(
        "create", "--raw", f"/api/v1/namespaces/{namespace}/pods/{victim}/eviction", "-f", "-",
        input=json.dumps(eviction),
    )  # fmt: skip

    # The evicted trainer checkpoints and exits with the early-stop code; the Job ignores that
    # failure (podFailurePolicy), so it is neither Complete nor Failed, and a new pod continues.
    def replacement() -> list[str]:
        conds = job_conditions(cluster, namespace, "ev")
        old = [p for p in pods_of(cluster, namespace, "ev") if p["metadata"]["name"] == victim]
        states = [c.get("state") for p in old for c in p["status"].get("containerStatuses", [])]
        # The defect this guards against: an evicted trainer that exits 0 completes the Job.
        assert "Complete" not in conds, f"the Job completed at partial progress after an eviction: {states}"
        names = [p["metadata"]["name"] for p in live_pods(cluster, namespace, "ev")]
        return [n for n in names if n != victim]

    new_pod = wait_for("a replacement pod", replacement, timeout=120, log=operator.log_tail)[0]
    gone = [p for p in pods_of(cluster, namespace, "ev") if p["metadata"]["name"] == victim]
    if gone:  # the Job controller keeps the failed pod; its exit code says "stopped early"
        term = gone[0]["status"]["containerStatuses"][0]["state"].get("terminated") or {}
        assert term.get("exitCode") == EXIT_EARLY_STOP, gone[0]["status"]
    conds = job_conditions(cluster, namespace, "ev")
    assert "Complete" not in conds and "Failed" not in conds, conds
    saved = checkpoints(ckpt)
    assert saved and 0 < saved[-1] < TOTAL_STEPS, saved  # the newest is mid-run: no completion
    resumed = wait_for(
        "the resume log line", lambda: resumed_at(logs(cluster, namespace, new_pod)), timeout=120
    )
    assert resumed == saved[-1]
    wait_for(
        "phase Succeeded",
        lambda: status(cluster, namespace, "ev").get("phase") == "Succeeded",
        timeout=600,
        interval=1,
        log=operator.log_tail,
    )
    assert checkpoints(ckpt)[-1] == TOTAL_STEPS
    assert state_dict_equal(ckpt / "model.pt", baseline / "model.pt"), "eviction/resume changed the model"
