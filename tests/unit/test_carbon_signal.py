"""CarbonSignal never raises: every failure is a stale reading with a reason, and secrets never leak."""

from __future__ import annotations

import logging
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from conftest import FIXTURES, FakeApi
from gridwise.carbon import CarbonSignal, ProviderResult, build_provider
from gridwise.carbon.reading import IntensityPoint, SignalReading
from gridwise.carbon.secrets import Secret
from gridwise.clock import ManualClock

NOW = datetime(2023, 6, 1, 12, 10, tzinfo=UTC)
KEY = "em-key-TOPSECRET-42"
ENV = {
    "ELECTRICITYMAPS_API_KEY": KEY,
    "WATTTIME_USERNAME": "wt-user-SECRET",
    "WATTTIME_PASSWORD": "wt-PASS-SECRET",
}


def allow(api: FakeApi) -> dict[str, str]:
    """The operator's environment with the fake provider on its base-URL allow-list."""
    return {"GRIDWISE_CARBON_ALLOWED_URLS": api.base_url}


TRACES = {"GRIDWISE_TRACE_DIRS": str(FIXTURES)}


def em_signal(api: FakeApi, clock: ManualClock, **kwargs: float) -> CarbonSignal:
    provider = build_provider(
        {"provider": "electricitymaps", "zone": "DE", "baseURL": api.base_url},
        env=allow(api),
        secret=ENV,
        clock=clock,
    )
    # A generous read budget: these tests count retries, not the per-read cap (test_security_carbon does).
    options: dict[str, float] = {"retries": 2, "backoff_s": 1.0, "timeout_s": 2.0, "read_budget_s": 30.0}
    options.update(kwargs)
    return CarbonSignal(provider, clock=clock, **options)  # type: ignore[arg-type]


def serve_em(api: FakeApi) -> None:
    api.fixture("/v3/carbon-intensity/latest", "electricitymaps_latest.json")
    api.fixture("/v3/carbon-intensity/forecast", "electricitymaps_forecast.json")


async def test_good_reading_is_fresh_and_extended(fake_api: FakeApi) -> None:
    serve_em(fake_api)
    signal = em_signal(fake_api, ManualClock(NOW))
    reading = await signal.read()
    await signal.aclose()
    assert not reading.stale and reading.reason.startswith("ok")
    assert reading.current is not None and reading.current.grams_per_kwh == 302
    assert reading.signal_type == "average" and reading.provider == "electricitymaps" and reading.zone == "DE"


FAILURES = [
    ("500", {"status": 500, "body": "boom"}, "server error"),
    ("bad json", {"body": "{not json"}, "not valid JSON"),
    ("wrong shape", {"body": '{"zone": "DE"}'}, "lacks 'carbonIntensity'"),
    ("negative", {"body": '{"carbonIntensity": -3, "datetime": "2023-06-01T12:00:00Z"}'}, "negative"),
    ("absurd", {"body": '{"carbonIntensity": 12000, "datetime": "2023-06-01T12:00:00Z"}'}, "absurd"),
    ("401", {"status": 401, "body": '{"message": "bad key ' + KEY + '"}'}, "credentials rejected"),
    ("timeout", {"delay_s": 1.0}, "no answer within"),
]


