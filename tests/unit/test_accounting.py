"""Energy and emissions arithmetic: pods that really ran, split intervals, back-fill, avoided parts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridwise.accounting import Model, Totals, Usage, advance, changes_for, throughput

T = datetime(2022, 6, 1, tzinfo=UTC)


def model(**kw: float) -> Model:
    return Model(
        power_per_replica_watts=kw.get("power", 500.0),
        scaling_efficiency=kw.get("eff", 1.0),
        max_replicas=int(kw.get("max", 2)),
        work_gpu_hours=kw.get("work", 10.0),
    )


def step(
    totals: Totals,
    hours: float,
    replicas: int,
    intensity: float | None,
    *,
    start: datetime = T,
    after: Usage | None = None,
    energy: float | None = None,
    work_done: float | None = None,
    **kw: float,
) -> Totals:
    before = Usage(replicas, replicas)
    return advance(
        totals,
        start=start,
        end=start + timedelta(hours=hours),
        before=before,
        after=after if after is not None else before,
        intensities=[(start, intensity)],
        model=model(**kw),
        measured_energy_joules=energy,
        measured_work_gpu_hours=work_done,
    )


def test_energy_and_emissions_of_one_hour() -> None:
    t = step(Totals(), 1, 2, 100.0)
    assert t.energy_joules == pytest.approx(2 * 500 * 3600)
    assert t.emissions_grams == pytest.approx(1.0 * 100)  # 1 kWh at 100 g/kWh
    assert t.work_done_gpu_hours == pytest.approx(2.0)


def test_paused_time_costs_nothing_but_the_baseline_runs() -> None:
    t = step(Totals(), 1, 0, 300.0)
    assert t.energy_joules == 0 and t.emissions_grams == 0 and t.work_done_gpu_hours == 0
    assert t.baseline_emissions_grams == pytest.approx(300.0)  # max=2 replicas, 1 kWh
    assert t.baseline_work_gpu_hours == pytest.approx(2.0)
    assert t.baseline_energy_joules == pytest.approx(3.6e6)


def test_shifting_work_to_clean_hours_avoids_emissions_by_timing() -> None:
    t = step(Totals(), 5, 0, 400.0)  # baseline does all 10 GPU-h at 400 g/kWh: 5 kWh -> 2000 g
    t = step(t, 5, 2, 100.0, start=T + timedelta(hours=5))  # we do it later at 100 g/kWh: 500 g
    assert t.baseline_emissions_grams == pytest.approx(2000.0)
    assert t.emissions_grams == pytest.approx(500.0)
    avoided = t.avoided()
    assert avoided.total_grams == pytest.approx(1500.0)
    assert avoided.timing_grams == pytest.approx(1500.0), "same width as the baseline: all of it is timing"
    assert avoided.width_grams == pytest.approx(0.0, abs=1e-9)


def test_on_a_flat_grid_a_narrow_job_avoids_nothing_by_timing() -> None:
    """1 of 4 replicas with sub-linear scaling: the saving is width (less energy per work), not timing."""
    t = step(Totals(), 10, 1, 300.0, max=4, eff=0.9, work=100.0)
    avoided = t.avoided()
    assert avoided.timing_grams == pytest.approx(0.0, abs=1e-6)
    assert avoided.width_grams > 0
    assert avoided.total_grams == pytest.approx((t.baseline_grams_per_gpu_hour or 0) * 10 - t.emissions_grams)
    assert avoided.total_grams / ((t.baseline_grams_per_gpu_hour or 0) * 10) == pytest.approx(
        1 - 0.81, abs=1e-3
    )


def test_the_two_parts_add_up_on_a_varying_grid() -> None:
    t = step(Totals(), 2, 0, 500.0, max=4, eff=0.8, work=20.0)
    t = step(t, 6, 2, 100.0, start=T + timedelta(hours=2), max=4, eff=0.8, work=20.0)
    a = t.avoided()
    assert a.timing_grams > 0 and a.width_grams > 0
    assert a.timing_grams + a.width_grams == pytest.approx(t.avoided_grams())


def test_estimated_replicas_stop_drawing_power_when_the_work_is_done() -> None:
    t = step(Totals(), 10, 1, 100.0, work=2.0)
    assert t.work_done_gpu_hours == pytest.approx(2.0)
    assert t.energy_joules == pytest.approx(500 * 2 * 3600)


def test_measured_energy_wins_over_the_model() -> None:
    t = step(Totals(), 1, 2, 100.0, energy=1.8e6)
    assert t.energy_joules == pytest.approx(1.8e6)
    assert t.emissions_grams == pytest.approx(0.5 * 100)


def test_a_measured_gpu_below_its_nameplate_is_not_width() -> None:
    """Flat grid, 1 replica of max 1, the trainer measures half the nameplate: nothing was avoided."""
    t = step(Totals(), 10, 1, 300.0, max=1, energy=0.5 * 500 * 10 * 3600)
    avoided = t.avoided()
    assert avoided.width_grams == pytest.approx(0.0, abs=1e-6), "the baseline is measured-kind too"
    assert avoided.timing_grams == pytest.approx(0.0, abs=1e-6)
    assert t.scaled_baseline_emissions_grams == pytest.approx(t.emissions_grams)


def test_the_baseline_is_scaled_where_it_ran_while_the_job_was_paused() -> None:
    """The baseline mostly runs while the job waits (nothing measured then): the scale covers it too."""
    t = step(Totals(), 2, 0, 300.0, max=1)
    t = step(t, 10, 1, 300.0, start=T + timedelta(hours=2), max=1, energy=0.5 * 500 * 10 * 3600)
    assert t.work_done_gpu_hours == pytest.approx(10.0) and t.baseline_work_gpu_hours == pytest.approx(10.0)
    avoided = t.avoided()
    assert avoided.width_grams == pytest.approx(0.0, abs=1e-6)
    assert avoided.timing_grams == pytest.approx(0.0, abs=1e-6)


def test_without_measurements_the_baseline_is_the_model() -> None:
    t = step(Totals(), 10, 1, 300.0, max=4, eff=0.9, work=100.0)
    assert t.baseline_scale == 1.0 and t.model_energy_joules == pytest.approx(t.energy_joules)
    legacy = Totals(energy_joules=3.6e6, emissions_grams=100, work_done_gpu_hours=3)
    assert legacy.baseline_scale == 1.0, "totals from before model_energy_joules are the model's"


def test_pending_pods_do_no_work_and_draw_nothing() -> None:
    t = advance(
        Totals(), start=T, end=T + timedelta(hours=1), before=Usage(0, 0), after=Usage(0, 0),
        intensities=[(T, 100.0)], model=model(),
    )  # fmt: skip
    assert t.work_done_gpu_hours == 0 and t.energy_joules == 0


def test_terminating_pods_draw_power_but_do_no_work() -> None:
    """After a pause is patched the pods checkpoint for their grace period: energy, no work."""
    t = advance(
        Totals(), start=T, end=T + timedelta(minutes=2), before=Usage(0, 2), after=Usage(0, 2),
        intensities=[(T, 100.0)], model=model(),
    )  # fmt: skip
    assert t.work_done_gpu_hours == 0
    assert t.energy_joules == pytest.approx(2 * 500 * 120)


def test_a_pod_count_change_is_booked_half_and_half() -> None:
    t = advance(
        Totals(), start=T, end=T + timedelta(hours=2), before=Usage(0, 0), after=Usage(2, 2),
        intensities=[(T, 100.0)], model=model(),
    )  # fmt: skip
    assert t.work_done_gpu_hours == pytest.approx(2.0)  # 1 h at 0, 1 h at 2
    assert t.energy_joules == pytest.approx(2 * 500 * 3600)


def test_pods_that_say_when_they_started_are_booked_from_their_start() -> None:
    # A 2-hour gap (an operator restart): Pending at its start, two pods Running at its end that
    # started 30 and 90 minutes in. Booked from their starts, not half the gap at 2.
    starts = [T + timedelta(minutes=90), T + timedelta(minutes=30)]
    t = advance(
        Totals(), start=T, end=T + timedelta(hours=2), before=Usage(0, 0), after=Usage(2, 2),
        intensities=[(T, 100.0)], model=model(), started=starts,
    )  # fmt: skip
    assert t.work_done_gpu_hours == pytest.approx(1.5 + 0.5)
    assert t.energy_joules == pytest.approx(500 * 3600 * 2.0)
    # A pod already running before the gap (the last status was written before it started
    # running, but the one that said so was lost) counts from the gap's start; only the new pod
    # (the latest start) steps up inside it.
    early = [T - timedelta(hours=1), T + timedelta(hours=1)]
    t = advance(
        Totals(), start=T, end=T + timedelta(hours=2), before=Usage(1, 1), after=Usage(2, 2),
        intensities=[(T, 100.0)], model=model(), started=early,
    )  # fmt: skip
    assert t.work_done_gpu_hours == pytest.approx(2.0 + 1.0)


def test_a_job_that_says_when_it_finished_stops_drawing_then() -> None:
    # The operator was away for 2 hours; the Job finished 30 minutes in.
    t = advance(
        Totals(), start=T, end=T + timedelta(hours=2), before=Usage(2, 2), after=Usage(0, 0),
        intensities=[(T, 100.0)], model=model(), ended=T + timedelta(minutes=30),
    )  # fmt: skip
    assert t.work_done_gpu_hours == pytest.approx(1.0)  # 2 pods x 30 min, not 2 x 60
    # Finished before the interval: nothing more; a pod still seen running: the finish says nothing.
    before = advance(
        Totals(), start=T, end=T + timedelta(hours=2), before=Usage(2, 2), after=Usage(0, 0),
        intensities=[(T, 100.0)], model=model(), ended=T - timedelta(minutes=1),
    )  # fmt: skip
    assert before.work_done_gpu_hours == 0.0
    lag = advance(
        Totals(), start=T, end=T + timedelta(hours=2), before=Usage(2, 2), after=Usage(1, 1),
        intensities=[(T, 100.0)], model=model(), ended=T + timedelta(minutes=30),
    )  # fmt: skip
    assert lag.work_done_gpu_hours == pytest.approx(3.0)


def test_without_start_times_or_for_pods_gone_the_midpoint_stays() -> None:
    gone = advance(
        Totals(), start=T, end=T + timedelta(hours=2), before=Usage(2, 2), after=Usage(1, 1),
        intensities=[(T, 100.0)], model=model(), started=[T - timedelta(hours=5)],
    )  # fmt: skip
    assert gone.work_done_gpu_hours == pytest.approx(2.0 + 1.0)  # 1 h at 2, 1 h at 1
    unknown = advance(
        Totals(), start=T, end=T + timedelta(hours=2), before=Usage(0, 0), after=Usage(2, 2),
        intensities=[(T, 100.0)], model=model(), started=[T + timedelta(minutes=90)],
    )  # fmt: skip
    assert unknown.work_done_gpu_hours == pytest.approx(2.0)  # one start for two new pods: midpoint
    # A terminating pod left as a new one started: the starts do not say which pods draw power.
    mixed = advance(
        Totals(), start=T, end=T + timedelta(hours=2), before=Usage(0, 1), after=Usage(1, 1),
        intensities=[(T, 100.0)], model=model(), started=[T + timedelta(minutes=90)],
    )  # fmt: skip
    assert mixed.work_done_gpu_hours == pytest.approx(1.0)  # the midpoint, not the start (0.5)


def test_the_interval_is_split_where_the_intensity_changed() -> None:
    changes = changes_for(T, 100.0, 500.0, T + timedelta(minutes=30))
    t = advance(
        Totals(), start=T, end=T + timedelta(hours=1), before=Usage(2, 2), after=Usage(2, 2),
        intensities=changes, model=model(),
    )  # fmt: skip
    # 0.5 kWh at 100 then 0.5 kWh at 500
    assert t.emissions_grams == pytest.approx(50 + 250)


def test_time_before_the_first_reading_is_back_filled() -> None:
    t = advance(
        Totals(), start=T, end=T + timedelta(hours=1), before=Usage(2, 2), after=Usage(2, 2),
        intensities=changes_for(T, None, None, None), model=model(),
    )  # fmt: skip
    assert t.emissions_grams == 0 and t.unpriced_energy_joules == pytest.approx(3.6e6)
    assert t.avoided_grams() == 0, "nothing is claimed while the energy has no price"
    start = T + timedelta(hours=1)
    t = advance(
        t, start=start, end=start + timedelta(hours=1), before=Usage(2, 2), after=Usage(2, 2),
        intensities=changes_for(start, None, 200.0, start), model=model(),
    )  # fmt: skip
    assert t.unpriced_energy_joules == 0
    assert t.emissions_grams == pytest.approx(2 * 200.0), "both hours priced at the first reading"
    assert t.baseline_emissions_grams == pytest.approx(2 * 200.0)


def test_measured_work_replaces_the_model() -> None:
    t = step(Totals(), 1, 2, 100.0, work_done=0.5)
    assert t.work_done_gpu_hours == pytest.approx(0.5)


def test_scaling_efficiency_model() -> None:
    assert throughput(0, 0.9) == 0
    assert throughput(1, 0.9) == 1
    assert throughput(4, 0.9) == pytest.approx(4 * 0.81)
