"""Turns a CarbonAwareJob's `spec.carbon` into a provider: the one list of provider names lives here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import httpx

from gridwise.carbon import http as carbon_http
from gridwise.carbon.providers import carbon_aware_sdk, electricitymaps, static, trace, uk_neso, watttime
from gridwise.carbon.providers.base import Provider
from gridwise.carbon.reading import SIGNAL_TYPES
from gridwise.carbon.secrets import load_secret
from gridwise.carbon.traces import TRACE_COLUMNS, TraceError, load_forecast_trace, load_trace, trace_kind
from gridwise.clock import Clock

# The CRD's spec.carbon.provider enum must equal this tuple (a test checks it).
PROVIDERS: Final = ("uk-neso", "electricitymaps", "watttime", "carbon-aware-sdk", "static", "trace")
# Providers whose signal type is fixed by the source; the others take spec.signalType.
FIXED_SIGNAL_TYPES: Final = {"uk-neso": "average", "electricitymaps": "average", "watttime": "marginal"}


def _text(spec: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"spec.carbon.{key} is required and must be a non-empty string")
    return value


def build_provider(
    spec: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    clock: Clock,
    http: httpx.AsyncClient | None = None,
) -> Provider:
    """Build the provider a job asked for; bad specs fail here, loudly, before anything runs.

    Credentials come from `env`: ELECTRICITYMAPS_API_KEY, WATTTIME_USERNAME / WATTTIME_PASSWORD,
    or the same names with `_FILE` pointing at a mounted Secret file.
    """
    name = spec.get("provider")
    if name not in PROVIDERS:
        raise ValueError(f"unknown carbon provider {name!r}; known providers: {', '.join(PROVIDERS)}")
    signal_type = spec.get("signalType", FIXED_SIGNAL_TYPES.get(name, "average"))
    if signal_type not in SIGNAL_TYPES:
        raise ValueError(
            f"spec.carbon.signalType must be one of {', '.join(SIGNAL_TYPES)}, got {signal_type!r}"
        )
    fixed = FIXED_SIGNAL_TYPES.get(name)
    if fixed is not None and signal_type != fixed:
        raise ValueError(f"provider {name} gives a {fixed} signal, but signalType is {signal_type!r}")
    zone = _text(spec, "zone", "GB" if name == "uk-neso" else None)
    base_url = spec.get("baseURL")
    if base_url is not None and (
        not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
    ):
        raise ValueError("spec.carbon.baseURL must be an http:// or https:// URL")
    owns = http is None

    def client() -> httpx.AsyncClient:
        # Created only once the spec is known to be good, so a rejected spec leaves no open client.
        return http or carbon_http.new_client()

    if name == "uk-neso":
        return uk_neso.UkNesoProvider(
            zone=zone,
            base_url=base_url or uk_neso.DEFAULT_BASE_URL,
            clock=clock,
            http=client(),
            owns_http=owns,
        )
    if name == "electricitymaps":
        token = load_secret(env, electricitymaps.API_KEY_ENV)
        if token is None:
            raise ValueError(f"electricitymaps needs an API key in {electricitymaps.API_KEY_ENV} (or _FILE)")
        return electricitymaps.ElectricityMapsProvider(
            zone=zone,
            base_url=base_url or electricitymaps.DEFAULT_BASE_URL,
            token=token,
            clock=clock,
            http=client(),
            owns_http=owns,
        )
    if name == "watttime":
        user = load_secret(env, watttime.USERNAME_ENV)
        password = load_secret(env, watttime.PASSWORD_ENV)
        if user is None or password is None:
            raise ValueError(
                f"watttime needs {watttime.USERNAME_ENV} and {watttime.PASSWORD_ENV} (or their _FILE forms)"
            )
        return watttime.WattTimeProvider(
            zone=zone,
            base_url=base_url or watttime.DEFAULT_BASE_URL,
            username=user,
            password=password,
            clock=clock,
            http=client(),
            owns_http=owns,
        )
    if name == "carbon-aware-sdk":
        if base_url is None:
            raise ValueError("carbon-aware-sdk is self-hosted: spec.carbon.baseURL is required")
        return carbon_aware_sdk.CarbonAwareSdkProvider(
            zone=zone, signal_type=signal_type, base_url=base_url, clock=clock, http=client(), owns_http=owns
        )
    if name == "static":
        value = spec.get("staticGramsPerKWh")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 5000:
            raise ValueError("static provider needs spec.carbon.staticGramsPerKWh, a number in 0..5000")
        return static.StaticProvider(
            zone=zone, signal_type=signal_type, grams_per_kwh=float(value), clock=clock
        )
    path = _text(spec, "tracePath")
    column = spec.get("traceColumn", "direct")
    if column not in TRACE_COLUMNS:
        raise ValueError(f"spec.carbon.traceColumn must be one of {', '.join(TRACE_COLUMNS)}, got {column!r}")
    try:
        with open(path, encoding="utf-8") as handle:
            header = [cell.strip() for cell in handle.readline().strip().split(",")]
        loaded = (
            load_forecast_trace(path)
            if trace_kind(header) == "watttime-forecast"
            else load_trace(path, column)
        )
    except (OSError, TraceError) as exc:
        raise ValueError(f"spec.carbon.tracePath: {exc}") from None
    if loaded.signal_type != signal_type and "signalType" in spec:
        raise ValueError(f"trace {path} is a {loaded.signal_type} signal, but signalType is {signal_type!r}")
    return trace.TraceProvider(zone=zone, trace=loaded, clock=clock)
