"""What each simulated forecaster knows at a given time: the past only, a provider's issued forecasts, or all.

At `now` the simulator knows what a live provider reports: the actual values up to and including the
step holding `now` (the provider's current value). Everything after that step is forecast. For the
ensemble modes the forecast is made by carbon/outlook.py, the function the live CarbonSignal calls,
so the operator's policies get the reading the live operator would have had.

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
from gridwise.carbon.outlook import DEFAULT_HORIZON, outlook
from gridwise.carbon.reading import IntensityPoint
from gridwise.carbon.traces import ForecastTrace, Trace

FORECASTS = ("ensemble", "seasonal", "provided", "perfect")


@dataclass(frozen=True)
class Live:
    """What a live signal hands out at `now`: the current value, the forecast after it, its band."""

    current: IntensityPoint
    forecast: tuple[IntensityPoint, ...]
    upper_error: tuple[float, ...]  # per forecast point, g/kWh
    note: str = ""


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
        horizon: timedelta = DEFAULT_HORIZON,
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
        self.horizon = horizon  # what the live signal forecasts (CarbonSignal's default)
        self.ensemble = EnsembleForecaster(settings)
        self.seasonal = SeasonalForecaster()
        self._fed = 0  # provided forecasts handed to the ensemble so far
        self._live: dict[datetime, Live] = {}
        self._cache: dict[datetime, tuple[datetime, Outlook]] = {}

    def provided_span(self) -> tuple[datetime, datetime] | None:
        """From the first issue to the end of the last issued forecast."""
        if self.provided is None or not self.provided.issued:
            return None
        return self.provided.issued[0], self.provided.forecasts[-1][-1].end

    def _feed(self, now: datetime) -> None:
        """Every provider forecast issued by `now`, as a live signal polling every few minutes has them."""
        provided = self.provided
        if provided is None:
            return
        while self._fed < len(provided.issued) and provided.issued[self._fed] <= now:
            self.ensemble.record_provider(provided.issued[self._fed], provided.forecasts[self._fed])
            self._fed += 1

    def _make(self, now: datetime, horizon: timedelta) -> Live:
        trace = self.trace
        first = trace.index_of(now)
        current = next(trace.points(first, first + 1))
        if self.mode == "perfect":
            steps = max(1, -(-int(horizon.total_seconds()) // int(trace.step.total_seconds())))
            future = tuple(trace.points(first + 1, min(len(trace.values), first + 1 + steps)))
            return Live(current, future, (0.0,) * len(future))
        if first <= 0:
            raise ValueError(
                f"no trace history before {now.isoformat()}: the {self.mode} forecast needs the past; "
                "start the simulation later (--start) or use --forecast perfect"
            )
        need = self.ensemble.history_needed(trace.step)
        history = tuple(trace.points(max(0, first - need), first))
        if self.mode == "seasonal":
            future = self.seasonal.forecast((*history, current), current.end, current.end + horizon)
            return Live(current, future, (0.0,) * len(future))
        given: tuple[IntensityPoint, ...] = ()
        if self.provided is not None:
            self._feed(now)
            given = tuple(p for p in self.provided.latest_before(now) if p.end > now)
        out = outlook(self.ensemble, history, current, given, now=now, horizon=horizon)
        return Live(current, out.forecast, out.upper_error, out.note)

    def live(self, now: datetime) -> Live:
        """The reading a live CarbonSignal over this trace would hand out at `now` (its horizon)."""
        hit = self._live.get(now)
        if hit is None:
            if len(self._live) > 20000:
                self._live.clear()
            hit = self._live[now] = self._make(now, self.horizon)
        return hit

    def at(self, now: datetime, until: datetime) -> Outlook:
        """The same knowledge as `live`, forecast to at least `until` (the baselines plan to the deadline).

        The ensemble's value at a lead does not depend on how far ahead it is asked, so this agrees with
        `live` on every point they share.
        """
        hit = self._cache.get(now)
        if hit is not None and hit[0] >= until:
            return hit[1]
        step = self.trace.step
        horizon = max(self.horizon, until - self.trace.time_at(self.trace.index_of(now) + 1), step)
        # Within the live horizon this is the live reading itself: a --compare run asks both.
        made = self.live(now) if horizon == self.horizon else self._make(now, horizon)
        points = (made.current, *made.forecast)
        result = Outlook(points, (0.0, *made.upper_error))
        if len(self._cache) > 20000:
            self._cache.clear()
        self._cache[now] = (until, result)
        return result
