"""Replays a recorded CSV trace as if it were a live provider, against the injected clock.

Actual-value traces give the current value and no forecast (the forecaster fills it from the past);
WattTime forecast files give the forecast as it was issued at that time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from gridwise.carbon.errors import ProviderError
from gridwise.carbon.reading import IntensityPoint, ProviderResult
from gridwise.carbon.secrets import Secret
from gridwise.carbon.traces import ForecastTrace, Trace
from gridwise.clock import Clock


class TraceProvider:
    name = "trace"
    secrets: tuple[Secret, ...] = ()

    def __init__(self, *, zone: str, trace: Trace | ForecastTrace, clock: Clock) -> None:
        self.zone = zone
        self.signal_type = trace.signal_type
        self._trace = trace
        self._clock = clock

    async def fetch(self) -> ProviderResult:
        now = self._clock.now()
        if isinstance(self._trace, ForecastTrace):
            forecast = self._trace.latest_before(now)
            if not forecast:
                raise ProviderError(f"trace: no forecast issued before {now.isoformat()}")
            current = next((p for p in forecast if p.covers(now)), forecast[0])
            return ProviderResult(current, tuple(p for p in forecast if p.end > now), self.signal_type)
        index = self._trace.index_of(now)
        if not 0 <= index < len(self._trace.values):
            raise ProviderError(
                f"trace: {now.isoformat()} is outside the trace ({self._trace.start} .. {self._trace.end})"
            )
        current = next(self._trace.points(index, index + 1))
        return ProviderResult(current, (), self.signal_type, self._trace.emission_factor)

    def history(self, until: datetime, span: timedelta) -> tuple[IntensityPoint, ...]:
        if isinstance(self._trace, ForecastTrace):
            return ()
        end = self._trace.index_of(until)
        begin = self._trace.index_of(until - span)
        return tuple(self._trace.points(begin, end))

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"TraceProvider(zone={self.zone!r}, source={self._trace.source!r})"
