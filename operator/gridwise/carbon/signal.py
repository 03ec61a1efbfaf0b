"""CarbonSignal: the operator's only door to carbon data. It never raises; a failure is a stale reading.

It caches for a TTL, rate-limits provider calls, bounds each call with a timeout, retries with
exponential backoff (sleeping on the injected clock), and forecasts with the ensemble over the history
it has seen (carbon/outlook.py, the same function the simulator uses): the provider's own forecast is
one member, weighted by its measured error (none where the provider's plan has no forecast), and the
reading carries the error band per point.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime, timedelta

from gridwise.carbon.ensemble import EnsembleForecaster
from gridwise.carbon.errors import ProviderError
from gridwise.carbon.outlook import (
    DEFAULT_HORIZON,
    MAX_HISTORY_POINTS,
    history_to_keep,
    live_forecaster,
    outlook,
)
from gridwise.carbon.providers.base import Provider
from gridwise.carbon.reading import IntensityPoint, ProviderResult, SignalReading
from gridwise.carbon.secrets import redact
from gridwise.carbon.validate import check_timeliness
from gridwise.clock import Clock

log = logging.getLogger(__name__)


class CarbonSignal:
    def __init__(
        self,
        provider: Provider,
        *,
        clock: Clock,
        ttl_s: float = 300.0,
        min_interval_s: float = 60.0,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        horizon: timedelta = DEFAULT_HORIZON,
        forecaster: EnsembleForecaster | None = None,
        history_span: timedelta | None = None,
        max_history_points: int = MAX_HISTORY_POINTS,
        read_budget_s: float | None = None,
    ) -> None:
        if ttl_s < 0 or min_interval_s < 0 or timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("CarbonSignal: ttl, interval, retries and backoff must be >= 0 and timeout > 0")
        self._provider = provider
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_s)
        self._min_interval = timedelta(seconds=min_interval_s)
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._horizon = horizon
        # One ensemble per signal: every job reading this signal shares its history, memo and scores.
        self._forecaster = forecaster or live_forecaster()
        self._history_span = history_span or history_to_keep(self._forecaster)
        # One read (all attempts and backoffs) never holds its callers longer than this.
        self._read_budget_s = read_budget_s if read_budget_s is not None else timeout_s
        self._not_before: datetime | None = None  # the provider's Retry-After
        self._history: deque[IntensityPoint] = deque(maxlen=max_history_points)
        self._last: SignalReading | None = None
        self._last_good: SignalReading | None = None
        self._last_attempt: datetime | None = None
        self._lock = asyncio.Lock()

    @property
    def provider(self) -> Provider:
        return self._provider

    @property
    def ttl_s(self) -> float:
        return self._ttl.total_seconds()

    async def read(self) -> SignalReading:
        """The freshest reading the limits allow; concurrent callers share one provider call."""
        async with self._lock:
            now = self._clock.now()
            last = self._last
            # A value whose interval has ended no longer describes now: fetch once past its end,
            # whatever the TTL, so a grid change is seen when it happens (not a TTL later).
            ended = last is not None and last.current is not None and last.current.end <= now
            tried_since_end = (
                ended
                and last is not None
                and last.current is not None
                and self._last_attempt is not None
                and self._last_attempt >= last.current.end
            )
            if last is not None and not last.stale and now - last.fetched_at < self._ttl and not ended:
                return last
            recent = self._last_attempt is not None and now - self._last_attempt < self._min_interval
            if last is not None and recent and (not ended or tried_since_end):
                return last
            if self._not_before is not None and now < self._not_before:
                wait_min = (self._not_before - now).total_seconds() / 60
                reason = f"{self._provider.name}: rate limited, next call in {wait_min:.0f} min (Retry-After)"
                self._last = self._stale(now, reason)
                return self._last
            self._last_attempt = now
            try:
                async with asyncio.timeout(self._read_budget_s):
                    fetched = await self._fetch_with_retries(now)
                # The forecast is computed after the provider's budget, off the event loop.
                reading = fetched if isinstance(fetched, SignalReading) else await self._fresh(fetched)
            except TimeoutError:
                reading = self._stale(
                    self._clock.now(), f"{self._provider.name}: no answer within {self._read_budget_s:g} s"
                )
            except Exception as exc:  # the operator must never see a provider crash
                reading = self._stale(now, f"unexpected {type(exc).__name__} in provider")
            self._last = reading
            return reading

    async def _fetch_with_retries(self, now: datetime) -> ProviderResult | SignalReading:
        """The provider's validated answer, or a stale reading saying why there is none."""
        reason = "no attempt made"
        for attempt in range(self._retries + 1):
            try:
                async with asyncio.timeout(self._timeout_s):
                    result = await self._provider.fetch()
                check_timeliness(result, self._clock.now(), self._provider.name)
                return result
            except TimeoutError:
                reason = f"{self._provider.name}: no answer within {self._timeout_s:g} s"
                retryable = True
            except ProviderError as exc:
                reason, retryable = exc.message, exc.retryable
                if exc.retry_after_s is not None:
                    self._not_before = self._clock.now() + timedelta(seconds=exc.retry_after_s)
                    reason += f"; the provider asked to wait {exc.retry_after_s:.0f} s"
                    break
            if not retryable or attempt == self._retries:
                break
            await self._clock.sleep(min(self._max_backoff_s, self._backoff_s * 2**attempt))
        return self._stale(self._clock.now(), reason)

    def _remember(self, points: tuple[IntensityPoint, ...]) -> None:
        for point in points:
            if not self._history or point.start >= self._history[-1].end:
                self._history.append(point)
        while self._history and self._history[0].end < self._clock.now() - self._history_span:
            self._history.popleft()

    async def _fresh(self, result: ProviderResult) -> SignalReading:
        now = self._clock.now()
        if result.current is not None:
            self._remember((result.current,))
        history = list(self._provider.history(now, self._history_span)) or list(self._history)
        out = await asyncio.to_thread(
            outlook,
            self._forecaster,
            history,
            result.current,
            result.forecast,
            now=now,
            horizon=self._horizon,
        )
        note = out.note
        refused = redact(result.forecast_unavailable, self._provider.secrets)
        if refused:
            note = f"; {refused}{note}"
        reading = SignalReading(
            zone=self._provider.zone,
            provider=self._provider.name,
            signal_type=result.signal_type,
            current=result.current,
            forecast=out.forecast,
            stale=False,
            reason="ok" + note,
            fetched_at=now,
            emission_factor=result.emission_factor,
            forecast_unavailable=refused,
            forecast_upper=out.upper_error,
        )
        self._last_good = reading
        return reading

    def _stale(self, now: datetime, reason: str) -> SignalReading:
        reason = redact(reason, self._provider.secrets)
        good = self._last_good
        if good is None:
            log.warning(
                "carbon signal %s/%s unavailable: %s", self._provider.name, self._provider.zone, reason
            )
            return SignalReading(
                zone=self._provider.zone,
                provider=self._provider.name,
                signal_type=self._provider.signal_type,
                current=None,
                forecast=(),
                stale=True,
                reason=f"{reason}; no good reading yet",
                fetched_at=now,
            )
        age_min = (now - good.fetched_at).total_seconds() / 60
        full = f"{reason}; using the last good reading from {age_min:.0f} min ago"
        log.warning("carbon signal %s/%s stale: %s", self._provider.name, self._provider.zone, full)
        kept = [(p, e) for p, e in zip(good.forecast, good.upper_error(), strict=True) if p.end > now]
        return SignalReading(
            zone=good.zone,
            provider=good.provider,
            signal_type=good.signal_type,
            current=good.current,
            forecast=tuple(p for p, _ in kept),
            stale=True,
            reason=full,
            fetched_at=now,
            emission_factor=good.emission_factor,
            forecast_upper=tuple(e for _, e in kept) if good.forecast_upper else (),
        )

    async def aclose(self) -> None:
        await self._provider.aclose()

    def __repr__(self) -> str:
        return f"CarbonSignal({self._provider!r})"
