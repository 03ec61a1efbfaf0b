"""WattTime v3: marginal (MOER) intensity forecasts; logs in with basic auth for a short-lived token.

The forecast is WattTime's only absolute value (`/v3/signal-index` is a percentile) and a paid tier
outside CAISO_NORTH. A refusal of it right after a successful login is the account's plan, not a
rejected password: it says so, and is not retried with yet another login. With no current value to
keep, the reading is stale and the job runs as its deadline requires.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from gridwise.carbon.errors import ProviderError
from gridwise.carbon.http import as_list, field, get_json, parse_time
from gridwise.carbon.providers.base import LiveApiProvider
from gridwise.carbon.reading import IntensityPoint, ProviderResult
from gridwise.carbon.secrets import Secret
from gridwise.carbon.validate import LBS_PER_MWH_TO_G_PER_KWH, check_series, check_value
from gridwise.clock import Clock

DEFAULT_BASE_URL = "https://api.watttime.org"
USERNAME_ENV = "WATTTIME_USERNAME"
PASSWORD_ENV = "WATTTIME_PASSWORD"
# WattTime tokens last 30 minutes; renew a little early.
TOKEN_LIFETIME = timedelta(minutes=25)
UNIT_FACTORS = {"lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH, "g_co2_per_kwh": 1.0}
# What a refused plan answers on the forecast when the login with the same credentials succeeded.
TIER_REFUSED = frozenset({401, 402, 403})


class WattTimeProvider(LiveApiProvider):
    name = "watttime"
    signal_type = "marginal"

    def __init__(
        self,
        *,
        zone: str,
        base_url: str,
        username: Secret,
        password: Secret,
        clock: Clock,
        http: httpx.AsyncClient,
        owns_http: bool,
    ) -> None:
        self.zone = zone
        self._base = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._clock = clock
        self._http = http
        self._owns_http = owns_http
        self._token: Secret | None = None
        self._token_at: datetime | None = None

    @property
    def secrets(self) -> tuple[Secret, ...]:
        token = () if self._token is None else (self._token,)
        return (self._username, self._password, *token)

    def _token_cached(self) -> bool:
        age = self._clock.now() - self._token_at if self._token_at is not None else None
        return self._token is not None and age is not None and age < TOKEN_LIFETIME

    async def _login(self) -> Secret:
        now = self._clock.now()
        if self._token is not None and self._token_cached():
            return self._token
        auth = httpx.BasicAuth(self._username.reveal(), self._password.reveal())
        body = await get_json(self._http, self.name, f"{self._base}/login", auth=auth)
        token = field(body, "token", "watttime login response")
        if not isinstance(token, str) or not token:
            raise ProviderError("watttime: login response has no token", retryable=False)
        self._token, self._token_at = Secret(token), now
        return self._token

    async def _get_forecast(self, token: Secret) -> object:
        params = {"region": self.zone, "signal_type": "co2_moer"}
        headers = {"Authorization": f"Bearer {token.reveal()}"}
        return await get_json(
            self._http, self.name, f"{self._base}/v3/forecast", params=params, headers=headers
        )

    def _plan_refusal(self, exc: ProviderError) -> ProviderError:
        """A refused forecast with a token just issued: the account's plan, not its credentials."""
        if exc.status not in TIER_REFUSED:
            return exc
        return ProviderError(
            f"{self.name}: logged in, but the forecast for {self.zone[:40]!r} is not in this account's "
            f"plan (HTTP {exc.status}); WattTime serves no other absolute value",
            retryable=False,
            status=exc.status,
        )

    async def _forecast_body(self) -> object:
        """The forecast; a refused cached token is renewed once (it may have expired early)."""
        reused = self._token_cached()
        refused: ProviderError | None = None
        for attempt in range(2 if reused else 1):
            if attempt:
                self._token = None
            token = await self._login()  # a refused login raises as it is: the credentials are wrong
            try:
                return await self._get_forecast(token)
            except ProviderError as exc:
                if exc.retryable:
                    raise
                refused = exc
        assert refused is not None
        raise self._plan_refusal(refused) from None

    async def fetch(self) -> ProviderResult:
        body = await self._forecast_body()
        meta = field(body, "meta", "watttime forecast")
        units = field(meta, "units", "watttime forecast meta")
        if units not in UNIT_FACTORS:
            raise ProviderError(f"watttime: unexpected units {str(units)[:40]!r} (expected lbs_co2_per_mwh)")
        factor = UNIT_FACTORS[units]
        period_raw = meta.get("data_point_period_seconds", 300)
        if isinstance(period_raw, bool) or not isinstance(period_raw, int) or period_raw <= 0:
            raise ProviderError("watttime: bad data_point_period_seconds")
        period = timedelta(seconds=period_raw)
        rows = as_list(field(body, "data", "watttime forecast"), "watttime data")
        if not rows:
            raise ProviderError("watttime: forecast has no data points")
        points: list[IntensityPoint] = []
        for index, row in enumerate(rows):
            what = f"watttime data[{index}]"
            start = parse_time(field(row, "point_time", what), f"{what}.point_time")
            raw = field(row, "value", what)
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ProviderError(f"{what} is not a number")
            points.append(IntensityPoint(start, start + period, check_value(raw * factor, what)))
        series = check_series(points, "watttime forecast")
        now = self._clock.now()
        current = next((p for p in series if p.covers(now)), None)
        if current is None and series[0].start > now:
            current = series[0]  # forecasts start at the next point: the nearest one stands for now
        return ProviderResult(
            current=current,
            forecast=tuple(p for p in series if p.end > now),
            signal_type=self.signal_type,
            emission_factor="direct",
        )

    def __repr__(self) -> str:
        return f"WattTimeProvider(zone={self.zone!r}, base_url={self._base!r}, credentials=***)"
