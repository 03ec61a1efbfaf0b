"""What each simulated forecaster knows at a given time: the past only, a provider's issued forecasts, or all.

At `now` the simulator knows the actual values of every trace step that ended at or before the start of
the step holding `now`; the step holding `now` and everything after it are predicted.

ensemble: the EnsembleForecaster (persistence, seasonal, weekly, level-shape, regression members
          weighted by their rolling out-of-sample error per lead), with its error band per lead.
seasonal: the original single SeasonalForecaster (one day back + decaying anomaly), no error band.
provided: the ensemble plus a provider's historical forecasts as issued (WattTime: 1 h ahead) as one
          more member, weighted by its own measured error; where the provider has no forecast
          (before its first or after its last issue) the ensemble runs without it, and the CLI says so.
perfect:  the actual future (evaluation only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gridwise.carbon.ensemble import EnsembleForecaster, EnsembleSettings
from gridwise.carbon.forecaster import SeasonalForecaster
from gridwise.carbon.reading import IntensityPoint
from gridwise.carbon.traces import ForecastTrace, Trace

FORECASTS = ("ensemble", "seasonal", "provided", "perfect")
PROVIDER_MAX_AGE = timedelta(hours=6)


@dataclass(frozen=True)
class Outlook:
    """Points from the step holding `now` onwards, and how much higher each actual may be (g/kWh)."""

    points: tuple[IntensityPoint, ...]
    upper_error: tuple[float, ...]


class ForecastSource:
    def __init__(
        self,
        trace: Trace,
        mode: str,
        provided: ForecastTrace | None = None,
        settings: EnsembleSettings | None = None,
    ) -> None:
        if mode not in FORECASTS:
            raise ValueError(f"unknown forecast {mode!r}; known: {', '.join(FORECASTS)}")
        if mode == "provided" and provided is None:
            raise ValueError("--forecast provided needs --forecast-file (a WattTime historical forecast CSV)")
        if mode != "provided" and provided is not None:
            raise ValueError(f"a provided forecast file is only used with --forecast provided, not {mode!r}")
        self.trace = trace
        self.mode = mode
        self.provided = provided
        self.ensemble = EnsembleForecaster(settings)
        self.seasonal = SeasonalForecaster()
        self._fed = 0  # provided forecasts handed to the ensemble so far
        self._cache: dict[datetime, tuple[datetime, Outlook]] = {}

    def provided_span(self) -> tuple[datetime, datetime] | None:
        """From the first issue to the end of the last issued forecast."""
        if self.provided is None or not self.provided.issued:
            return None
        return self.provided.issued[0], self.provided.forecasts[-1][-1].end

    def _feed(self, now: datetime) -> None:
        provided = self.provided
        if provided is None:
            return
        while self._fed < len(provided.issued) and provided.issued[self._fed] <= now:
            self.ensemble.record_provider(provided.issued[self._fed], provided.forecasts[self._fed])
            self._fed += 1

    def at(self, now: datetime, until: datetime) -> Outlook:
        """The forecast a live system would have had at `now`, covering at least [now, until)."""
        hit = self._cache.get(now)
        if hit is not None and hit[0] >= until:
            return hit[1]
        trace = self.trace
        first = trace.index_of(now)
        steps = -(-int((until - trace.start).total_seconds()) // int(trace.step.total_seconds()))
        last = min(len(trace.values), max(first + 1, steps))
        if self.mode == "perfect":
            points = tuple(trace.points(first, last))
            outlook = Outlook(points, (0.0,) * len(points))
        else:
            history = trace.values[max(0, first - self.ensemble.history_needed(trace.step)) : first]
            if not history:
                raise ValueError(
                    f"no trace history before {now.isoformat()}: the {self.mode} forecast needs the past; "
                    "start the simulation later (--start) or use --forecast perfect"
                )
            n = max(1, last - first)
            if self.mode == "seasonal":
                values = tuple(self.seasonal.predict(history, trace.step, n))
                upper = (0.0,) * n
            else:
                self._feed(now)
                result = self.ensemble.predict(history, trace.step, n, trace.time_at(first))
                values, upper = result.values, result.upper_error
            points = tuple(
                IntensityPoint(trace.time_at(first + i), trace.time_at(first + i + 1), value)
                for i, value in enumerate(values)
            )
            outlook = Outlook(points, tuple(upper))
        if len(self._cache) > 20000:
            self._cache.clear()
        self._cache[now] = (until, outlook)
        return outlook
