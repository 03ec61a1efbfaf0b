"""One job's spec cannot make the planner's work grow without bound (far deadlines, huge work)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from gridwise.carbon.reading import IntensityPoint
from gridwise.planner import plan
from gridwise.planner.model import PlanRequest
from gridwise.planner.plan import PLAN_HORIZON

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def forecast(hours: int = 48) -> tuple[IntensityPoint, ...]:
    return tuple(
        IntensityPoint(NOW + timedelta(hours=i), NOW + timedelta(hours=i + 1), 100.0 + 50 * (i % 5))
        for i in range(hours)
    )


def request(deadline: datetime, work: float, **kw: object) -> PlanRequest:
    return PlanRequest(
        now=NOW,
        deadline=deadline,
        remaining_work_gpu_hours=work,
        min_replicas=1,
        max_replicas=4,
        power_per_replica_watts=400,
        forecast=forecast(),
        policy="forecast",
        scaling_efficiency=0.9,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("deadline", "work"),
    [
        (datetime(9999, 12, 31, tzinfo=UTC), 10.0),  # a deadline in year 9999
        (NOW + timedelta(hours=3_000_000), 50.0),  # completeWithin of millions of hours
        (NOW + timedelta(days=30), 1_000_000.0),  # infeasible: more work than fits in any grid
    ],
    ids=["year-9999", "millions-of-hours", "huge-work"],
)
def test_slot_grid_is_capped_by_the_horizon(deadline: datetime, work: float) -> None:
    started = time.perf_counter()
    result = plan(request(deadline, work, slot_minutes=1))
    elapsed = time.perf_counter() - started
    assert result.slots[-1].end <= NOW + PLAN_HORIZON
    assert len(result.slots) <= PLAN_HORIZON / timedelta(minutes=1) + 1
    assert elapsed < 30  # generous: without the cap these never finish (or exhaust memory)


def test_far_deadline_plans_at_least_the_share_that_keeps_it_feasible() -> None:
    deadline = NOW + timedelta(days=60)
    work = 400.0  # 4 replicas at 0.9 scaling do ~3.24 GPU-h/h: ~5 days of the 60
    result = plan(request(deadline, work))
    assert result.feasible
    rate = {0: 0.0, 1: 1.0, 2: 1.8, 3: 3 * 0.9**1.584962500721156, 4: 3.24}
    done = sum(rate[s.replicas] * (s.end - s.start) / timedelta(hours=1) for s in result.slots)
    must = work - 3.24 * ((deadline - NOW - PLAN_HORIZON) / timedelta(hours=1))
    assert done >= max(must, 0.0) - 1e-6
    assert done >= work * (PLAN_HORIZON / (deadline - NOW)) - 0.5  # the time-proportional share


def test_deadline_inside_the_horizon_is_unchanged() -> None:
    deadline = NOW + timedelta(days=3)
    result = plan(request(deadline, 20.0))
    assert result.slots[-1].end == deadline
