"""Planner properties over many random cases (fixed seed) plus the policies' defining behaviours."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from gridwise.carbon.reading import IntensityPoint
from gridwise.planner import POLICIES, PlanRequest, plan
from gridwise.planner.baselines import carbonscaler, stretch_replicas, waitawhile
from gridwise.planner.policies import Problem, carbon_optimal
from gridwise.planner.risk import lead_weight, shade
from gridwise.planner.scaling import throughputs

NOW = datetime(2022, 6, 1, 0, 20, tzinfo=UTC)


START = NOW.replace(minute=0)


def hourly(values: list[float], start: datetime = START) -> list[IntensityPoint]:
    return [
        IntensityPoint(start + timedelta(hours=i), start + timedelta(hours=i + 1), v)
        for i, v in enumerate(values)
    ]


def daily_wave(hours: int, rng: random.Random) -> list[IntensityPoint]:
    return hourly(
        [max(0.0, 200 + 120 * math.sin(2 * math.pi * i / 24) + rng.gauss(0, 30)) for i in range(hours)]
    )


def request(**overrides: object) -> PlanRequest:
    base: dict[str, object] = {
        "now": NOW,
        "deadline": NOW + timedelta(hours=48),
        "remaining_work_gpu_hours": 40.0,
        "min_replicas": 1,
        "max_replicas": 4,
        "power_per_replica_watts": 400.0,
        "forecast": daily_wave(72, random.Random(0)),
        "policy": "forecast",
        "threshold_grams_per_kwh": 200.0,
    }
    base.update(overrides)
    return PlanRequest(**base)  # type: ignore[arg-type]


def work_done(p: PlanRequest, replicas: list[int], hours: list[float]) -> float:
    rates = throughputs(p.max_replicas, p.scaling_efficiency, p.throughput_table)
    return sum(rates[n] * h for n, h in zip(replicas, hours, strict=True))


@pytest.mark.parametrize("policy", POLICIES)
def test_random_feasible_cases_meet_deadline_and_respect_bounds(policy: str) -> None:
    rng = random.Random(20240601)
    for _ in range(150):
        low = rng.randint(1, 4)
        high = rng.randint(low, 8)
        eff = rng.uniform(0.7, 1.0)
        hours_left = rng.uniform(2, 70)
        now = NOW + timedelta(minutes=rng.randint(0, 59))
        switch = rng.choice([0.0, 0.1, 0.5])
        capacity = high * eff ** math.log2(high) * hours_left
        work = rng.uniform(0.05, 0.98) * capacity - (switch if rng.random() < 0.5 else 0)
        req = request(
            now=now,
            deadline=now + timedelta(hours=hours_left),
            remaining_work_gpu_hours=max(0.01, work - switch),
            min_replicas=low,
            max_replicas=high,
            scaling_efficiency=eff,
            switching_cost_gpu_hours=switch,
            forecast=daily_wave(80, rng),
            policy=policy,
            current_replicas=rng.choice([0, low]),
            max_pauses_per_day=rng.choice([None, 0, 1, 3]),
        )
        result = plan(req)
        assert result.feasible, result.reason
        assert result.finish_time is not None and result.finish_time <= req.deadline + timedelta(seconds=1)
        for slot in result.slots:
            assert slot.replicas == 0 or low <= slot.replicas <= high
        hours = [(s.end - s.start).total_seconds() / 3600 for s in result.slots]
        starts = sum(
            1
            for i, s in enumerate(result.slots)
            if s.replicas and not (result.slots[i - 1].replicas if i else req.current_replicas)
        )
        assert work_done(req, [s.replicas for s in result.slots], hours) >= (
            req.remaining_work_gpu_hours + starts * switch - 1e-6
        )
        assert result.slots[0].start == now and result.slots[-1].end == req.deadline


def test_infeasible_runs_at_max_now_and_says_so() -> None:
    result = plan(request(remaining_work_gpu_hours=500.0, policy="forecast"))
    assert not result.feasible and "infeasible" in result.reason
    assert result.replicas_now == 4 and all(s.replicas in (4, 0) for s in result.slots)
    assert result.finish_time is not None and result.finish_time > NOW + timedelta(hours=48)


def test_forecast_policy_beats_agnostic_and_runs_in_clean_hours() -> None:
    values = [300.0] * 12 + [50.0] * 12 + [300.0] * 24
    base = request(forecast=hourly(values), remaining_work_gpu_hours=20.0, deadline=NOW + timedelta(hours=40))
    agnostic = plan(request(**{**base.__dict__, "policy": "agnostic"}))
    carbon = plan(base)
    assert carbon.expected_emissions_g < 0.5 * agnostic.expected_emissions_g
    assert agnostic.replicas_now == 4
    running = [s for s in carbon.slots if s.replicas]
    assert running and all(s.intensity == 50.0 for s in running)


def test_threshold_pauses_above_threshold_and_guard_forces_run() -> None:
    values = [400.0] * 6 + [100.0] * 6 + [400.0] * 40
    relaxed = plan(request(forecast=hourly(values), policy="threshold", remaining_work_gpu_hours=8.0))
    assert all(s.replicas == 0 for s in relaxed.slots if s.intensity > 200)
    tight = plan(
        request(
            forecast=hourly([400.0] * 52),
            policy="threshold",
            remaining_work_gpu_hours=8.0,
            deadline=NOW + timedelta(hours=3),
        )
    )
    assert tight.feasible and tight.finish_time is not None and tight.finish_time <= NOW + timedelta(hours=3)
    assert any(s.replicas for s in tight.slots)


def test_hysteresis_reduces_pauses() -> None:
    # A short dip in clean power between two clean stretches: not worth a pause once a resume costs work.
    rng = random.Random(3)
    values = [50.0 + rng.uniform(-5, 5) if (i // 2) % 2 == 0 else 80.0 for i in range(48)]
    free = plan(request(forecast=hourly(values), remaining_work_gpu_hours=30.0, switching_cost_gpu_hours=0.0))
    costly = plan(
        request(forecast=hourly(values), remaining_work_gpu_hours=30.0, switching_cost_gpu_hours=1.0)
    )
    assert free.pauses > costly.pauses
    capped = plan(
        request(
            forecast=hourly(values),
            remaining_work_gpu_hours=30.0,
            switching_cost_gpu_hours=0.0,
            max_pauses_per_day=1,
        )
    )
    assert capped.pauses <= 2 and capped.feasible


def test_throughput_table_is_used() -> None:
    table = {1: 1.0, 2: 1.2, 4: 1.3}  # scaling stalls: extra replicas burn power for little work
    result = plan(request(throughput_table=table, remaining_work_gpu_hours=10.0))
    assert max(s.replicas for s in result.slots) <= 2
    assert throughputs(4, 1.0, table) == (0.0, 1.0, 1.2, 1.25, 1.3)
    with pytest.raises(ValueError, match="throughput_table"):
        plan(request(throughput_table={1: 1.0, 2: 1.5}))


def test_next_change_and_replicas_now() -> None:
    result = plan(request(forecast=hourly([300.0] * 3 + [10.0] * 50), remaining_work_gpu_hours=4.0))
    assert result.replicas_now == 0
    change = result.next_change()
    assert change is not None and change.replicas > 0 and change.start >= NOW + timedelta(hours=2)


def test_no_work_is_a_no_op() -> None:
    result = plan(request(remaining_work_gpu_hours=0.0))
    assert result.feasible and all(s.replicas == 0 for s in result.slots) and result.expected_energy_kwh == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"deadline": NOW - timedelta(hours=1)}, "before now"),
        ({"remaining_work_gpu_hours": -1.0}, "remaining_work"),
        ({"min_replicas": 5, "max_replicas": 2}, "greater than max_replicas"),
        ({"forecast": []}, "empty"),
        ({"policy": "yolo"}, "known policies"),
        ({"policy": "threshold", "threshold_grams_per_kwh": None}, "threshold"),
        ({"scaling_efficiency": 1.5}, "scaling_efficiency"),
        ({"power_per_replica_watts": 0.0}, "power"),
        ({"now": datetime(2022, 6, 1)}, "timezone"),
    ],
)
def test_bad_input_raises_value_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(request(**overrides))


def test_emissions_use_slot_intensity() -> None:
    result = plan(
        request(
            forecast=hourly([100.0] * 60),
            policy="agnostic",
            remaining_work_gpu_hours=4.0,
            switching_cost_gpu_hours=0.0,
            max_replicas=1,
        )
    )
    assert result.expected_energy_kwh == pytest.approx(4 * 0.4)
    assert result.expected_emissions_g == pytest.approx(4 * 0.4 * 100)


def _problem(intensity: list[float], work: float, lo: int = 1, hi: int = 2, switch: float = 0.0) -> Problem:
    return Problem(
        hours=tuple(1.0 for _ in intensity),
        intensity=tuple(intensity),
        rates=throughputs(hi, 0.9, None),
        min_replicas=lo,
        max_replicas=hi,
        work=work,
        switch_work=switch,
        running_now=False,
        power_kw=0.4,
        day=tuple(0 for _ in intensity),
    )


def test_stretch_is_the_fewest_replicas_that_meet_the_deadline() -> None:
    rates = throughputs(8, 0.9, None)
    assert stretch_replicas(rates, 1, 8, need=10.0, hours=10.0) == 1
    assert stretch_replicas(rates, 1, 8, need=10.1, hours=10.0) == 2
    assert stretch_replicas(rates, 2, 8, need=1.0, hours=10.0) == 2
    assert stretch_replicas(rates, 1, 8, need=1000.0, hours=10.0) == 8


def test_waitawhile_runs_at_max_in_the_cheapest_slots() -> None:
    alloc = waitawhile(_problem([300, 100, 250, 90, 400], work=3.5, switch=0.0))
    assert alloc == [0, 2, 0, 2, 0]
    # A resume per run is work too: a third slot is needed once each run costs 0.3.
    assert waitawhile(_problem([300, 100, 250, 90, 400], work=3.5, switch=0.3)).count(2) == 3


def test_carbonscaler_scales_up_in_clean_slots_first() -> None:
    alloc = carbonscaler(_problem([300, 100, 250, 90, 400], work=2.0, hi=4))
    # The cleanest slot gets replicas until its marginal efficiency falls below the next slot's.
    assert alloc[3] >= alloc[1] >= 1 and alloc[0] == alloc[4] == 0
    covered = sum(throughputs(4, 0.9, None)[n] for n in alloc)
    assert covered >= 2.0 + 0.0 - 1e-9


def test_shading_raises_only_by_the_upper_error() -> None:
    assert shade((100.0, 200.0), (10.0, -5.0), 0.5) == (105.0, 200.0)
    assert shade((100.0,), (10.0,), 0.0) == (100.0,)
    with pytest.raises(ValueError, match="shading fraction"):
        shade((100.0,), (10.0,), -1.0)


def test_shading_ramps_in_with_the_lead() -> None:
    """fraction x min(1, lead / ramp) of the band: nothing now, half at half the ramp, all beyond it."""
    assert lead_weight(0.0, 24.0) == 0.0
    assert lead_weight(6.0, 24.0) == pytest.approx(0.25)
    assert lead_weight(24.0, 24.0) == lead_weight(100.0, 24.0) == 1.0
    assert lead_weight(-1.0, 24.0) == 0.0
    assert lead_weight(0.0, 0.0) == 1.0, "no ramp: the band in full at every lead"
    values, errors = (100.0, 100.0, 100.0), (40.0, 40.0, 40.0)
    assert shade(values, errors, 0.5, (0.0, 12.0, 48.0), 24.0) == pytest.approx((100.0, 110.0, 120.0))
    assert shade(values, errors, 0.5, (0.0, 12.0, 48.0), 0.0) == pytest.approx((120.0,) * 3)
    with pytest.raises(ValueError, match="ramp"):
        lead_weight(1.0, -2.0)


def test_shaded_future_keeps_a_small_forecast_saving_from_deferring() -> None:
    """Later is 10% cleaner by forecast, but the forecast may be 20% off there: run now."""
    values = (200.0, 180.0, 180.0, 180.0)
    errors = (0.0, 40.0, 40.0, 40.0)
    problem = _problem(list(values), work=1.8, hi=1)
    assert carbon_optimal(problem)[0] == 0  # trusting the forecast defers
    shaded = _problem(list(shade(values, errors, 1.0)), work=1.8, hi=1)
    assert carbon_optimal(shaded)[0] == 1  # knowing its error does not


def test_a_plans_slots_read_from_its_columns_are_the_slots_it_describes() -> None:
    """Slots are kept as columns and made on reading; every way of reading them must agree."""
    deadline = NOW + timedelta(hours=30, minutes=10)  # now and the deadline both fall mid-slot
    result = plan(request(deadline=deadline, policy="threshold", remaining_work_gpu_hours=30.0))
    slots = list(result.slots)
    assert slots[0].start == NOW and slots[-1].end == deadline
    assert all(a.end == b.start for a, b in itertools.pairwise(slots))
    assert all(s.start.minute == 0 for s in slots[1:])  # boundaries on the hour grid
    assert result.slots[-1] == slots[-1] and result.slots[-len(slots)] == slots[0]
    assert result.slots[2:5] == tuple(slots[2:5]) and result.slots == tuple(slots)
    assert result.replicas == tuple(s.replicas for s in slots)
    change = result.next_change()
    first = next((s for s in slots if s.replicas != slots[0].replicas), None)
    assert change == first
    assert result.kept_from_now() == (first.start if first else deadline) - NOW
    with pytest.raises(IndexError):
        result.slots[len(slots)]
