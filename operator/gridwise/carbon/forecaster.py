"""Fills the forecast horizon from history when a provider gives none, or too short a one.

Model (kept simple so its error can be stated honestly): a daily seasonal profile, the mean of the same
time of day over the last `days` days, plus the current anomaly (last value minus its seasonal value)
decaying exponentially with lead time. At lead 0 this is persistence; far ahead it is seasonal-naive.
With less than a day of history it falls back to persistence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gridwise.carbon.reading import IntensityPoint
from gridwise.carbon.traces import Trace


def regular_history(
    history: Sequence[IntensityPoint], start: datetime, needed: Callable[[timedelta], int]
) -> tuple[list[float], timedelta, datetime]:
    """History before `start` on a regular grid ending at its last point; values carry over gaps.

    Returns (values, step, grid end); no history gives ([], 0, start). `needed(step)` caps the length.
    """
    past = [p for p in history if p.end <= start]
    if not past:
        return [], timedelta(0), start
    step = past[-1].end - past[-1].start
    grid_end = past[-1].end
    count = min(needed(step), int((grid_end - past[0].start) / step))
    grid_start = grid_end - step * count
    values: list[float] = []
    cursor = 0
    current = past[0].grams_per_kwh
    for index in range(count):
        moment = grid_start + step * index
        while cursor < len(past) and past[cursor].start <= moment:
            current = past[cursor].grams_per_kwh
            cursor += 1
        values.append(current)
    return values, step, grid_end


@dataclass(frozen=True)
class SeasonalForecaster:
    period: timedelta = timedelta(days=1)
    # Chosen on the shared 2022 traces (BENCHMARKS.md): one day back beats longer means, as levels drift.
    days: int = 1
    anomaly_decay_hours: float = 6.0

    def history_needed(self, step: timedelta) -> int:
        """How many past steps `predict` can use: more is ignored."""
        return self.days * self._period_steps(step) + 1

    def _period_steps(self, step: timedelta) -> int:
        steps = self.period / step
        if steps < 1 or abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"the step {step} must divide the seasonal period {self.period}")
        return round(steps)

    def _seasonal(self, history: Sequence[float], target: int, period: int) -> float | None:
        total, count, k = 0.0, 0, 1
        while count < self.days:
            index = target - k * period
            if index < 0:
                break
            if index < len(history):
                total += history[index]
                count += 1
            k += 1
        return total / count if count else None

    def predict(self, history: Sequence[float], step: timedelta, n_ahead: int) -> list[float]:
        """Values for the `n_ahead` steps right after the last history value (history is regular)."""
        if not history:
            raise ValueError("the forecaster needs at least one past value")
        period = self._period_steps(step)
        length = len(history)
        last = history[-1]
        base = self._seasonal(history, length - 1, period)
        anomaly = 0.0 if base is None else last - base
        step_hours = step.total_seconds() / 3600
        out: list[float] = []
        for lead in range(1, n_ahead + 1):
            seasonal = self._seasonal(history, length - 1 + lead, period)
            if seasonal is None:
                out.append(last)
                continue
            weight = math.exp(-lead * step_hours / self.anomaly_decay_hours)
            out.append(max(0.0, seasonal + anomaly * weight))
        return out

    def forecast(
        self, history: Sequence[IntensityPoint], start: datetime, end: datetime
    ) -> tuple[IntensityPoint, ...]:
        """Points from `start` to `end` on the history's grid, predicted from history before `start`."""
        values, step, grid_end = regular_history(history, start, self.history_needed)
        if not step:
            return ()
        lead_steps = math.ceil((end - grid_end) / step)
        predicted = self.predict(values, step, lead_steps)
        points = []
        for index, value in enumerate(predicted):
            begin = grid_end + step * index
            if begin + step > start:
                points.append(IntensityPoint(begin, begin + step, value))
        return tuple(points)


@dataclass(frozen=True)
class ForecastError:
    """Error over every (issue time, lead) pair evaluated, in gCO2/kWh and percent."""

    mae: float
    mape: float
    persistence_mae: float
    samples: int


def evaluate(
    trace: Trace,
    forecaster: SeasonalForecaster,
    *,
    horizon: timedelta = timedelta(hours=24),
    every: timedelta = timedelta(hours=6),
    warmup: timedelta = timedelta(days=7),
) -> ForecastError:
    """Issue a forecast every `every` from past data only and score it against what happened."""
    horizon_steps = int(horizon / trace.step)
    stride = max(1, int(every / trace.step))
    need = forecaster.history_needed(trace.step)
    abs_err = pct_err = persist_err = 0.0
    samples = pct_samples = 0
    values = trace.values
    for issue in range(max(int(warmup / trace.step), 1), len(values) - horizon_steps, stride):
        predicted = forecaster.predict(values[max(0, issue - need) : issue], trace.step, horizon_steps)
        last = values[issue - 1]
        for lead, guess in enumerate(predicted):
            actual = values[issue + lead]
            abs_err += abs(guess - actual)
            persist_err += abs(last - actual)
            samples += 1
            if actual > 0:
                pct_err += abs(guess - actual) / actual
                pct_samples += 1
    if not samples:
        raise ValueError("the trace is too short to evaluate the forecaster")
    return ForecastError(
        abs_err / samples, 100 * pct_err / max(pct_samples, 1), persist_err / samples, samples
    )
