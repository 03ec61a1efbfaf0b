"""Green Software Foundation Carbon Aware SDK web API: a self-hosted proxy in front of other sources."""

from __future__ import annotations

from datetime import timedelta

import httpx

from gridwise.carbon.errors import ProviderError
from gridwise.carbon.http import as_list, field, get_json, parse_time
from gridwise.carbon.providers.base import LiveApiProvider
from gridwise.carbon.reading import IntensityPoint, ProviderResult
from gridwise.carbon.secrets import Secret
from gridwise.carbon.validate import check_series, check_value
from gridwise.clock import Clock


class CarbonAwareSdkProvider(LiveApiProvider):
    name = "carbon-aware-sdk"
    secrets: tuple[Secret, ...] = ()

    def __init__(
        self,
        *,
        zone: str,
        signal_type: str,
        base_url: str,
        clock: Clock,
        http: httpx.AsyncClient,
        owns_http: bool,
    ) -> None:
        # The SDK serves whatever its backing source gives (WattTime: marginal, Electricity Maps: average),
        # so the signal type comes from the job's spec.
        self.zone = zone
        self.signal_type = signal_type
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._http = http
        self._owns_http = owns_http

    async def fetch(self) -> ProviderResult:
        body = await get_json(
            self._http, self.name, f"{self._base}/emissions/forecasts/current", params={"location": self.zone}
        )
        entries = as_list(body, "carbon-aware-sdk response")
        if not entries:
            raise ProviderError("carbon-aware-sdk: empty response")
        rows = as_list(field(entries[0], "forecastData", "carbon-aware-sdk forecast"), "forecastData")
        if not rows:
            raise ProviderError("carbon-aware-sdk: forecast has no data points")
        points: list[IntensityPoint] = []
        for index, row in enumerate(rows):
            what = f"carbon-aware-sdk forecastData[{index}]"
            start = parse_time(field(row, "timestamp", what), f"{what}.timestamp")
            duration = field(row, "duration", what)
            if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
                raise ProviderError(f"{what}.duration is not a positive number of minutes")
            value = check_value(field(row, "value", what), what)
            points.append(IntensityPoint(start, start + timedelta(minutes=float(duration)), value))
        series = check_series(points, "carbon-aware-sdk forecast")
        now = self._clock.now()
        current = next((p for p in series if p.covers(now)), None)
        if current is None and series[0].start > now:
            current = series[0]
        return ProviderResult(
            current=current,
            forecast=tuple(p for p in series if p.end > now),
            signal_type=self.signal_type,
        )

    def __repr__(self) -> str:
        return f"CarbonAwareSdkProvider(zone={self.zone!r}, base_url={self._base!r})"
