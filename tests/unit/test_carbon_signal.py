"""CarbonSignal never raises: every failure is a stale reading with a reason, and secrets never leak."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from conftest import FIXTURES, FakeApi
from gridwise.carbon import CarbonSignal, ProviderResult, build_provider
from gridwise.carbon.reading import IntensityPoint
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


async def test_trace_provider_forecast_filled_by_forecaster() -> None:
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
    assert not reading.stale and "seasonal forecaster" in reading.reason
    assert reading.forecast[-1].end >= clock.now() + timedelta(hours=23)
    assert all(0 <= p.grams_per_kwh <= 5000 for p in reading.forecast)