@pytest.mark.parametrize(("case", "route", "reason"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_failures_give_stale_reading_with_reason(
    fake_api: FakeApi, case: str, route: dict[str, object], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake_api.set("/v3/carbon-intensity/latest", **route)  # type: ignore[arg-type]
    fake_api.fixture("/v3/carbon-intensity/forecast", "electricitymaps_forecast.json")
    clock = ManualClock(NOW)
    # Short only where the timeout is the point: a loaded machine must not turn other cases into timeouts.
    signal = em_signal(fake_api, clock, timeout_s=0.5 if case == "timeout" else 10.0)
    with caplog.at_level(logging.DEBUG):
        reading = await signal.read()
    await signal.aclose()
    assert reading.stale
    assert reason in reading.reason
    assert "no good reading yet" in reading.reason and reading.current is None
    for text in (reading.reason, repr(reading), repr(signal), caplog.text):
        assert KEY not in text
    attempts = len([r for r in fake_api.requests if r[0].endswith("/latest")])
    if case == "401":
        assert attempts == 1  # a rejected key is not retried
    else:
        assert attempts == 3  # one try and two retries
        assert clock.now() - NOW >= timedelta(seconds=3)  # backoff 1 s + 2 s, slept on the injected clock


async def test_gap_in_forecast_is_stale(fake_api: FakeApi) -> None:
    fake_api.fixture("/v3/carbon-intensity/latest", "electricitymaps_latest.json")
    fake_api.set(
        "/v3/carbon-intensity/forecast",
        body='{"forecast": [{"carbonIntensity": 1, "datetime": "2023-06-01T12:00:00Z"},'
        ' {"carbonIntensity": 1, "datetime": "2023-06-01T18:00:00Z"}]}',
    )
    signal = em_signal(fake_api, ManualClock(NOW), retries=0)
    reading = await signal.read()
    assert reading.stale and "gap" in reading.reason


async def test_keeps_last_good_value_when_provider_fails(fake_api: FakeApi) -> None:
    serve_em(fake_api)
    clock = ManualClock(NOW)
    signal = em_signal(fake_api, clock, ttl_s=300, min_interval_s=60, retries=0)
    good = await signal.read()
    fake_api.set("/v3/carbon-intensity/latest", status=503)
    clock.advance(600)
    reading = await signal.read()
    assert reading.stale and "server error (HTTP 503)" in reading.reason and "10 min ago" in reading.reason
    assert reading.current == good.current
    assert all(p.end > clock.now() for p in reading.forecast)


async def test_cache_and_rate_limit(fake_api: FakeApi) -> None:
    serve_em(fake_api)
    clock = ManualClock(NOW)
    signal = em_signal(fake_api, clock, ttl_s=300, min_interval_s=60, retries=0)
    await signal.read()
    calls = len(fake_api.requests)
    clock.advance(200)
    await signal.read()
    assert len(fake_api.requests) == calls  # within the TTL: cached
    clock.advance(200)
    await signal.read()
    assert len(fake_api.requests) == 2 * calls  # TTL over: fetched again
    fake_api.set("/v3/carbon-intensity/latest", status=500)
    clock.advance(400)
    first_fail = await signal.read()
    failed_calls = len(fake_api.requests)
    clock.advance(10)
    again = await signal.read()
    assert first_fail.stale and again is first_fail  # a failing provider is not hammered
    assert len(fake_api.requests) == failed_calls


async def test_watttime_secrets_never_leak(fake_api: FakeApi, caplog: pytest.LogCaptureFixture) -> None:
    fake_api.fixture("/login", "watttime_login.json")
    fake_api.set("/v3/forecast", status=500, body="internal error for token wt-token-SECRET-abc123")
    clock = ManualClock(NOW)
    provider = build_provider(
        {"provider": "watttime", "zone": "CAISO_NORTH", "baseURL": fake_api.base_url},
        env=allow(fake_api),
        secret=ENV,
        clock=clock,
    )
    signal = CarbonSignal(provider, clock=clock, retries=1, backoff_s=0.1)
    with caplog.at_level(logging.DEBUG):
        reading = await signal.read()
    await signal.aclose()
    assert reading.stale
    for text in (
        reading.reason,
        repr(reading),
        repr(signal),
        repr(provider),
        caplog.text,
        str(provider.secrets),
    ):
        for secret in ("wt-user-SECRET", "wt-PASS-SECRET", "wt-token-SECRET-abc123"):
            assert secret not in text


def test_secret_hides_its_value() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret}"
    assert secret.reveal() == "hunter2"


class Exploding:
    name = "boom"
    zone = "Z"
    signal_type = "average"
    secrets: tuple[Secret, ...] = ()

    async def fetch(self) -> ProviderResult:
        raise RuntimeError("unexpected bug")

    def history(self, until: datetime, span: timedelta) -> tuple[IntensityPoint, ...]:
        return ()

    async def aclose(self) -> None:
        return None


async def test_unexpected_exception_never_reaches_the_caller() -> None:
    signal = CarbonSignal(Exploding(), clock=ManualClock(NOW))
    reading = await signal.read()
    assert reading.stale and "RuntimeError" in reading.reason


async def test_trace_provider_forecast_made_by_the_ensemble() -> None:
    clock = ManualClock(datetime(2022, 4, 20, 6, 0, tzinfo=UTC))
    spec = {
        "provider": "trace",
        "zone": "US-CAL-CISO",
        "tracePath": str(FIXTURES / "em_us-cal-ciso_2022-04_hourly.csv"),
    }
    signal = CarbonSignal(
        build_provider(spec, env=TRACES, clock=clock), clock=clock, horizon=timedelta(hours=24)
    )
    reading = await signal.read()
    assert not reading.stale and "forecast by the ensemble" in reading.reason
    assert reading.forecast[-1].end >= clock.now() + timedelta(hours=23)
    assert all(0 <= p.grams_per_kwh <= 5000 for p in reading.forecast)


HOUR = timedelta(hours=1)


def _noisy_day(hours: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [200 + 100 * math.sin(2 * math.pi * h / 24) + rng.gauss(0, 25) for h in range(hours)]


class ForecastingApi:
    """A live API (no history of its own) that reports the hour's value and a 6 h forecast of it."""

    name = "fake"
    zone = "Z"
    signal_type = "average"
    secrets: tuple[Secret, ...] = ()

    def __init__(self, clock: ManualClock, start: datetime, values: list[float], noise: float) -> None:
        self._clock, self._start, self._values = clock, start, values
        self._rng = random.Random(3)
        self._noise = noise

    def _point(self, index: int, value: float) -> IntensityPoint:
        begin = self._start + HOUR * index
        return IntensityPoint(begin, begin + HOUR, max(0.0, value))

    async def fetch(self) -> ProviderResult:
        index = int((self._clock.now() - self._start) / HOUR)
        ahead = tuple(
            self._point(index + k, self._values[index + k] + self._rng.gauss(0, self._noise))
            for k in range(1, 7)
        )
        return ProviderResult(self._point(index, self._values[index]), ahead, self.signal_type)

    def history(self, until: datetime, span: timedelta) -> tuple[IntensityPoint, ...]:
        return ()

    async def aclose(self) -> None:
        return None


async def _live_run(noise: float) -> tuple[SignalReading, list[float], datetime]:
    start = datetime(2022, 3, 1, tzinfo=UTC)
    values = _noisy_day(24 * 6, seed=5)
    clock = ManualClock(start)
    signal = CarbonSignal(ForecastingApi(clock, start, values, noise), clock=clock, min_interval_s=0)
    reading = await signal.read()
    for _ in range(24 * 4):  # four days of hourly reads: the signal's own history and scores
        clock.advance(3600)
        reading = await signal.read()
    return reading, values, start


async def test_a_live_providers_accurate_forecast_gets_the_weight() -> None:
    """Live, the provider's forecast is one ensemble member weighted by its measured error: an exact
    provider is followed at the leads it covers, a wild one is not."""
    good, values, start = await _live_run(noise=0.0)
    assert not good.stale and "forecast by the ensemble" in good.reason and "provider" in good.reason
    index = int((good.fetched_at - start) / HOUR)
    assert good.current is not None and good.forecast[0].start == good.current.end
    for k, point in enumerate(good.forecast[:5], start=1):
        assert point.grams_per_kwh == pytest.approx(values[index + k], abs=2.0)
    wild, _, _ = await _live_run(noise=300.0)
    errors = [abs(p.grams_per_kwh - values[index + k]) for k, p in enumerate(wild.forecast[:5], start=1)]
    assert max(errors) < 150  # the provider's +-300 g/kWh guesses carry (almost) no weight


async def test_a_live_reading_carries_the_error_band() -> None:
    reading, _, _ = await _live_run(noise=30.0)
    assert len(reading.forecast_upper) == len(reading.forecast) > 0
    assert reading.forecast[-1].end >= reading.fetched_at + timedelta(hours=48)
    assert any(e > 0 for e in reading.forecast_upper)
    assert all(math.isfinite(e) for e in reading.forecast_upper)


async def test_a_stale_reading_keeps_the_band_of_the_points_it_keeps() -> None:
    reading, _, _ = await _live_run(noise=30.0)
    clock = ManualClock(reading.fetched_at)
    signal = CarbonSignal(Exploding(), clock=clock)
    signal._last_good = reading  # what a signal holds after a good read
    clock.advance(3 * 3600)
    stale = signal._stale(clock.now(), "provider down")
    ended = sum(1 for p in reading.forecast if p.end <= clock.now())
    assert stale.stale and ended == 2 and stale.forecast == reading.forecast[ended:]
    assert stale.forecast_upper == reading.forecast_upper[ended:]


async def test_live_history_and_forecaster_stay_bounded() -> None:
    """One signal per zone keeps a capped history, a capped memo and a thinned provider log."""
    start = datetime(2022, 3, 1, tzinfo=UTC)
    values = _noisy_day(24 * 40, seed=6)
    clock = ManualClock(start)
    signal = CarbonSignal(
        ForecastingApi(clock, start, values, 5.0), clock=clock, min_interval_s=0, max_history_points=400
    )
    for _ in range(24 * 20):  # past the history cap and the scored days
        await signal.read()
        clock.advance(3600)
    forecaster = signal._forecaster
    assert len(signal._history) <= 400
    assert len(forecaster._memo) <= forecaster._memo_size
    assert forecaster.provider_forecasts() <= (forecaster.settings.score_days + 1.25) * 8 + 2
