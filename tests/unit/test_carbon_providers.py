"""Each provider's real httpx client against a local server replaying its documented response format."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from conftest import FIXTURES, FakeApi
from gridwise.carbon import PROVIDERS, CarbonSignal, Provider, ProviderError, build_provider
from gridwise.carbon.validate import LBS_PER_MWH_TO_G_PER_KWH
from gridwise.clock import ManualClock
from gridwise.decide import SIGNAL_OWN_FORECAST, signal_step

NOW = datetime(2023, 6, 1, 12, 10, tzinfo=UTC)
ENV = {
    "ELECTRICITYMAPS_API_KEY": "em-key-TOPSECRET",
    "WATTTIME_USERNAME": "wt-user",
    "WATTTIME_PASSWORD": "wt-PASS-secret",
}


def allow(api: FakeApi) -> dict[str, str]:
    """The operator's environment with the fake provider on its base-URL allow-list."""
    return {"GRIDWISE_CARBON_ALLOWED_URLS": api.base_url}


TRACES = {"GRIDWISE_TRACE_DIRS": str(FIXTURES)}


def keyed(fake_api: FakeApi, provider: str, zone: str, clock: ManualClock | None = None) -> Provider:
    """A keyed provider (ENV's credentials) pointed at the local stand-in, which is allow-listed."""
    spec = {"provider": provider, "zone": zone, "baseURL": fake_api.base_url}
    return build_provider(spec, env=allow(fake_api), secret=ENV, clock=clock or ManualClock(NOW))


async def refused(provider: Provider, match: str) -> ProviderError:
    """The error a fetch raises (it must raise one matching `match`); the client is closed either way."""
    try:
        with pytest.raises(ProviderError, match=match) as info:
            await provider.fetch()
    finally:
        await provider.aclose()
    return info.value


async def test_uk_neso_parses_documented_format(fake_api: FakeApi) -> None:
    fake_api.set("/intensity/2023-06-01T12:00Z/fw48h", body=(FIXTURES / "uk_neso_fw48h.json").read_bytes())
    provider = build_provider(
        {"provider": "uk-neso", "baseURL": fake_api.base_url}, env=allow(fake_api), clock=ManualClock(NOW)
    )
    try:
        result = await provider.fetch()
    finally:
        await provider.aclose()
    assert result.signal_type == "average" and result.emission_factor == "direct"
    assert result.current is not None and result.current.grams_per_kwh == 147  # the actual, not the forecast
    assert len(result.forecast) == 96
    assert result.forecast[0].end - result.forecast[0].start == timedelta(minutes=30)


async def test_electricitymaps_parses_and_sends_key_in_header(fake_api: FakeApi) -> None:
    fake_api.fixture("/v3/carbon-intensity/latest", "electricitymaps_latest.json")
    fake_api.fixture("/v3/carbon-intensity/forecast", "electricitymaps_forecast.json")
    provider = keyed(fake_api, "electricitymaps", "DE")
    try:
        result = await provider.fetch()
    finally:
        await provider.aclose()
    assert result.current is not None and result.current.grams_per_kwh == 302
    assert result.emission_factor == "lifecycle" and result.signal_type == "average"
    assert [p.grams_per_kwh for p in result.forecast[:2]] == [300, 298]
    _path, query, headers = fake_api.requests[0]
    assert query == "zone=DE"
    assert headers.get("auth-token") == "em-key-TOPSECRET"


async def test_watttime_logs_in_and_converts_lbs_per_mwh(fake_api: FakeApi) -> None:
    fake_api.fixture("/login", "watttime_login.json")
    fake_api.fixture("/v3/forecast", "watttime_forecast.json")
    provider = keyed(fake_api, "watttime", "CAISO_NORTH")
    try:
        result = await provider.fetch()
    finally:
        await provider.aclose()
    assert result.signal_type == "marginal"
    assert result.current is not None
    # 12:10 is point 2 of the 5-min forecast starting 12:00: value 902 lbs/MWh.
    assert result.current.grams_per_kwh == pytest.approx(902 * LBS_PER_MWH_TO_G_PER_KWH)
    assert result.forecast[0].start == datetime(2023, 6, 1, 12, 10, tzinfo=UTC)
    login, forecast = fake_api.requests[0], fake_api.requests[1]
    assert login[2]["Authorization"].startswith("Basic ")
    assert forecast[2]["Authorization"] == "Bearer wt-token-SECRET-abc123"
    assert "signal_type=co2_moer" in forecast[1]


