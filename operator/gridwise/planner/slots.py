"""Cuts [now, end) into planning slots on a fixed grid and gives each the forecast's mean intensity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from gridwise.carbon.reading import EPOCH, IntensityPoint

Array = npt.NDArray[np.float64]


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
    planner neither chase nor avoid them. Runs for every job on every re-plan, so the slots are worked
    out as arrays: 2-5x faster than slot by slot in Python (benchmarks/grid_bench.py), most at
    sub-hourly slots.
    """
    t_now, t_end = (now - EPOCH).total_seconds(), (end - EPOCH).total_seconds()
    edges = _edges(t_now, t_end, slot.total_seconds())
    if not forecast:
        raise ValueError("the forecast is empty: the planner needs at least one intensity point")
    points = sorted(forecast, key=lambda p: p.start)
    spans = [p.span_s for p in points]
    p_start = np.array([a for a, _ in spans], dtype=np.float64)
    p_end = np.array([b for _, b in spans], dtype=np.float64)
    p_val = np.array([p.grams_per_kwh for p in points], dtype=np.float64)
    lengths = p_end - p_start
    # cumsum adds in order, as a loop would: the same mean to the last bit, whatever the length.
    mean = float(np.cumsum(p_val * lengths)[-1] / np.cumsum(lengths)[-1])
    lo, hi = edges[:-1], edges[1:]
    if len(points) > 1 and bool((p_start[1:] < p_end[:-1]).any()):
        weighted, seconds = _overlaps_by_scan(lo, hi, p_start, p_end, p_val)
    else:
        weighted, seconds = _overlaps(lo, hi, p_start, p_end, p_val)
    span = hi - lo
    has = seconds > 0
    values = np.where(has, (weighted + (span - seconds) * mean) / span, mean)  # edges strictly increase
    full = np.flatnonzero(has & (seconds >= span * 0.999))
    covered = int(full[-1]) + 1 if len(full) else 0
    hours = span / 3600
    return Grid(now, end, tuple(edges.tolist()), tuple(hours.tolist()), tuple(values.tolist()), covered)


def _edges(t_now: float, t_end: float, step: float) -> Array:
    """now, every multiple of `step` strictly between now and the end, the end (just now if none)."""
    if t_end <= t_now:
        return np.array([t_now])
    first = (t_now // step + 1) * step
    count = max(0, math.ceil((t_end - first) / step))
    while count > 0 and first + (count - 1) * step >= t_end:  # float rounding of the ceil
        count -= 1
    while first + count * step < t_end:
        count += 1
    return np.concatenate(([t_now], first + step * np.arange(count, dtype=np.float64), [t_end]))


def _overlaps(lo: Array, hi: Array, p_start: Array, p_end: Array, p_val: Array) -> tuple[Array, Array]:
    """Intensity-seconds and seconds the forecast covers in each slot, for points that do not overlap.

    Each slot meets a run of consecutive points; they are added in time order, as a scan would.
    """
    first = np.searchsorted(p_end, lo, side="right")  # the first point ending after the slot starts
    stop = np.searchsorted(p_start, hi, side="left")  # past the last point starting before it ends
    weighted = np.zeros(len(lo))
    seconds = np.zeros(len(lo))
    width = int((stop - first).max()) if len(lo) else 0
    for k in range(width):
        j = first + k
        inside = j < stop
        jj = np.where(inside, j, 0)
        overlap = np.minimum(hi, p_end[jj]) - np.maximum(lo, p_start[jj])
        overlap = np.where(inside & (overlap > 0), overlap, 0.0)
        weighted += overlap * p_val[jj]
        seconds += overlap
    return weighted, seconds


def _overlaps_by_scan(
    lo: Array, hi: Array, p_start: Array, p_end: Array, p_val: Array
) -> tuple[Array, Array]:
    """`_overlaps` for forecasts whose points overlap each other (each overlap counts): slot by slot."""
    weighted = np.zeros(len(lo))
    seconds = np.zeros(len(lo))
    index, count = 0, len(p_start)
    for i, (start, stop) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        while index < count and p_end[index] <= start:
            index += 1
        probe = index
        while probe < count and p_start[probe] < stop:
            overlap = min(stop, p_end[probe]) - max(start, p_start[probe])
            if overlap > 0:
                weighted[i] += overlap * p_val[probe]
                seconds[i] += overlap
            probe += 1
    return weighted, seconds
