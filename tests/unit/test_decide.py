"""The operator's decision rules on top of the planner: stale signal, deadline, policies."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gridwise.api import DEFAULT_FORECAST_HORIZON_HOURS, JobSpec, PolicySpec
from gridwise.carbon import IntensityPoint, SignalReading
from gridwise.carbon.outlook import DEFAULT_HORIZON
from gridwise.decide import (
    REASON_DEADLINE,
    REASON_INTENSITY,
    REASON_STALE,
    REASON_STALE_FORECAST,
    SIGNAL_FOLLOWING_FORECAST,
    SIGNAL_NONE,
    deadline_width,
    decide,
)
from gridwise.planner.risk import DEFAULT_RISK_FRACTION, DEFAULT_RISK_RAMP_HOURS

NOW = datetime(2022, 6, 1, 12, tzinfo=UTC)


def spec(policy: str = "forecast", threshold: float | None = None, hours: float = 48, **kw: float) -> JobSpec:
    return JobSpec(
        name="j",
        namespace="ns",
        min_replicas=int(kw.get("min", 1)),
        max_replicas=int(kw.get("max", 4)),
        deadline=NOW + timedelta(hours=hours),
        work_gpu_hours=kw.get("work", 8.0),
        total_steps=1000,
        scaling_efficiency=0.9,
        power_per_replica_watts=400,
        carbon={"provider": "static"},
        policy=PolicySpec(type=policy, threshold_grams_per_kwh=threshold),
        grace_period_seconds=60,
        checkpoint_path="/c",
        checkpoint_claim=None,
        template={},
    )


def reading(values: list[float], stale: bool = False, start: datetime = NOW) -> SignalReading:
    points = tuple(
        IntensityPoint(start + timedelta(hours=i), start + timedelta(hours=i + 1), v)
        for i, v in enumerate(values)
    )
    return SignalReading(
        zone="Z",
        provider="test",
        signal_type="average",
        current=points[0] if points else None,
        forecast=points[1:],
        stale=stale,
        reason="provider timed out" if stale else "ok",
        fetched_at=NOW,
    )


def test_no_signal_at_all_runs_at_the_width_the_deadline_requires() -> None:
    """Not max replicas forever: 8 GPU-h in 48 h fits at 1 replica with a wide margin."""
    d = decide(spec(), reading([], stale=True), now=NOW, remaining_work_gpu_hours=8,
               current_replicas=0, pauses_in_last_day=0)  # fmt: skip
    assert d.replicas == 1 and d.reason == REASON_STALE and d.signal == SIGNAL_NONE
    assert "provider timed out" in d.message
    assert d.deadline_condition()[:2] == ("Unknown", "NoPlan"), "no plan: never 'OnTrack'"


def test_no_signal_with_a_tight_deadline_runs_wider() -> None:
    d = decide(spec(hours=6, work=12), reading([], stale=True), now=NOW, remaining_work_gpu_hours=12,
               current_replicas=0, pauses_in_last_day=0)  # fmt: skip
    assert d.replicas == deadline_width(spec(hours=6, work=12), NOW, 12) >= 3
    assert d.kind(0) == "resume"


def test_no_signal_keeps_a_larger_running_size() -> None:
    d = decide(spec(), reading([], stale=True), now=NOW, remaining_work_gpu_hours=8,
               current_replicas=2, pauses_in_last_day=0)  # fmt: skip
    assert d.replicas == 2 and d.kind(2) == "none"


def test_a_stale_value_keeps_following_the_last_good_forecast() -> None:
    """Dirty now, clean later, per the forecast fetched before the provider went down: still waits."""
    d = decide(spec(), reading([400.0] * 10 + [50.0] * 38, stale=True), now=NOW + timedelta(minutes=90),
               remaining_work_gpu_hours=8, current_replicas=0, pauses_in_last_day=0)  # fmt: skip
    assert d.replicas == 0 and d.reason == REASON_STALE_FORECAST
    assert d.signal == SIGNAL_FOLLOWING_FORECAST and "following the last good forecast" in d.message
    assert d.deadline_condition()[1] == "OnTrack"


def test_past_the_last_forecast_the_job_runs_as_the_deadline_requires() -> None:
    old = reading([400.0] * 4, stale=True, start=NOW - timedelta(hours=10))
    d = decide(spec(), old, now=NOW, remaining_work_gpu_hours=8, current_replicas=0, pauses_in_last_day=0)
    assert d.signal == SIGNAL_NONE and d.reason == REASON_STALE and d.replicas == 1


def test_a_passed_deadline_is_reported_as_passed_not_on_track() -> None:
    d = decide(spec(hours=-1), reading([], stale=True), now=NOW, remaining_work_gpu_hours=1,
               current_replicas=0, pauses_in_last_day=0)  # fmt: skip
    assert d.replicas == 4
    assert d.deadline_condition()[:2] == ("True", "DeadlinePassed")


def test_a_feasible_plan_is_on_track() -> None:
    d = decide(spec(), reading([100.0] * 48), now=NOW, remaining_work_gpu_hours=8,
               current_replicas=0, pauses_in_last_day=0)  # fmt: skip
    assert d.deadline_condition() == ("False", "OnTrack", "the plan meets the deadline")


def test_threshold_pauses_a_dirty_hour_with_slack() -> None:
    d = decide(spec("threshold", 200), reading([500.0] * 3 + [100.0] * 45), now=NOW,
               remaining_work_gpu_hours=2, current_replicas=1, pauses_in_last_day=0)  # fmt: skip
    assert d.replicas == 0 and d.reason == REASON_INTENSITY and d.kind(1) == "pause"
    assert "above the 200 threshold" in d.message
    assert d.next_change_time is not None and d.next_change_time >= NOW + timedelta(hours=3)


def test_forecast_waits_for_the_clean_window() -> None:
    d = decide(spec(), reading([400.0] * 10 + [50.0] * 38), now=NOW, remaining_work_gpu_hours=8,
               current_replicas=0, pauses_in_last_day=0)  # fmt: skip
    assert d.replicas == 0


def test_infeasible_work_runs_at_max_and_says_so() -> None:
    d = decide(spec(hours=2, work=50), reading([100.0] * 48), now=NOW, remaining_work_gpu_hours=50,
               current_replicas=0, pauses_in_last_day=0)  # fmt: skip
    assert d.replicas == 4 and d.reason == REASON_DEADLINE and d.kind(0) == "resume"
    assert d.deadline_condition()[:2] == ("True", "Infeasible")


def test_a_passed_deadline_with_work_left_runs_at_max() -> None:
    d = decide(spec(hours=-1), reading([100.0] * 4), now=NOW, remaining_work_gpu_hours=1,
               current_replicas=1, pauses_in_last_day=0)  # fmt: skip
    assert d.replicas == 4 and d.reason == REASON_DEADLINE


def test_replicas_stay_within_min_and_max() -> None:
    for values in ([100.0] * 48, [900.0] * 4 + [10.0] * 44, [10.0 * (i % 7 + 1) for i in range(48)]):
        d = decide(spec(min=2, max=3), reading(values), now=NOW, remaining_work_gpu_hours=20,
                   current_replicas=2, pauses_in_last_day=0)  # fmt: skip
        assert d.replicas == 0 or 2 <= d.replicas <= 3


def test_a_resize_the_plan_undoes_at_once_is_skipped() -> None:
    from gridwise.decide import _transient_resize
    from gridwise.planner import Plan, PlanSlot

    def plan_of(sizes: list[int], minutes: int = 10) -> Plan:
        slots = tuple(
            PlanSlot(
                NOW + timedelta(minutes=minutes * i), NOW + timedelta(minutes=minutes * (i + 1)), n, 100.0
            )
            for i, n in enumerate(sizes)
        )
        return Plan(slots, True, "", 0.0, 0.0, None)

    s = spec()
    assert _transient_resize(plan_of([2, 1, 1, 1]), s, current=1, new=2), "10 minutes at 2 then back"
    assert not _transient_resize(plan_of([2, 2, 2, 2, 1]), s, current=1, new=2), "40 minutes at 2 is kept"
    assert not _transient_resize(plan_of([0, 1]), s, current=1, new=0), "pauses have their own hysteresis"
    assert not _transient_resize(plan_of([1, 2]), s, current=0, new=1), "resumes too"


def banded(values: list[float], band: float) -> SignalReading:
    """A fresh reading whose forecast points may each be `band` g/kWh higher (the current one is measured)."""
    plain = reading(values)
    return dataclasses.replace(plain, forecast_upper=(band,) * len(plain.forecast))


def test_forecast_policy_shades_the_forecast_with_the_readings_band() -> None:
    """10% cleaner tomorrow by forecast, but the forecast may be 60 g/kWh off a day ahead: run now."""
    values = [200.0] * 24 + [180.0] * 24
    kw: dict[str, Any] = {"now": NOW, "remaining_work_gpu_hours": 8.0, "current_replicas": 0}
    kw["pauses_in_last_day"] = 0
    assert decide(spec(), reading(values), **kw).replicas == 0
    assert decide(spec(), banded(values, 0.0), **kw).replicas == 0
    shaded = decide(spec(), banded(values, 60.0), **kw)
    assert shaded.replicas > 0
    assert decide(spec(), banded(values, 60.0), risk_fraction=0.0, **kw).replicas == 0
    assert shaded.plan is not None
    at = {slot.start: slot.intensity for slot in shaded.plan.slots}
    assert at[NOW] == pytest.approx(200.0)  # the measured value now is not shaded
    # Shaded by fraction x lead / ramp of the band, in full from the ramp's end on.
    half_ramp = NOW + timedelta(hours=DEFAULT_RISK_RAMP_HOURS / 2)
    assert at[half_ramp] == pytest.approx(200.0 + DEFAULT_RISK_FRACTION * 60.0 / 2)
    assert at[NOW + timedelta(hours=47)] == pytest.approx(180.0 + DEFAULT_RISK_FRACTION * 60.0)


def test_a_cleaner_next_hour_is_trusted_despite_a_wide_band() -> None:
    """Cleaner for the next 3 h by 10%, band 60 g/kWh: a slot re-planned within the hour is worth waiting for.

    With the band in full at every lead (no ramp, the earlier rule) the job would run now at 200.
    """
    values = [200.0] + [180.0] * 3 + [200.0] * 44
    kw: dict[str, Any] = {"now": NOW, "remaining_work_gpu_hours": 2.0, "current_replicas": 0}
    kw["pauses_in_last_day"] = 0
    waits = decide(spec(), banded(values, 60.0), **kw)
    assert waits.replicas == 0 and waits.next_change_time == NOW + timedelta(hours=1)
    assert decide(spec(), banded(values, 60.0), risk_ramp_hours=0.0, **kw).replicas > 0
    with pytest.raises(ValueError, match="ramp"):
        decide(spec(), banded(values, 60.0), risk_ramp_hours=-1.0, **kw)


def test_only_the_forecast_policy_shades() -> None:
    kw: dict[str, Any] = {"now": NOW, "remaining_work_gpu_hours": 2.0, "current_replicas": 0}
    kw["pauses_in_last_day"] = 0
    values = [150.0] * 3 + [100.0] * 45
    d = decide(spec("threshold", 120), banded(values, 100.0), **kw)
    assert d.plan is not None and d.plan.slots[-1].intensity == pytest.approx(100.0)


def test_a_band_that_does_not_match_the_forecast_is_refused() -> None:
    with pytest.raises(ValueError, match="forecast_upper"):
        dataclasses.replace(reading([100.0] * 4), forecast_upper=(1.0,))


def test_by_default_a_job_plans_on_the_forecast_of_its_whole_week() -> None:
    """A clean third day is visible to a job due in 4 days: it waits; planning on 48 h it could not see it."""
    values = [200.0] * 60 + [50.0] * 12 + [200.0] * 24
    kw: dict[str, Any] = {"now": NOW, "remaining_work_gpu_hours": 8.0, "current_replicas": 0}
    kw["pauses_in_last_day"] = 0
    assert PolicySpec().forecast_horizon_hours == DEFAULT_FORECAST_HORIZON_HOURS == 168
    assert timedelta(hours=DEFAULT_FORECAST_HORIZON_HOURS) == DEFAULT_HORIZON  # the signal forecasts as far
    waits = decide(spec(hours=96), reading(values), **kw)
    assert waits.replicas == 0 and waits.next_change_time == NOW + timedelta(hours=60)
    short = spec(hours=96)
    short = dataclasses.replace(short, policy=dataclasses.replace(short.policy, forecast_horizon_hours=48))
    assert decide(short, reading(values), **kw).replicas > 0, "past 48 h it sees only the mean"


def test_a_paused_job_counted_done_but_not_completed_runs_so_its_trainer_can_finish() -> None:
    # Left paused, a Job whose estimate reached 100% before its trainer exited would wait for ever.
    r = reading([600.0] * 72)  # a dirty grid: no other reason to run
    done = {"now": NOW, "remaining_work_gpu_hours": 0.0, "pauses_in_last_day": 0}
    paused = decide(spec(), r, current_replicas=0, **done)  # type: ignore[arg-type]
    assert paused.replicas == 1 and "has not completed" in paused.message
    running = decide(spec(), r, current_replicas=3, **done)  # type: ignore[arg-type]
    assert running.replicas == 3  # a running trainer is left to finish at its size