async def test_carbon_aware_sdk_parses_forecast(fake_api: FakeApi) -> None:
    fake_api.fixture("/emissions/forecasts/current", "carbon_aware_sdk_forecast.json")
    provider = build_provider(
        {
            "provider": "carbon-aware-sdk",
            "zone": "eastus",
            "signalType": "marginal",
            "baseURL": fake_api.base_url,
        },
        env=allow(fake_api),
        clock=ManualClock(NOW),
    )
    try:
        result = await provider.fetch()
    finally:
        await provider.aclose()
    assert result.signal_type == "marginal"
    assert result.current is not None and result.current.grams_per_kwh == 398.0
    assert fake_api.requests[0][1] == "location=eastus"


async def test_static_and_trace_providers() -> None:
    clock = ManualClock(datetime(2022, 4, 3, 5, 30, tzinfo=UTC))
    static = build_provider(
        {"provider": "static", "zone": "x", "staticGramsPerKWh": 123}, env={}, clock=clock
    )
    result = await static.fetch()
    assert result.current is not None and result.current.grams_per_kwh == 123 and len(result.forecast) == 48
    spec = {
        "provider": "trace",
        "zone": "US-CAL-CISO",
        "tracePath": str(FIXTURES / "em_us-cal-ciso_2022-04_hourly.csv"),
    }
    trace = build_provider(spec, env=TRACES, clock=clock)
    result = await trace.fetch()
    # Row "2022-04-03 05:00:00" of the real export, direct column.
    line = next(
        row
        for row in (FIXTURES / "em_us-cal-ciso_2022-04_hourly.csv").read_text().splitlines()
        if row.startswith("2022-04-03 05:00:00")
    )
    assert result.current is not None and result.current.grams_per_kwh == float(line.split(",")[4])
    assert result.forecast == () and result.signal_type == "average"
    assert len(trace.history(clock.now(), timedelta(days=1))) == 24


async def test_trace_provider_replays_issued_forecasts() -> None:
    clock = ManualClock(datetime(2023, 6, 9, 10, 2, tzinfo=UTC))
    spec = {
        "provider": "trace",
        "zone": "CAISO_NORTH",
        "tracePath": str(FIXTURES / "wt_caiso-north_2023-06-08_forecast.csv"),
    }
    result = await build_provider(spec, env=TRACES, clock=clock).fetch()
    assert result.signal_type == "marginal"
    assert result.forecast and result.forecast[0].start <= datetime(2023, 6, 9, 10, 5, tzinfo=UTC)


def test_unknown_provider_lists_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        build_provider({"provider": "carbonsoft"}, env={}, clock=ManualClock(NOW))
    for name in PROVIDERS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"provider": "electricitymaps", "zone": "DE"}, "ELECTRICITYMAPS_API_KEY"),
        ({"provider": "watttime", "zone": "CAISO_NORTH"}, "WATTTIME_USERNAME"),
        ({"provider": "watttime", "zone": "X", "signalType": "average"}, "marginal"),
        ({"provider": "static", "zone": "x", "staticGramsPerKWh": -1}, "staticGramsPerKWh"),
        ({"provider": "carbon-aware-sdk", "zone": "x"}, "baseURL"),
        ({"provider": "static", "zone": "x", "signalType": "weird", "staticGramsPerKWh": 1}, "signalType"),
        ({"provider": "trace", "zone": "x", "tracePath": "/nonexistent.csv"}, "tracePath"),
    ],
)
def test_bad_specs_fail_clearly(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_provider(spec, env={}, clock=ManualClock(NOW))


def neso(*values: object, start_hour: int = 12) -> str:
    rows = [
        f'{{"from": "2023-06-01T{start_hour + i}:00Z", "to": "2023-06-01T{start_hour + i}:30Z",'
        f' "intensity": {{"forecast": {json.dumps(v)}}}}}'
        for i, v in enumerate(values)
    ]
    return '{"data": [' + ", ".join(rows) + "]}"


def test_secret_files_are_read(tmp_path: object) -> None:
    from pathlib import Path

    key = Path(str(tmp_path)) / "key"
    key.write_text("file-key-123\n")
    provider = build_provider(
        {"provider": "electricitymaps", "zone": "DE"},
        env={"ELECTRICITYMAPS_API_KEY_FILE": str(key)},
        clock=ManualClock(NOW),
        http=httpx.AsyncClient(),
    )
    assert provider.secrets[0].reveal() == "file-key-123"
    assert "file-key-123" not in repr(provider) and "file-key-123" not in repr(provider.secrets)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json at all", "not valid JSON"),
        ('{"unexpected": []}', "lacks 'data'"),
        (neso(-5), "negative"),
        (neso(99999), "absurd"),
        (neso("high"), "not a number"),
        (
            neso(100).replace("]}", "")
            + ', {"from": "2023-06-01T14:00Z", "to": "2023-06-01T14:30Z", "intensity": {"forecast": 100}}]}',
            "gap",
        ),
        ('{"data": []}', "no data"),
    ],
)
async def test_garbage_raises_provider_error(fake_api: FakeApi, body: str, message: str) -> None:
    fake_api.set("/intensity/*", body=body)
    provider = build_provider(
        {"provider": "uk-neso", "baseURL": fake_api.base_url}, env=allow(fake_api), clock=ManualClock(NOW)
    )
    await refused(provider, message)


