"""Cuts [now, end) into planning slots on a fixed grid and gives each the forecast's mean intensity."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gridwise.carbon.reading import EPOCH, IntensityPoint


@dataclass(frozen=True)
class Grid:
    """Slot i runs from `start(i)` to `end(i)`. Boundaries are kept as epoch seconds and made datetimes
    only when read: a zone wake plans every job to a two-week horizon, and building every slot's
    datetimes there was a tenth of the operator's CPU (py-spy, scale bench); a decision reads one or two.
    """

    now: datetime
    end_time: datetime
    edges: tuple[float, ...]  # epoch seconds: now, the slot boundaries between, the end
    hours: tuple[float, ...]
    intensity: tuple[float, ...]
    # How many slots (from the start) the forecast actually covered; the rest assume its mean.
    covered: int

    @classmethod
    def empty(cls, now: datetime) -> Grid:
        return cls(now, now, (), (), (), 0)

    def __len__(self) -> int:
        return len(self.hours)

    def _index(self, index: int) -> int:
        count = len(self.hours)
        if not -count <= index < count:
            raise IndexError(f"slot {index} of {count}")
        return index % count

    def start(self, index: int) -> datetime:
        i = self._index(index)
        return self.now if i == 0 else EPOCH + timedelta(seconds=self.edges[i])

    def end(self, index: int) -> datetime:
        i = self._index(index)
        return self.end_time if i == len(self.hours) - 1 else EPOCH + timedelta(seconds=self.edges[i + 1])

    @property
    def starts(self) -> tuple[datetime, ...]:
        return tuple(self.start(i) for i in range(len(self.hours)))


def build_grid(now: datetime, end: datetime, slot: timedelta, forecast: Sequence[IntensityPoint]) -> Grid:
    """Slot boundaries sit on multiples of `slot` since the epoch, so re-plans line up with each other.

    Beyond the forecast the future is unknown: those slots get the forecast's mean, which makes the
    planner neither chase nor avoid them. (Float seconds inside: this runs for every job on every re-plan.)
    """
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
    spans = [p.span_s for p in points]
    p_start = [a for a, _ in spans]
    p_end = [b for _, b in spans]
    p_val = [p.grams_per_kwh for p in points]
    total = sum(e - s for s, e in zip(p_start, p_end, strict=True))
    mean = sum(v * (e - s) for s, e, v in zip(p_start, p_end, p_val, strict=True)) / total
    values: list[float] = []
    covered = 0
    index = 0
    count = len(points)
    for start, stop in itertools.pairwise(edges):
        while index < count and p_end[index] <= start:
            index += 1
        weighted = seconds = 0.0
        probe = index
        while probe < count and p_start[probe] < stop:
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
    return Grid(now, end, tuple(edges), hours, tuple(values), covered)
