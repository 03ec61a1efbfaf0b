"""The slot grid as arrays gives, to the last bit, what the plain slot-by-slot definition gives.

`reference_grid` is the definition, written as simply as possible (it was the implementation until the
grid moved to numpy for speed); the planner's decisions must not move by a rounding when it changes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from gridwise.carbon import IntensityPoint
from gridwise.carbon.reading import EPOCH
from gridwise.planner import policies
from gridwise.planner.plan import _days
from gridwise.planner.slots import Grid, build_grid

BASE = datetime(2030, 1, 6, tzinfo=UTC)


def reference_grid(
    now: datetime, end: datetime, slot: timedelta, forecast: Sequence[IntensityPoint]
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...], int]:
    """(edges, hours, intensity, covered): each slot's time-weighted forecast mean, its mean past it."""
    t_now, t_end = (now - EPOCH).total_seconds(), (end - EPOCH).total_seconds()
    step = slot.total_seconds()
    edges = [t_now]
    boundary = (t_now // step + 1) * step
    while boundary < t_end:
        edges.append(boundary)
        boundary += step
    if t_end > t_now:
        edges.append(t_end)
    points = sorted(forecast, key=lambda p: p.start)
    p_start = [(p.start - EPOCH).total_seconds() for p in points]
    p_end = [(p.end - EPOCH).total_seconds() for p in points]
    p_val = [p.grams_per_kwh for p in points]
    total = sum(e - s for s, e in zip(p_start, p_end, strict=True))
    mean = sum(v * (e - s) for s, e, v in zip(p_start, p_end, p_val, strict=True)) / total
    values: list[float] = []
    covered = index = 0
    for start, stop in itertools.pairwise(edges):
        while index < len(points) and p_end[index] <= start:
            index += 1
        weighted = seconds = 0.0
        probe = index
        while probe < len(points) and p_start[probe] < stop:
            overlap = min(stop, p_end[probe]) - max(start, p_start[probe])
            if overlap > 0:
                weighted += overlap * p_val[probe]
                seconds += overlap
            probe += 1
        span = stop - start
        if seconds > 0:
            values.append((weighted + (span - seconds) * mean) / span)
            if seconds >= span * 0.999:
                covered = len(values)
        else:
            values.append(mean)
    hours = tuple((b - a) / 3600 for a, b in itertools.pairwise(edges))
    return tuple(edges), hours, tuple(values), covered


def random_forecast(rng: random.Random) -> list[IntensityPoint]:
    """Mostly regular points, some of odd length, some gaps and overlaps, in shuffled order."""
    step = timedelta(minutes=rng.choice([5, 15, 30, 60]))
    t = BASE + timedelta(minutes=5 * rng.randint(-600, 600))
    points = []
    for _ in range(rng.randint(1, 200)):
        length = step if rng.random() > 0.1 else timedelta(minutes=rng.randint(1, 120))
        if rng.random() < 0.05:
            t += timedelta(minutes=rng.randint(-30, 60))
        points.append(IntensityPoint(t, t + length, rng.uniform(0, 900)))
        t += length
    rng.shuffle(points)
    return points


@pytest.mark.parametrize("seed", range(6))
def test_the_grid_is_the_slot_by_slot_definition_to_the_last_bit(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        now = BASE + timedelta(seconds=rng.uniform(0, 3 * 86400))
        slot = timedelta(minutes=rng.choice([1, 7, 15, 30, 60, 90, 1440]))
        end = now + timedelta(
            seconds=rng.choice([0.0, -5.0, rng.uniform(0, 3600), rng.uniform(0, 14 * 86400)])
        )
        forecast = random_forecast(rng)
        grid = build_grid(now, end, slot, forecast)
        assert (grid.edges, grid.hours, grid.intensity, grid.covered) == reference_grid(
            now, end, slot, forecast
        )


def test_a_grid_past_the_forecast_uses_its_mean_and_counts_only_covered_slots() -> None:
    now = BASE + timedelta(minutes=20)
    forecast = [
        IntensityPoint(BASE + timedelta(hours=h), BASE + timedelta(hours=h + 1), 100.0 * (h + 1))
        for h in range(3)
    ]
    grid = build_grid(now, BASE + timedelta(hours=5), timedelta(hours=1), forecast)
    assert grid.intensity == (100.0, 200.0, 300.0, 200.0, 200.0)  # 40 min at 100, then the mean (200)
    assert grid.hours[0] == pytest.approx(40 / 60) and grid.covered == 3
    with pytest.raises(ValueError, match="forecast is empty"):
        build_grid(now, now + timedelta(hours=1), timedelta(hours=1), [])


def test_day_windows_and_capacity_left_follow_the_slots_in_order() -> None:
    rng = random.Random(3)
    for _ in range(50):
        hours = tuple(
            rng.choice([0.25, 0.5, 1.0, 1 / 3, rng.uniform(0, 2)]) for _ in range(rng.randint(0, 400))
        )
        grid = Grid(BASE, BASE, (), hours, (1.0,) * len(hours), 0)  # _days reads only the hours
        elapsed, days = 0.0, []
        for h in hours:
            days.append(int(elapsed // 24))
            elapsed += h
        assert _days(grid) == tuple(days)
        problem = policies.Problem(
            hours, (1.0,) * len(hours), (0.0, 0.7, 1.3), 1, 2, 1.0, 0.1, True, 0.3, tuple(days)
        )
        suffix = [0.0] * (len(hours) + 1)
        for i in range(len(hours) - 1, -1, -1):
            suffix[i] = suffix[i + 1] + 1.3 * hours[i]
        assert policies._suffix_capacity(problem) == suffix