async def test_watttime_wrong_units_rejected(fake_api: FakeApi) -> None:
    fake_api.fixture("/login", "watttime_login.json")
    body = (FIXTURES / "watttime_forecast.json").read_text().replace("lbs_co2_per_mwh", "kg_co2_per_mwh")
    fake_api.set("/v3/forecast", body=body)
    provider = keyed(fake_api, "watttime", "CAISO_NORTH")
    await refused(provider, "units")


# A refused paid tier: Electricity Maps answers 401/402/403 on the forecast to a key `latest` accepts.
TIER_BODY = '{"status": "error", "message": "Your plan does not include access to this endpoint"}'


@pytest.mark.parametrize("status", [401, 402, 403])
async def test_electricitymaps_forecast_refused_by_tier_keeps_the_current_value(
    fake_api: FakeApi, status: int
) -> None:
    fake_api.fixture("/v3/carbon-intensity/latest", "electricitymaps_latest.json")
    fake_api.set("/v3/carbon-intensity/forecast", status=status, body=TIER_BODY)
    provider = keyed(fake_api, "electricitymaps", "DE")
    try:
        result = await provider.fetch()
    finally:
        await provider.aclose()
    assert result.current is not None and result.current.grams_per_kwh == 302
    assert result.forecast == ()
    assert f"HTTP {status}" in result.forecast_unavailable and "plan" in result.forecast_unavailable
    assert "em-key-TOPSECRET" not in result.forecast_unavailable


async def test_electricitymaps_forecast_outage_is_still_an_error(fake_api: FakeApi) -> None:
    """Only a tier refusal keeps the current value; a failing forecast server is an outage."""
    fake_api.fixture("/v3/carbon-intensity/latest", "electricitymaps_latest.json")
    fake_api.set("/v3/carbon-intensity/forecast", status=503, body='{"error": "unavailable"}')
    provider = keyed(fake_api, "electricitymaps", "DE")
    info = await refused(provider, "HTTP 503")
    assert info.status == 503


async def test_a_tier_limited_forecast_is_filled_by_our_forecaster(fake_api: FakeApi) -> None:
    fake_api.fixture("/v3/carbon-intensity/latest", "electricitymaps_latest.json")
    fake_api.set("/v3/carbon-intensity/forecast", status=403, body=TIER_BODY)
    clock = ManualClock(NOW)
    provider = keyed(fake_api, "electricitymaps", "DE", clock=clock)
    signal = CarbonSignal(provider, clock=clock, retries=0)
    try:
        reading = await signal.read()
    finally:
        await signal.aclose()
    assert not reading.stale, "the good current value is kept"
    assert reading.current is not None and reading.current.grams_per_kwh == 302
    assert reading.forecast and reading.forecast[-1].end >= NOW + timedelta(hours=47)
    assert "HTTP 403" in reading.forecast_unavailable
    assert "forecast by the ensemble" in reading.reason and "not in its plan" in reading.reason
    assert signal_step(reading, NOW) == SIGNAL_OWN_FORECAST


async def test_watttime_forecast_refused_after_login_is_the_plan_not_the_password(fake_api: FakeApi) -> None:
    """WattTime's forecast is its only absolute value: no current to keep, but no false "credentials"."""
    fake_api.fixture("/login", "watttime_login.json")
    fake_api.set("/v3/forecast", status=403, body='{"error": "Forbidden", "message": "no access to region"}')
    provider = keyed(fake_api, "watttime", "PJM_DC")
    err = await refused(provider, r"not in this account's plan \(HTTP 403\)")
    message = str(err)
    assert "credentials" not in message
    assert err.status == 403 and not err.retryable
    assert [r[0] for r in fake_api.requests] == ["/login", "/v3/forecast"], "a fresh token is not renewed"
    assert "wt-PASS-secret" not in message and "wt-token-SECRET" not in message


async def test_watttime_refused_login_is_still_rejected_credentials(fake_api: FakeApi) -> None:
    fake_api.set("/login", status=403, body='{"error": "Forbidden"}')
    provider = keyed(fake_api, "watttime", "CAISO_NORTH")
    await refused(provider, "credentials rejected")
