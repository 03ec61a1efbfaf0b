"""UK NESO Carbon Intensity API: free, keyless, half-hourly average (direct) intensity for Great Britain."""

from __future__ import annotations

import httpx

from gridwise.carbon.errors import ProviderError
from gridwise.carbon.http import as_list, field, get_json, parse_time
from gridwise.carbon.providers.base import LiveApiProvider
from gridwise.carbon.reading import IntensityPoint, ProviderResult
from gridwise.carbon.secrets import Secret
from gridwise.carbon.validate import check_series, check_value
from gridwise.clock import Clock

DEFAULT_BASE_URL = "https://api.carbonintensity.org.uk"


class UkNesoProvider(LiveApiProvider):
    name = "uk-neso"
    signal_type = "average"
    secrets: tuple[Secret, ...] = ()

    def __init__(self, *, zone: str, base_url: str, clock: Clock, http: httpx.AsyncClient, owns_http: bool):
        self.zone = zone
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._http = http
        self._owns_http = owns_http

    async def fetch(self) -> ProviderResult:
        now = self._clock.now()
        start = now.replace(minute=0 if now.minute < 30 else 30, second=0, microsecond=0)
        url = f"{self._base}/intensity/{start.strftime('%Y-%m-%dT%H:%MZ')}/fw48h"
        body = await get_json(self._http, self.name, url)
        rows = as_list(field(body, "data", "uk-neso response"), "uk-neso data")
        if not rows:
            raise ProviderError("uk-neso: response has no data points")
        points: list[IntensityPoint] = []
        current: IntensityPoint | None = None
        for index, row in enumerate(rows):
            what = f"uk-neso data[{index}]"
            begin = parse_time(field(row, "from", what), f"{what}.from")
            end = parse_time(field(row, "to", what), f"{what}.to")
            intensity = field(row, "intensity", what)
            forecast_value = check_value(
                field(intensity, "forecast", f"{what}.intensity"), f"{what} forecast"
            )
            actual = intensity.get("actual")
            point = IntensityPoint(begin, end, forecast_value)
            points.append(point)
            if point.covers(now):
                value = forecast_value if actual is None else check_value(actual, f"{what} actual")
                current = IntensityPoint(begin, end, value)
        series = check_series(points, "uk-neso forecast")
        return ProviderResult(
            current=current,
            forecast=tuple(p for p in series if p.end > now),
            signal_type=self.signal_type,
            emission_factor="direct",
        )

    def __repr__(self) -> str:
        return f"UkNesoProvider(zone={self.zone!r}, base_url={self._base!r})"
