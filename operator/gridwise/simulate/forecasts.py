"""What each simulated forecaster knows at a given time: the past only, WattTime's issued forecast, or all.

seasonal: SeasonalForecaster over trace values strictly before now (even the current slot is predicted).
provided: the newest historical forecast issued at or before now (WattTime: 1 h ahead), extended
          beyond its end by the seasonal forecaster.
perfect:  the actual future (for the oracle: the physical limit, evaluation only).
"""

from __future__ import annotations

from datetime import datetime

from gridwise.carbon.forecaster import SeasonalForecaster
from gridwise.carbon.reading import IntensityPoint
from gridwise.carbon.traces import ForecastTrace, Trace

FORECASTS = ("seasonal", "provided", "perfect")


class ForecastSource:
    def __init__(
        self,
        trace: Trace,
        mode: str,
        provided: ForecastTrace | None = None,
        forecaster: SeasonalForecaster | None = None,
    ) -> None:
        if mode not in FORECASTS:
            raise ValueError(f"unknown forecast {mode!r}; known: {', '.join(FORECASTS)}")
        if mode == "provided" and provided is None:
            raise ValueError("--forecast provided needs --forecast-file (a WattTime historical forecast CSV)")
        self.trace = trace
        self.mode = mode
        self.provided = provided
        self.forecaster = forecaster or SeasonalForecaster()
        self._cache: tuple[datetime, datetime, tuple[IntensityPoint, ...]] | None = None

    def at(self, now: datetime, until: datetime) -> tuple[IntensityPoint, ...]:
        """The forecast a live system would have had at `now`, covering at least [now, until)."""
        if self._cache is not None and self._cache[0] == now and self._cache[1] >= until:
            return self._cache[2]
        trace = self.trace
        first = trace.index_of(now)
        last = min(
            len(trace.values),
            -(-int((until - trace.start).total_seconds()) // int(trace.step.total_seconds())),
        )
        if self.mode == "perfect":
            points = tuple(trace.points(first, last))
        else:
            need = self.forecaster.history_needed(trace.step)
            history = trace.values[max(0, first - need) : first]
            if not history:
                raise ValueError(f"no trace history before {now.isoformat()}: start the simulation later")
            predicted = self.forecaster.predict(history, trace.step, max(1, last - first))
            points = tuple(
                IntensityPoint(trace.time_at(first + i), trace.time_at(first + i + 1), value)
                for i, value in enumerate(predicted)
            )
            if self.mode == "provided" and self.provided is not None:
                issued = [p for p in self.provided.latest_before(now) if p.end > now]
                if issued:
                    begin, cut = issued[0].start, issued[-1].end
                    before = tuple(p for p in points if p.end <= begin)
                    points = before + tuple(issued) + tuple(p for p in points if p.start >= cut)
        self._cache = (now, until, points)
        return points
