"""The operator's energy and emissions arithmetic, including the run-now baseline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridwise.accounting import Totals, advance, throughput

T = datetime(2022, 6, 1, tzinfo=UTC)


def step(totals: Totals, hours: float, replicas: int, intensity: float, **kw: float) -> Totals:
    return advance(
        totals,
        start=T,
        end=T + timedelta(hours=hours),
        replicas=replicas,
        intensity_grams_per_kwh=intensity,
        power_per_replica_watts=kw.get("power", 500.0),
        scaling_efficiency=kw.get("eff", 1.0),
        max_replicas=int(kw.get("max", 2)),
        work_gpu_hours=kw.get("work", 10.0),
        measured_energy_joules=kw.get("energy"),
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


def test_shifting_work_to_clean_hours_avoids_emissions() -> None:
    t = step(Totals(), 5, 0, 400.0)  # baseline does all 10 GPU-h at 400 g/kWh: 5 kWh -> 2000 g
    t = step(t, 5, 2, 100.0)  # we do it later at 100 g/kWh: 500 g
    assert t.baseline_emissions_grams == pytest.approx(2000.0)
    assert t.emissions_grams == pytest.approx(500.0)
    assert t.avoided_grams() == pytest.approx(1500.0)


def test_estimated_replicas_stop_drawing_power_when_the_work_is_done() -> None:
    t = step(Totals(), 10, 1, 100.0, work=2.0)
    assert t.work_done_gpu_hours == pytest.approx(2.0)
    assert t.energy_joules == pytest.approx(500 * 2 * 3600)


def test_measured_energy_wins_over_the_model() -> None:
    t = step(Totals(), 1, 2, 100.0, energy=1.8e6)
    assert t.energy_joules == pytest.approx(1.8e6)
    assert t.emissions_grams == pytest.approx(0.5 * 100)


def test_scaling_efficiency_model() -> None:
    assert throughput(0, 0.9) == 0
    assert throughput(1, 0.9) == 1
    assert throughput(4, 0.9) == pytest.approx(4 * 0.81)
