"""Pure manifest and status builders: what the operator sends to the API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gridwise.accounting import Totals, Usage
from gridwise.api import SpecError, parse_duration, parse_job_spec
from gridwise.k8s.actuator import ANNOTATION_GENERATION, ANNOTATION_SHAPE, Actuator, shape_of
from gridwise.k8s.builders import build_job, build_scale_patch
from gridwise.k8s.handlers import slim_job
from gridwise.k8s.reconciler import finished_at, job_state, pod_info
from gridwise.step import (
    ADOPT,
    CREATE,
    OWNER_NONE,
    OWNER_OTHER,
    OWNER_US,
    SCALE,
    Accounted,
    Action,
    Resource,
    build_status,
)

NOW = datetime(2022, 6, 1, tzinfo=UTC)
BODY: dict[str, Any] = {"metadata": {"name": "train", "namespace": "ml", "uid": "u-1", "labels": {}}}


def spec_dict(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "completeWithin": "36h",
        "replicas": {"min": 1, "max": 1},
        "work": {"gpuHours": 6, "totalSteps": 5000},
        "carbon": {"provider": "static", "staticGramsPerKWh": 100},
        "template": {
            "spec": {"containers": [{"name": "t", "image": "img", "env": [{"name": "X", "value": "1"}]}]}
        },
    }
    base.update(over)
    return base


def test_durations() -> None:
    assert parse_duration("2d12h") == timedelta(days=2, hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    with pytest.raises(SpecError, match="not a duration"):
        parse_duration("soon")


def test_spec_errors_are_readable() -> None:
    with pytest.raises(SpecError, match=r"replicas.min \(3\) must be between 1 and replicas.max \(2\)"):
        parse_job_spec("a", "b", spec_dict(replicas={"min": 3, "max": 2}), NOW)
    with pytest.raises(SpecError, match="thresholdGramsPerKWh is required"):
        parse_job_spec("a", "b", spec_dict(policy={"type": "threshold"}), NOW)
    with pytest.raises(SpecError, match="totalSteps must be a positive whole number"):
        parse_job_spec("a", "b", spec_dict(work={"gpuHours": 1}), NOW)


def test_job_starts_suspended_with_owner_and_trainer_env() -> None:
    spec = parse_job_spec("train", "ml", spec_dict(), NOW)
    job = build_job(BODY, spec, replicas=1)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["terminationGracePeriodSeconds"] == 120
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}  # NODE_NAME: valueFrom
    assert env["X"] == "1", "the user's env is kept"
    assert env["GRIDWISE_TOTAL_STEPS"] == "5000" and env["GRIDWISE_METRICS_PORT"] == "9400"
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"] == [{"type": "DisruptionTarget"}]


def test_user_env_overrides_ours() -> None:
    tpl = {
        "spec": {
            "containers": [
                {"name": "t", "image": "i", "env": [{"name": "GRIDWISE_METRICS_PORT", "value": "1"}]}
            ]
        }
    }
    job = build_job(BODY, parse_job_spec("train", "ml", spec_dict(template=tpl), NOW), replicas=1)
    ports = [
        e
        for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "GRIDWISE_METRICS_PORT"
    ]
    assert ports == [{"name": "GRIDWISE_METRICS_PORT", "value": "1"}]


def test_builders_do_not_mutate_the_spec() -> None:
    raw = spec_dict()
    spec = parse_job_spec("train", "ml", raw, NOW)
    build_job(BODY, spec, replicas=1)
    assert raw["template"]["spec"]["containers"][0]["env"] == [{"name": "X", "value": "1"}]


def test_pause_keeps_the_replica_count_for_the_resume() -> None:
    spec = parse_job_spec("train", "ml", spec_dict(), NOW)
    assert build_scale_patch(spec, 0, suspend=True) == {"spec": {"suspend": True}}
    assert build_scale_patch(spec, 1, suspend=False) == {"spec": {"suspend": False, "parallelism": 1}}


def test_status_shape_and_displays() -> None:
    spec = parse_job_spec("train", "ml", spec_dict(), NOW)
    totals = Totals(energy_joules=3.6e6, emissions_grams=100, work_done_gpu_hours=3,
                    baseline_energy_joules=3.6e6, baseline_emissions_grams=500,
                    baseline_work_gpu_hours=3)  # fmt: skip
    acc = Accounted(totals, None, "estimate", Usage(1, 1), 100.0, {})
    st = build_status(
        spec, now=NOW, phase="Running", replicas=1, desired=1, accounted=acc, reading=None,
        pause_times=[], decision=None, conditions=[], previous={}, measured={},
    )  # fmt: skip
    assert st["progress"] == 0.5 and st["progressDisplay"] == "50%"
    assert st["avoidedEmissionsGrams"] == 400 and st["avoidedEmissionsDisplay"] == "400g"
    assert st["avoidedEmissions"] == {"timingGrams": 400.0, "widthGrams": 0.0}
    assert st["accounting"]["lastTime"] == "2022-06-01T00:00:00Z"
    assert st["deadline"] == "2022-06-02T12:00:00Z"
    assert st["nextChange"] is None and st["runningPods"] == 1


def _job(**meta: Any) -> dict[str, Any]:
    return {"metadata": {"uid": "j", **meta}, "spec": {"suspend": False, "parallelism": 2}, "status": {}}


def test_job_ownership_is_classified() -> None:
    res = Resource("train", "ml", "u-1", 1, spec_dict())
    ours = _job(ownerReferences=[{"uid": "u-1", "controller": True}])
    assert job_state(ours, res).owner == OWNER_US
    labels = {"gridwise.dev/job": "train", "app.kubernetes.io/managed-by": "gridwise"}
    assert job_state(_job(labels=labels), res).owner == OWNER_NONE, "our labels, owner reference removed"
    assert job_state(_job(), res).owner == OWNER_OTHER, "a stranger's Job with the same name"
    gone = _job(ownerReferences=[{"uid": "other", "controller": True}], labels=labels)
    assert job_state(gone, res).owner == OWNER_OTHER


def test_pods_are_indexed_by_what_they_do() -> None:
    assert pod_info({"metadata": {"name": "p"}, "status": {"phase": "Succeeded"}}) is None
    p = pod_info(
        {"metadata": {"name": "p", "deletionTimestamp": "x"}, "status": {"phase": "Running", "podIP": "1"}}
    )
    assert p is not None and p.terminating and p.phase == "Running"


def test_a_finished_job_says_when() -> None:
    done = {"status": {"completionTime": "2026-12-02T03:00:00Z", "conditions": []}}
    assert finished_at(done) == datetime(2026, 12, 2, 3, tzinfo=UTC).timestamp()
    failed = {"status": {"conditions": [
        {"type": "FailureTarget", "status": "True", "lastTransitionTime": "2026-12-02T02:59:00Z"},
        {"type": "Failed", "status": "True", "lastTransitionTime": "2026-12-02T03:00:00Z"},
    ]}}  # fmt: skip
    assert finished_at(failed) == datetime(2026, 12, 2, 3, tzinfo=UTC).timestamp()
    # The index keeps the terminal condition's time, and only that one.
    assert finished_at(slim_job(failed)) == finished_at(failed)
    assert "lastTransitionTime" not in slim_job(failed)["status"]["conditions"][0]
    untrue = {"status": {"conditions": [{"type": "Failed", "lastTransitionTime": "2026-12-02T03:00:00Z"}]}}
    for unknown in ({}, {"status": {"completionTime": "soon"}}, untrue):
        assert finished_at(unknown) is None


def test_a_running_pod_says_when_its_containers_started() -> None:
    def pod(*starts: object, phase: str = "Running") -> dict[str, object]:
        states = [{"state": {"running": {"startedAt": s}}} for s in starts]
        return {"metadata": {"name": "p"}, "status": {"phase": phase, "containerStatuses": states}}

    p = pod_info(pod("2026-12-02T03:00:00Z", "2026-12-02T03:00:05Z"))
    assert p is not None and p.running_since == datetime(2026, 12, 2, 3, 0, 5, tzinfo=UTC).timestamp()
    # What a kubelet (or a hostile writer of pod status) may put there never breaks the index.
    for bad in (pod("yesterday"), pod(17), pod(), pod("2026-12-02T03:00:00Z", phase="Pending")):
        p = pod_info(bad)
        assert p is not None and p.running_since is None, bad
    statuses = ["x", {"state": 3}, {"state": {"running": "now"}}]
    odd = {"metadata": {"name": "p"}, "status": {"phase": "Running", "containerStatuses": statuses}}
    assert (p := pod_info(odd)) is not None and p.running_since is None


class FakeKube:
    """Records the API calls the actuator makes (the API server is tested in tests/cluster)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", manifest))
        return manifest

    async def patch_job(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", patch))
        return {}

    async def delete_job(self, ns: str, name: str) -> None:
        self.calls.append(("delete", name))


async def test_a_scale_never_sets_completions_on_a_nonindexed_job() -> None:
    kube = FakeKube()
    spec = parse_job_spec("train", "ml", spec_dict(replicas={"min": 1, "max": 4}), NOW)
    await Actuator(kube).apply(BODY, spec, 2, [Action(SCALE, replicas=3, suspend=False, indexed=False)])  # type: ignore[arg-type]
    assert kube.calls == [("patch", {"spec": {"suspend": False, "parallelism": 3}})]
    kube.calls.clear()
    await Actuator(kube).apply(BODY, spec, 2, [Action(SCALE, replicas=3, suspend=False, indexed=True)])  # type: ignore[arg-type]
    assert kube.calls == [("patch", {"spec": {"suspend": False, "parallelism": 3, "completions": 3}})]


async def test_created_jobs_carry_their_generation_and_template_fingerprint() -> None:
    kube = FakeKube()
    spec = parse_job_spec("train", "ml", spec_dict(replicas={"min": 1, "max": 2}), NOW)
    await Actuator(kube).apply(BODY, spec, 7, [Action(CREATE, replicas=2), Action(ADOPT)])  # type: ignore[arg-type]
    kinds = [c[1]["kind"] if c[0] == "create" else c[0] for c in kube.calls]
    assert kinds == ["Service", "Job", "patch"], "an elastic Job gets its headless Service first"
    ann = kube.calls[1][1]["metadata"]["annotations"]
    assert ann == {ANNOTATION_GENERATION: "7", ANNOTATION_SHAPE: shape_of(spec)}
    assert kube.calls[2][1]["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_the_fingerprint_follows_the_pod_template_only() -> None:
    base = parse_job_spec("train", "ml", spec_dict(), NOW)
    assert shape_of(base) == shape_of(parse_job_spec("train", "ml", spec_dict(completeWithin="48h"), NOW))
    steps = spec_dict(work={"gpuHours": 6, "totalSteps": 9999})
    assert shape_of(base) != shape_of(parse_job_spec("train", "ml", steps, NOW))
    assert shape_of(base) != shape_of(
        parse_job_spec("train", "ml", spec_dict(compression={"mixedPrecision": "bf16"}), NOW)
    )
    assert shape_of(base) != shape_of(
        parse_job_spec("train", "ml", spec_dict(replicas={"min": 1, "max": 2}), NOW)
    )


def test_nothing_avoided_reads_0g_not_minus_0g() -> None:
    """Under half a gram either way reads 0g, not -0g: a job run at once on a flat grid avoids nothing."""
    spec = parse_job_spec("train", "ml", spec_dict(), NOW)
    totals = Totals(energy_joules=3.6e6, emissions_grams=100.3, work_done_gpu_hours=3,
                    baseline_energy_joules=3.6e6, baseline_emissions_grams=100,
                    baseline_work_gpu_hours=3)  # fmt: skip
    acc = Accounted(totals, None, "estimate", Usage(1, 1), 100.0, {})
    st = build_status(
        spec, now=NOW, phase="Succeeded", replicas=0, desired=0, accounted=acc, reading=None,
        pause_times=[], decision=None, conditions=[], previous={}, measured={},
    )  # fmt: skip
    assert st["avoidedEmissionsGrams"] == -0.3 and st["avoidedEmissionsDisplay"] == "0g"
    worse = Totals(energy_joules=3.6e6, emissions_grams=100.6, work_done_gpu_hours=3,
                   baseline_energy_joules=3.6e6, baseline_emissions_grams=100,
                   baseline_work_gpu_hours=3)  # fmt: skip
    st = build_status(
        spec, now=NOW, phase="Succeeded", replicas=0, desired=0,
        accounted=Accounted(worse, None, "estimate", Usage(1, 1), 100.0, {}), reading=None,
        pause_times=[], decision=None, conditions=[], previous={}, measured={},
    )  # fmt: skip
    assert st["avoidedEmissionsDisplay"] == "-1g"
