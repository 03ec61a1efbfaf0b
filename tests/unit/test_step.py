"""The pure reconcile step: every scenario of issue 11 that does not need an API server.

Each test feeds `step` a CarbonAwareJob, the status it last wrote and what a tick observed, and
checks the status, the Job change and the Events it returns.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gridwise.accounting import Usage
from gridwise.carbon import IntensityPoint, SignalReading
from gridwise.progress import TrainerSample
from gridwise.step import (
    ADOPT,
    ANNOTATE,
    CREATE,
    DELETE,
    OWNER_NONE,
    OWNER_OTHER,
    OWNER_US,
    SCALE,
    Action,
    JobState,
    Observed,
    ObserveError,
    Resource,
    StepResult,
    act_failed,
    fail_safe,
    material,
    step,
)

NOW = datetime(2030, 1, 6, tzinfo=UTC)
REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "completeWithin": "24h",
        "replicas": {"min": 1, "max": 4},
        "work": {"gpuHours": 8, "totalSteps": 1000, "powerPerReplicaWatts": 400, "scalingEfficiency": 0.9},
        "carbon": {"provider": "static", "staticGramsPerKWh": 100},
        "policy": {"type": "forecast"},
        "template": {"spec": {"containers": [{"name": "t", "image": "img"}]}},
    }
    base.update(over)
    return base


def res(generation: int = 1, **over: Any) -> Resource:
    return Resource("train", "ml", "uid-1", generation, spec(**over))


def reading(values: list[float] | None = None, *, stale: bool = False, start: datetime = NOW,
            provider: str = "static") -> SignalReading:  # fmt: skip
    values = [100.0] * 48 if values is None else values
    points = tuple(
        IntensityPoint(start + timedelta(hours=i), start + timedelta(hours=i + 1), v)
        for i, v in enumerate(values)
    )
    return SignalReading(
        zone="XX", provider=provider, signal_type="average", current=points[0] if points else None,
        forecast=points[1:], stale=stale, reason="provider down" if stale else "ok", fetched_at=NOW,
    )  # fmt: skip


def job(**over: Any) -> JobState:
    base: dict[str, Any] = dict(
        uid="job-uid", owner=OWNER_US, suspended=True, parallelism=4, indexed=True, generation=1, shape="s1"
    )
    base.update(over)
    return JobState(**base)


def observed(j: JobState | None, r: SignalReading | None = None, **over: Any) -> Observed:
    base: dict[str, Any] = dict(job=j, reading=r or reading(), desired_shape="s1")
    base.update(over)
    return Observed(**base)


def accepted_status(**over: Any) -> dict[str, Any]:
    """What the first tick writes, as the starting point of later ones."""
    first = step(res(), {}, observed(None), NOW)
    st = dict(first.status)
    st.update(over)
    return st


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def reasons(result: StepResult) -> list[str]:
    return [e.reason for e in result.events]


# -- creation and the first plan -------------------------------------------------------------------


def test_first_tick_creates_a_suspended_job_once() -> None:
    r = step(res(), {}, observed(None), NOW)
    assert r.change == (Action(CREATE, replicas=4, suspend=True),)
    assert reasons(r) == ["JobCreated"]
    st = r.status
    assert st["phase"] == "Pending" and st["acceptedTime"] == "2030-01-06T00:00:00Z"
    assert st["observedGeneration"] == 1
    assert cond(st, "Reconciled")["status"] == "True"
    assert cond(st, "DeadlineAtRisk")["status"] == "Unknown", "no plan yet: not 'OnTrack'"


def test_every_condition_is_conventional() -> None:
    st = step(res(), accepted_status(jobUID="job-uid"), observed(job()), NOW + timedelta(minutes=1)).status
    types = [c["type"] for c in st["conditions"]]
    assert {"Complete", "Failed", "Suspended", "DeadlineAtRisk", "CarbonSignalStale", "SpecApplied",
            "Reconciled"} <= set(types)  # fmt: skip
    for c in st["conditions"]:
        assert c["status"] in ("True", "False", "Unknown")
        assert REASON.match(c["reason"]), c
        assert c["observedGeneration"] == 1 and c["lastTransitionTime"] and isinstance(c["message"], str)


def test_a_clean_grid_resumes_the_job() -> None:
    r = step(res(policy={"type": "agnostic"}), accepted_status(), observed(job()), NOW + timedelta(minutes=1))
    assert r.change == (Action(SCALE, replicas=4, suspend=False, indexed=True),)
    assert r.status["phase"] == "Running" and r.status["replicas"] == 4
    assert r.decision == "resume"
    assert cond(r.status, "Suspended")["status"] == "False"


# -- the Job disappears, loses its owner, or is someone else's -------------------------------------


def test_an_externally_deleted_job_is_recreated_with_a_warning() -> None:
    st = accepted_status(jobUID="job-uid", phase="Running", replicas=2)
    r = step(res(), st, observed(None), NOW + timedelta(minutes=5))
    assert r.change == (Action(CREATE, replicas=4, suspend=True),)
    assert "JobCreated" not in reasons(r)
    warning = [e for e in r.events if e.reason == "JobMissing"]
    assert warning and warning[0].type == "Warning" and "last checkpoint" in warning[0].message
    assert r.status["phase"] == "Pending", "not 'Running' while there is no Job"
    assert cond(r.status, "Reconciled")["reason"] == "JobMissing"


def test_a_failed_recreate_still_warns_that_the_job_is_missing() -> None:
    st = accepted_status(jobUID="job-uid", phase="Running", replicas=2)
    r = step(res(), st, observed(None), NOW + timedelta(minutes=5))
    failed = act_failed(r, "JobCreateFailed", "Job create failed: HTTP 403: forbidden", NOW, 1)
    assert failed.status["jobUID"] == "job-uid", "the old Job's UID is kept until a new one exists"
    again = step(res(), failed.status, observed(None), NOW + timedelta(minutes=6))
    assert "JobCreated" not in reasons(again), "not an ordinary first creation"
    assert cond(again.status, "Reconciled")["reason"] == "JobMissing"
    assert [e.type for e in again.events if e.reason == "JobMissing"] == ["Warning"]
    created = step(res(), again.status, observed(job(uid="job-uid-2")), NOW + timedelta(minutes=7))
    assert created.status["jobUID"] == "job-uid-2"


def test_a_job_that_lost_its_owner_reference_is_adopted_and_reported() -> None:
    st = accepted_status(jobUID="job-uid")
    r = step(res(), st, observed(job(owner=OWNER_NONE, suspended=False)), NOW + timedelta(minutes=1))
    assert r.change[0] == Action(ADOPT)
    assert any(e.reason == "JobOrphaned" and e.type == "Warning" for e in r.events)
    assert cond(r.status, "Reconciled")["reason"] == "JobOrphaned"
    # Adopted, it is reconciled like any other: the next tick (owner restored) is clean again.
    again = step(res(), r.status, observed(job(suspended=False)), NOW + timedelta(minutes=2))
    assert cond(again.status, "Reconciled")["status"] == "True"


def test_a_foreign_job_is_left_alone_and_reported_once() -> None:
    st = accepted_status()
    r = step(res(), st, observed(job(owner=OWNER_OTHER, suspended=False)), NOW + timedelta(minutes=1))
    assert r.change == ()
    assert reasons(r) == ["JobConflict"] and r.events[0].type == "Warning"
    assert r.status["phase"] == "Pending"
    again = step(
        res(), r.status, observed(job(owner=OWNER_OTHER, suspended=False)), NOW + timedelta(minutes=2)
    )
    assert "JobConflict" not in reasons(again), "a Warning once, not every tick"


def test_an_unreadable_job_creates_nothing() -> None:
    st = accepted_status(jobUID="job-uid")
    err = ObserveError("JobReadFailed", "reading Job train failed: HTTP 503", transient=True)
    r = step(res(), st, observed(None, job_known=False, error=err), NOW + timedelta(minutes=1))
    assert r.change == ()
    assert cond(r.status, "Reconciled")["reason"] == "JobReadFailed"
    assert r.status["accounting"] == st["accounting"], "the interval is accounted on the next good tick"


# -- spec edits --------------------------------------------------------------------------------------


def test_moving_the_deadline_replans_and_is_acted_on() -> None:
    st = accepted_status(jobUID="job-uid")
    r = step(res(2, deadline="2030-01-06T06:00:00Z", completeWithin=None), st, observed(job()),
             NOW + timedelta(minutes=1))  # fmt: skip
    spec_ = r.spec
    assert spec_ is not None and spec_.deadline == datetime(2030, 1, 6, 6, tzinfo=UTC)
    assert r.status["deadline"] == "2030-01-06T06:00:00Z"
    assert r.status["observedGeneration"] == 2
    assert Action(ANNOTATE) in r.change, "the Job is stamped with the generation it now reflects"


def test_switching_provider_reads_the_new_signal_without_touching_the_job() -> None:
    st = accepted_status(jobUID="job-uid")
    r = step(res(2, carbon={"provider": "trace", "tracePath": "/x"}), st,
             observed(job(), reading(provider="trace")), NOW + timedelta(minutes=1))  # fmt: skip
    assert r.status["carbonIntensity"]["provider"] == "trace"
    assert all(a.kind in (ANNOTATE, SCALE) for a in r.change)
    assert r.status["observedGeneration"] == 2


def test_a_pod_template_edit_rebuilds_the_job_from_the_last_checkpoint() -> None:
    """replicas.max 1 -> 4 crosses the elastic boundary: a NonIndexed Job must become Indexed."""
    st = accepted_status(jobUID="job-uid", observedGeneration=1)
    running = job(suspended=False, parallelism=1, indexed=False, shape="s0")
    obs = observed(running, desired_shape="s1", pods=Usage(1, 1), pods_present=1)
    t = NOW + timedelta(minutes=1)
    r = step(res(2), st, obs, t)
    # 1. Pause so the trainer checkpoints; never a completions patch on the NonIndexed Job.
    assert r.change == (Action(SCALE, replicas=0, suspend=True, indexed=False),)
    assert r.status["observedGeneration"] == 1, "generation 2 is not acted on yet"
    assert cond(r.status, "SpecApplied")["reason"] == "Recreating"
    assert r.status["pauseTimes"] == [], "a rebuild is not a carbon pause"
    # 2. Suspended, a pod still checkpointing: wait.
    waiting = observed(replace(running, suspended=True), desired_shape="s1", pods=Usage(0, 1), pods_present=1)
    r = step(res(2), r.status, waiting, t + timedelta(seconds=30))
    assert r.change == () and r.status["observedGeneration"] == 1
    # 3. No pods left: delete the old Job.
    gone = observed(replace(running, suspended=True), desired_shape="s1")
    r = step(res(2), r.status, gone, t + timedelta(seconds=60))
    assert r.change == (Action(DELETE),)
    # 4. Deleted: create the new one; a rebuild, not an outside deletion.
    r = step(res(2), r.status, observed(None, desired_shape="s1"), t + timedelta(seconds=90))
    assert r.change == (Action(CREATE, replicas=4, suspend=True),)
    assert reasons(r) == ["JobRecreated"]
    assert r.status["observedGeneration"] == 2 and r.status.get("recreate") is None
    assert cond(r.status, "SpecApplied")["status"] == "True"


def test_an_operator_upgrade_that_renders_templates_differently_rebuilds_nothing() -> None:
    st = accepted_status(jobUID="job-uid")
    r = step(res(1), st, observed(job(shape="old-render")), NOW + timedelta(minutes=1))
    assert not any(a.kind in (DELETE, CREATE) for a in r.change)


def test_template_edits_on_a_kueue_job_are_refused_with_a_condition() -> None:
    st = accepted_status(jobUID="job-uid")
    r = step(res(2), st, observed(job(kueue=True, shape="s0")), NOW + timedelta(minutes=1))
    assert r.change == ()
    applied = cond(r.status, "SpecApplied")
    assert applied["status"] == "False" and applied["reason"] == "Refused"
    assert r.status["observedGeneration"] == 2, "refused with a condition counts as acted on"


def test_an_invalid_spec_fails_with_one_warning_and_recovers_when_fixed() -> None:
    bad = res(2, replicas={"min": 3, "max": 2})
    r = step(bad, accepted_status(), observed(None), NOW)
    assert r.status["phase"] == "Failed" and cond(r.status, "Failed")["reason"] == "InvalidSpec"
    assert reasons(r) == ["InvalidSpec"]
    again = step(bad, r.status, observed(None), NOW + timedelta(minutes=1))
    assert again.events == ()
    fixed = step(res(3), r.status, observed(job()), NOW + timedelta(minutes=2))
    assert fixed.status["phase"] != "Failed" and cond(fixed.status, "Failed")["status"] == "False"


def test_an_invalid_edit_to_a_running_job_is_refused_and_the_job_runs_by_its_last_spec() -> None:
    """A deadline past the 90-day horizon (CEL cannot see acceptedTime): never Failed while the Job runs."""
    agnostic = {"type": "agnostic"}
    first = step(res(policy=agnostic), {}, observed(None), NOW)
    st = dict(first.status, jobUID="job-uid")
    beyond = {"deadline": "2030-06-01T00:00:00Z", "completeWithin": None, "policy": agnostic}
    t = NOW + timedelta(minutes=1)
    r = step(res(2, **beyond), st, observed(job()), t)
    assert r.status["phase"] == "Running", "the phase is kept, not Failed"
    assert cond(r.status, "Failed")["status"] == "False"
    applied = cond(r.status, "SpecApplied")
    assert applied["status"] == "False" and applied["reason"] == "InvalidSpec"
    assert "horizon" in applied["message"] and applied["observedGeneration"] == 2
    assert [e.type for e in r.events if e.reason == "InvalidSpec"] == ["Warning"]
    # It keeps acting by the last accepted spec: its deadline, its policy (run now at max).
    assert r.spec is not None and r.spec.deadline == NOW + timedelta(hours=24)
    assert r.status["deadline"] == "2030-01-07T00:00:00Z"
    assert r.change == (Action(SCALE, replicas=4, suspend=False, indexed=True),)
    assert Action(ANNOTATE) not in r.change, "the Job is not stamped with a generation it does not reflect"
    assert r.status["observedGeneration"] == 2, "refused with a condition counts as acted on"
    again = step(res(2, **beyond), r.status, observed(job(suspended=False)), t + timedelta(minutes=1))
    assert "InvalidSpec" not in reasons(again), "a Warning once, not every tick"
    assert again.status["phase"] == "Running" and again.status["acceptedSpec"] == st["acceptedSpec"]
    # Fixed: the new spec is accepted and applied.
    running = observed(job(suspended=False))
    fixed = step(res(3, policy=agnostic), again.status, running, t + timedelta(minutes=2))
    assert cond(fixed.status, "SpecApplied")["reason"] == "Applied"
    assert fixed.status["observedGeneration"] == 3
    assert not any(e.reason == "InvalidSpec" for e in fixed.events)


def test_fail_safe_guards_the_deadline_by_the_last_accepted_spec() -> None:
    st = dict(accepted_status(jobUID="job-uid"), progress=0.0)
    bad = res(2, deadline="2030-06-01T00:00:00Z", completeWithin=None)
    r = fail_safe(bad, st, job(), NOW + timedelta(hours=20), "InternalError", "reconcile failed: KeyError")
    assert r.change and r.change[0].kind == SCALE and not r.change[0].suspend


# -- failures in a tick --------------------------------------------------------------------------


def test_a_rejected_pause_records_nothing_that_did_not_happen() -> None:
    st = accepted_status(jobUID="job-uid", replicas=4, phase="Running")
    dirty = reading([900.0] * 6 + [50.0] * 42)
    r = step(res(), st, observed(job(suspended=False), dirty), NOW + timedelta(minutes=1))
    assert r.decision == "pause" and r.status["pauseTimes"]
    failed = act_failed(r, "JobPatchFailed", "Job scale failed: HTTP 422: invalid", NOW, 1)
    assert failed.status["replicas"] == 4 and failed.status["phase"] == "Running"
    assert failed.status["pauseTimes"] == [] and failed.change == ()
    assert failed.status["accounting"] == r.status["accounting"], "the past interval stays accounted"
    assert [e.reason for e in failed.events if e.type == "Warning"] == ["JobPatchFailed"]
    # The same failure on the next tick: no second Warning.
    r2 = step(res(), failed.status, observed(job(suspended=False), dirty), NOW + timedelta(minutes=2))
    again = act_failed(r2, "JobPatchFailed", "Job scale failed: HTTP 422: invalid", NOW, 1)
    assert "JobPatchFailed" not in [e.reason for e in again.events]


def test_a_missing_secret_does_not_keep_a_job_suspended_past_its_deadline() -> None:
    st = accepted_status(jobUID="job-uid")
    no_creds = SignalReading(
        zone="XX", provider="electricitymaps", signal_type="average", current=None, forecast=(), stale=True,
        reason="carbon credentials unavailable: Secret em not found in namespace ml", fetched_at=NOW,
    )  # fmt: skip
    # 8 GPU-h left, 9 h to the deadline: 1 replica no longer fits with margin.
    r = step(res(), st, observed(job(), no_creds), NOW + timedelta(hours=15))
    assert r.decision == "resume" and r.status["replicas"] >= 2
    assert cond(r.status, "CarbonSignalStale")["reason"] == "NoUsableSignal"
    assert "Secret em not found" in cond(r.status, "CarbonSignalStale")["message"]
    assert cond(r.status, "DeadlineAtRisk")["status"] == "Unknown"


def test_the_stale_warning_is_posted_once() -> None:
    st = accepted_status(jobUID="job-uid")
    down = reading([], stale=True)
    r = step(res(), st, observed(job(), down), NOW + timedelta(minutes=1))
    assert "CarbonSignalStale" in reasons(r)
    r = step(res(), r.status, observed(job(suspended=False, parallelism=1), down), NOW + timedelta(minutes=2))
    assert "CarbonSignalStale" not in reasons(r)


def test_a_tier_limited_forecast_plans_on_our_own_forecast_and_says_so_once() -> None:
    why = "electricitymaps: the forecast endpoint refused this key (HTTP 403: not in its plan)"
    note = "forecast extended 47 h by the seasonal forecaster"
    limited = replace(reading(), forecast_unavailable=why, reason=f"ok; {why}; {note}")
    st = accepted_status(jobUID="job-uid")
    r = step(res(), st, observed(job(), limited), NOW + timedelta(minutes=1))
    sig = cond(r.status, "CarbonSignalStale")
    assert sig["status"] == "False", "the current value is fresh"
    assert sig["reason"] == "ProviderForecastUnavailable" and "HTTP 403" in sig["message"]
    assert [e.type for e in r.events if e.reason == "ProviderForecastUnavailable"] == ["Warning"]
    assert cond(r.status, "DeadlineAtRisk")["reason"] == "OnTrack", "planned, not run by the deadline alone"
    again = step(res(), r.status, observed(job(), limited), NOW + timedelta(minutes=2))
    assert "ProviderForecastUnavailable" not in reasons(again), "a Warning once, not every tick"


def test_fail_safe_starts_a_paused_job_its_deadline_needs() -> None:
    st = accepted_status(jobUID="job-uid", progress=0.0)
    # 8 GPU-h at 3.24/h at 4 replicas take 2.5 h; 4 h left less the margin is too close to wait.
    r = fail_safe(res(), st, job(), NOW + timedelta(hours=20), "InternalError", "reconcile failed: KeyError")
    assert r.change and r.change[0].kind == SCALE and not r.change[0].suspend
    assert cond(r.status, "Reconciled")["reason"] == "InternalError"
    assert [e.type for e in r.events] == ["Warning"]
    calm = fail_safe(res(), st, job(), NOW + timedelta(minutes=5), "InternalError", "boom")
    assert calm.change == (), "plenty of slack: the Job stays as it is"


# -- honest accounting through the step ------------------------------------------------------------


def test_pending_pods_are_not_work() -> None:
    st = accepted_status(jobUID="job-uid", replicas=4, phase="Running")
    unscheduled = observed(job(suspended=False), pods=Usage(0, 0), pods_present=4)
    r = step(res(policy={"type": "agnostic"}), st, unscheduled, NOW + timedelta(hours=1))
    assert r.status["accounting"]["workDoneGPUHours"] == 0
    assert r.status["energyJoules"] == 0 and r.status["runningPods"] == 0


def test_energy_is_counted_until_the_pods_are_gone() -> None:
    st = accepted_status(jobUID="job-uid")
    st["accounting"] = {**st["accounting"], "workingPods": 0, "drawingPods": 2}
    checkpointing = observed(job(suspended=True), pods=Usage(0, 2), pods_present=2)
    r = step(res(), st, checkpointing, NOW + timedelta(minutes=2))
    assert r.status["energyJoules"] == pytest.approx(2 * 400 * 120)
    assert r.status["accounting"]["workDoneGPUHours"] == 0


def test_totals_carried_over_hundreds_of_ticks_do_not_drift() -> None:
    # Each tick continues from the status the last one wrote; rounding the totals there walked
    # emissions 0.004 g away from energy x intensity in 300 ticks (the e2e pause test saw 0.0007 g).
    st = accepted_status(jobUID="job-uid", replicas=1, phase="Running")
    flat = reading([80.0] * 48)
    when = NOW
    for i in range(300):
        when += timedelta(seconds=20 + (i * 37) % 380)
        tick = observed(job(suspended=False, parallelism=1), flat, pods=Usage(1, 1), pods_present=1)
        st = step(res(policy={"type": "agnostic"}), st, tick, when).status
    assert st["energyJoules"] > 0
    assert st["emissionsGrams"] == pytest.approx(st["energyJoules"] / 3.6e6 * 80.0, rel=1e-12)


def test_the_trainers_progress_and_energy_win() -> None:
    st = accepted_status(jobUID="job-uid")
    st["accounting"] = {**st["accounting"], "workingPods": 1, "drawingPods": 1, "trainerEnergyJoules": 1000.0}
    sample = TrainerSample(progress=0.25, energy_joules=4600.0, workers=1, throughput={1: 12.0})
    obs = observed(job(suspended=False, parallelism=1), pods=Usage(1, 1), pods_present=1, trainer=sample)
    r = step(res(policy={"type": "agnostic"}), st, obs, NOW + timedelta(hours=1))
    assert r.status["progressSource"] == "trainer"
    assert r.status["energyJoules"] == pytest.approx(3600.0)
    assert r.status["accounting"]["workDoneGPUHours"] == pytest.approx(2.0)
    assert r.status["measuredThroughput"] == {"1": 12.0}


def test_a_measured_gpu_below_its_nameplate_avoids_nothing_on_a_flat_grid() -> None:
    """1 replica of max 1 at 200 W measured (400 W nameplate): the baseline is measured-kind too."""
    one = res(replicas={"min": 1, "max": 1}, policy={"type": "agnostic"})
    st = accepted_status(jobUID="job-uid")
    st["accounting"] = {**st["accounting"], "workingPods": 1, "drawingPods": 1, "trainerEnergyJoules": 0.0}
    running = job(suspended=False, parallelism=1, indexed=False)
    status = st
    for hour in (1, 2):  # twice: the totals round-trip through the status
        sample = TrainerSample(progress=hour / 8, energy_joules=200.0 * 3600 * hour, workers=1, throughput={})
        obs = observed(running, pods=Usage(1, 1), pods_present=1, trainer=sample)
        status = step(one, status, obs, NOW + timedelta(hours=hour)).status
    assert status["energyJoules"] == pytest.approx(2 * 200 * 3600)
    assert status["avoidedEmissions"]["widthGrams"] == pytest.approx(0.0, abs=1e-3)
    assert status["avoidedEmissions"]["timingGrams"] == pytest.approx(0.0, abs=1e-3)
    scale = status["energyJoules"] / status["accounting"]["modelEnergyJoules"]
    assert scale == pytest.approx(0.5), "200 W measured of a 400 W nameplate"
    assert status["baselineEmissionsGrams"] * scale == pytest.approx(status["emissionsGrams"], abs=1e-3)


def test_a_crd_that_prunes_the_model_energy_does_not_shrink_the_baseline() -> None:
    """An operator upgraded without its CRD (Helm never upgrades CRDs): the new field is pruned."""
    one = res(replicas={"min": 1, "max": 1}, policy={"type": "agnostic"})
    status = accepted_status(jobUID="job-uid")
    status["accounting"] = {
        **status["accounting"],
        "workingPods": 1,
        "drawingPods": 1,
        "trainerEnergyJoules": 0.0,
    }
    running = job(suspended=False, parallelism=1, indexed=False)
    for hour in (1, 2, 3):
        sample = TrainerSample(progress=hour / 8, energy_joules=200.0 * 3600 * hour, workers=1, throughput={})
        obs = observed(running, pods=Usage(1, 1), pods_present=1, trainer=sample)
        status = step(one, status, obs, NOW + timedelta(hours=hour)).status
        status["accounting"] = {k: v for k, v in status["accounting"].items() if k != "modelEnergyJoules"}
    # 3 h at 1 x 400 W at 100 g/kWh: the modelled baseline, not one scaled again every tick.
    assert status["baselineEmissionsGrams"] == pytest.approx(3 * 0.4 * 100, abs=1e-3)


def test_avoided_emissions_are_reported_in_two_parts() -> None:
    st = accepted_status(jobUID="job-uid")
    st["accounting"] = {**st["accounting"], "workingPods": 1, "drawingPods": 1}
    obs = observed(job(suspended=False, parallelism=1), pods=Usage(1, 1), pods_present=1)
    r = step(res(), st, obs, NOW + timedelta(hours=4))
    parts = r.status["avoidedEmissions"]
    assert parts["timingGrams"] == pytest.approx(0.0, abs=1e-3), "a flat grid gives nothing for timing"
    assert parts["widthGrams"] > 0
    assert r.status["avoidedEmissionsGrams"] == pytest.approx(
        parts["timingGrams"] + parts["widthGrams"], abs=1e-3
    )


# -- finishing and output shape ----------------------------------------------------------------------


def test_a_finished_job_sets_complete_and_stops() -> None:
    st = accepted_status(jobUID="job-uid")
    r = step(res(), st, observed(job(finished="Succeeded")), NOW + timedelta(hours=1))
    assert r.status["phase"] == "Succeeded"
    assert cond(r.status, "Complete")["status"] == "True" and cond(r.status, "Failed")["status"] == "False"
    after = step(res(), r.status, observed(job(finished="Succeeded")), NOW + timedelta(hours=2))
    assert after.status == r.status and after.events == () and after.change == ()


def test_steady_ticks_are_not_material_changes() -> None:
    st = accepted_status(jobUID="job-uid")
    obs = observed(job(suspended=False), pods=Usage(4, 4), pods_present=4)
    a = step(res(policy={"type": "agnostic"}), st, obs, NOW + timedelta(minutes=1))
    b = step(res(policy={"type": "agnostic"}), a.status, obs, NOW + timedelta(minutes=2))
    assert not material(a.status, b.status)
    paused = step(
        res(policy={"type": "agnostic"}), a.status, observed(job(suspended=True)), NOW + timedelta(minutes=3)
    )
    assert material(b.status, paused.status)


def test_event_reasons_are_camel_case_in_every_scenario() -> None:
    st = accepted_status(jobUID="job-uid")
    cases = [
        step(res(), {}, observed(None), NOW),
        step(res(), st, observed(None), NOW + timedelta(minutes=1)),
        step(res(), st, observed(job(owner=OWNER_NONE)), NOW + timedelta(minutes=1)),
        step(res(), st, observed(job(owner=OWNER_OTHER)), NOW + timedelta(minutes=1)),
        step(res(), st, observed(job(), reading([], stale=True)), NOW + timedelta(minutes=1)),
        step(res(2), st, observed(job(suspended=False, shape="s0")), NOW + timedelta(minutes=1)),
        step(res(), st, observed(job(finished="Failed")), NOW + timedelta(minutes=1)),
        step(res(replicas={"min": 2, "max": 1}), st, observed(None), NOW),
    ]
    seen = {e.reason for r in cases for e in r.events}
    assert {"JobCreated", "JobMissing", "JobOrphaned", "JobConflict", "CarbonSignalStale", "SpecChanged",
            "JobFailed", "InvalidSpec"} <= seen  # fmt: skip
    for reason in seen:
        assert REASON.match(reason), reason


def test_the_accepted_spec_is_the_same_json_from_kopfs_views_as_from_plain_dicts() -> None:
    import json

    import kopf

    from gridwise.step import spec_json

    raw: kopf.RawBody = {
        "spec": {
            "workGPUHours": 4.0,
            "carbon": {"zone": "ES", "provider": "trace", "secretRef": {"name": "k"}},
            "template": {"spec": {"containers": [{"name": "t", "args": ["a", 1, None, True]}]}},
            "nested": [{"b": 2, "a": [1.5, {"z": "é"}]}],
        }
    }
    view = kopf.Body(raw).spec  # what a handler gets: a mapping view, not a dict
    text = spec_json(view)
    assert text == spec_json(raw["spec"]) == json.dumps(raw["spec"], sort_keys=True, separators=(",", ":"))
    assert json.loads(text) == raw["spec"]
    with pytest.raises(TypeError, match="datetime is not JSON serializable"):
        spec_json({"deadline": datetime(2030, 1, 1, tzinfo=UTC)})
