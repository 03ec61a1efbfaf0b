"""The simulator's operator path and the live operator decide the same way on the same inputs.

Live: a CarbonSignal over a trace provider on a manual clock (the ensemble over its history, the
error band on the reading) and decide(). Simulated: simulate/forecasts.py's reading and the same
decide(). Same trace, same times, same spec: the same forecast, band and decisions.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import FIXTURES
from gridwise.api import JobSpec
from gridwise.carbon import CarbonSignal, SignalReading
from gridwise.carbon.providers.trace import TraceProvider
from gridwise.carbon.traces import Trace, load_trace
from gridwise.clock import ManualClock
from gridwise.decide import decide
from gridwise.simulate import SimJob, SimSettings, operator_path, simulate
from gridwise.simulate.forecasts import ForecastSource

TRACE = FIXTURES / "em_us-cal-ciso_2022-04_hourly.csv"
DAY0 = datetime(2022, 4, 24, tzinfo=UTC)
JOBS = [
    SimJob("long", DAY0 + timedelta(hours=3), DAY0 + timedelta(hours=51), 40, 1, 4, 500, 0.9),
    SimJob("mid", DAY0 + timedelta(hours=9, minutes=20), DAY0 + timedelta(hours=33), 12, 1, 2, 400, 0.95),
]


async def _live_reading(signal: CarbonSignal, clock: ManualClock, now: datetime) -> SignalReading:
    clock.set(now)
    return await signal.read()


def _signal(trace: Trace, start: datetime) -> tuple[CarbonSignal, ManualClock]:
    clock = ManualClock(start)
    provider = TraceProvider(zone=trace.zone, trace=trace, clock=clock)
    return CarbonSignal(provider, clock=clock, min_interval_s=0), clock


def _same(live: SignalReading, sim: SignalReading) -> None:
    assert live.current == sim.current
    assert [(p.start, p.end) for p in live.forecast] == [(p.start, p.end) for p in sim.forecast]
    assert [p.grams_per_kwh for p in live.forecast] == pytest.approx(
        [p.grams_per_kwh for p in sim.forecast], abs=1e-9
    )
    assert live.forecast_upper == pytest.approx(sim.forecast_upper, abs=1e-9)


async def test_the_simulated_reading_is_the_live_reading() -> None:
    trace = load_trace(TRACE)
    source = ForecastSource(trace, "ensemble")
    signal, clock = _signal(trace, DAY0)
    spec = operator_path.job_spec(JOBS[0], operator_path.OperatorSettings("forecast", 0.1, 6), None)
    for now in (DAY0 + timedelta(hours=3), DAY0 + timedelta(hours=3, minutes=40), DAY0 + timedelta(hours=30)):
        live = await _live_reading(signal, clock, now)
        sim = operator_path.reading(trace.zone, trace.signal_type, source.live(now), now)
        assert not live.stale and live.forecast_upper and live.current is not None
        assert live.forecast[0].start == live.current.end  # forecast after the measured value
        _same(live, sim)
        kwargs: dict[str, Any] = {"now": now, "remaining_work_gpu_hours": 30.0, "current_replicas": 0}
        a = decide(spec, live, pauses_in_last_day=0, **kwargs)
        b = decide(spec, sim, pauses_in_last_day=0, **kwargs)
        assert (a.replicas, a.reason, a.next_change_time) == (b.replicas, b.reason, b.next_change_time)
        assert a.plan is not None and b.plan is not None
        assert [s.replicas for s in a.plan.slots] == [s.replicas for s in b.plan.slots]


async def test_every_simulated_decision_is_the_live_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the simulator, record every decide() call, replay each on a live CarbonSignal: same answer."""
    calls: list[tuple[JobSpec, SignalReading, dict[str, Any], int]] = []
    real = decide  # what operator_path imported and calls

    def spy(spec: JobSpec, reading: SignalReading, **kwargs: Any) -> Any:
        decision = real(spec, reading, **kwargs)
        calls.append((spec, reading, kwargs, decision.replicas))
        return decision

    monkeypatch.setattr(operator_path, "decide", spy)
    trace = load_trace(TRACE)
    settings = SimSettings(policy="forecast", slot=timedelta(hours=1))
    result = simulate(trace, JOBS, settings, ForecastSource(trace, "ensemble"))
    assert len(calls) == sum(len(job.timeline) for job in result.jobs) > 20
    by_job: dict[str, list[tuple[JobSpec, SignalReading, dict[str, Any], int]]] = defaultdict(list)
    for call in calls:
        by_job[call[0].name].append(call)
    paused = 0
    for job_calls in by_job.values():
        signal, clock = _signal(trace, job_calls[0][2]["now"])
        for spec, sim_reading, kwargs, replicas in job_calls:
            live = await _live_reading(signal, clock, kwargs["now"])
            _same(live, sim_reading)
            assert real(spec, live, **kwargs).replicas == replicas, kwargs["now"]
            paused += replicas == 0
    assert paused > 0  # the forecast policy did defer work: the comparison covers pauses too


def test_the_baselines_outlook_is_the_live_one_within_the_horizon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A --compare run asks both for each time: one ensemble forecast serves both, and they agree."""
    import gridwise.simulate.forecasts as forecasts
    from gridwise.carbon.outlook import outlook

    made: list[datetime] = []
    real = outlook  # what forecasts imported and calls

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs["now"])
        return real(*args, **kwargs)

    monkeypatch.setattr(forecasts, "outlook", counting)
    trace = load_trace(TRACE)
    source = ForecastSource(trace, "ensemble")
    now = DAY0 + timedelta(hours=5)
    live = source.live(now)
    within = source.at(now, now + timedelta(hours=48))
    assert made == [now]
    assert within.points == (live.current, *live.forecast)
    assert within.upper_error == (0.0, *live.upper_error)
    beyond = source.at(now + timedelta(hours=1), now + source.horizon + timedelta(days=3))
    assert made == [now, now + timedelta(hours=1)] and beyond.points[-1].end >= now + source.horizon
