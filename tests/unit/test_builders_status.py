"""Pure manifest and status builders: what the operator sends to the API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gridwise.accounting import Totals
from gridwise.api import SpecError, parse_duration, parse_job_spec
from gridwise.k8s.builders import build_job, build_scale_patch
from gridwise.k8s.reconciler import build_status

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
                    baseline_emissions_grams=500, baseline_work_gpu_hours=3)  # fmt: skip
    st = build_status(
        spec, now=NOW, phase="Running", replicas=1, desired=1, totals=totals, reading=None,
        progress_source="estimate", trainer_energy=None, pause_times=[], decision=None,
        conditions=[], previous={},
    )  # fmt: skip
    assert st["progress"] == 0.5 and st["progressDisplay"] == "50%"
    assert st["avoidedEmissionsGrams"] == 400 and st["avoidedEmissionsDisplay"] == "400g"
    assert st["accounting"]["lastTime"] == "2022-06-01T00:00:00Z"
    assert st["deadline"] == "2022-06-02T12:00:00Z"
    assert st["nextChange"] is None
