"""Electricity Maps v3: average intensity (life-cycle by default) for any zone; needs an API key.

The forecast endpoint is a paid tier: a key that may read `latest` can be refused there. Such a
refusal keeps the good current value and says so (`forecast_unavailable`); CarbonSignal then fills
the forecast with its own forecaster, as for a short one.
"""

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

DEFAULT_BASE_URL = "https://api.electricitymap.org"
API_KEY_ENV = "ELECTRICITYMAPS_API_KEY"
HOUR = timedelta(hours=1)
# What a refused plan answers on one endpoint when another with the same key succeeded.
TIER_REFUSED = frozenset({401, 402, 403})


class ElectricityMapsProvider(LiveApiProvider):
    name = "electricitymaps"
    signal_type = "average"

    def __init__(
        self,
        *,
        zone: str,
        base_url: str,
        token: Secret,
        clock: Clock,
        http: httpx.AsyncClient,
        owns_http: bool,
    ) -> None:
        self.zone = zone
        self._base = base_url.rstrip("/")
        self._token = token
        self.secrets: tuple[Secret, ...] = (token,)
        self._clock = clock
        self._http = http
        self._owns_http = owns_http

    async def fetch(self) -> ProviderResult:
        headers = {"auth-token": self._token.reveal()}
        params = {"zone": self.zone}
        latest = await get_json(
            self._http, self.name, f"{self._base}/v3/carbon-intensity/latest", params=params, headers=headers
        )
        value = check_value(
            field(latest, "carbonIntensity", "electricitymaps latest"), "electricitymaps latest"
        )
        at = parse_time(
            field(latest, "datetime", "electricitymaps latest"), "electricitymaps latest.datetime"
        )
        factor_raw = latest.get("emissionFactorType", "lifecycle")
        factor = (
            "direct" if factor_raw == "direct" else "lifecycle" if factor_raw == "lifecycle" else "unknown"
        )
        current = IntensityPoint(at, at + HOUR, value)
        try:
            body = await get_json(
                self._http,
                self.name,
                f"{self._base}/v3/carbon-intensity/forecast",
                params=params,
                headers=headers,
            )
        except ProviderError as exc:
            if exc.status not in TIER_REFUSED:
                raise
            # `latest` accepted this key a moment ago: the forecast is not in its plan.
            return ProviderResult(
                current=current,
                forecast=(),
                signal_type=self.signal_type,
                emission_factor=factor,
                forecast_unavailable=(
                    f"{self.name}: the forecast endpoint refused this key "
                    f"(HTTP {exc.status}: not in its plan)"
                ),
            )
        rows = as_list(field(body, "forecast", "electricitymaps forecast"), "electricitymaps forecast")
        points: list[IntensityPoint] = []
        for index, row in enumerate(rows):
            what = f"electricitymaps forecast[{index}]"
            start = parse_time(field(row, "datetime", what), f"{what}.datetime")
            points.append(
                IntensityPoint(start, start + HOUR, check_value(field(row, "carbonIntensity", what), what))
            )
        now = self._clock.now()  # whether `current` covers now is CarbonSignal's check (validate.py)
        series = check_series(points, "electricitymaps forecast")
        return ProviderResult(
            current=current,
            forecast=tuple(p for p in series if p.end > now),
            signal_type=self.signal_type,
            emission_factor=factor,
        )

    def __repr__(self) -> str:
        return f"ElectricityMapsProvider(zone={self.zone!r}, base_url={self._base!r}, token=***)"
