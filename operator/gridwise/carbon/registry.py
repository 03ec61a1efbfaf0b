"""Turns a CarbonAwareJob's `spec.carbon` into a provider: the one list of provider names lives here."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import httpx

from gridwise.carbon import http as carbon_http
from gridwise.carbon.access import AccessError, AccessPolicy, credentials_from_secret
from gridwise.carbon.providers import carbon_aware_sdk, electricitymaps, static, trace, uk_neso, watttime
from gridwise.carbon.providers.base import Provider
from gridwise.carbon.reading import SIGNAL_TYPES
from gridwise.carbon.secrets import Secret, load_secret
from gridwise.carbon.traces import (
    TRACE_COLUMNS,
    TraceError,
    load_forecast_trace,
    load_trace,
    read_header,
    trace_kind,
)
from gridwise.clock import Clock

log = logging.getLogger(__name__)

# The CRD's spec.carbon.provider enum must equal this tuple (a test checks it).
PROVIDERS: Final = ("uk-neso", "electricitymaps", "watttime", "carbon-aware-sdk", "static", "trace")
# Providers whose signal type is fixed by the source; the others take spec.signalType.
FIXED_SIGNAL_TYPES: Final = {"uk-neso": "average", "electricitymaps": "average", "watttime": "marginal"}


def signal_type_for(carbon: Mapping[str, Any]) -> str:
    """The signal type a job's carbon spec gives: its own signalType, else the provider's (WattTime marginal).

    Status, the trainer's env and stale readings must use this, not a blanket "average".
    """
    wanted = carbon.get("signalType")
    if isinstance(wanted, str) and wanted in SIGNAL_TYPES:
        return wanted
    return FIXED_SIGNAL_TYPES.get(str(carbon.get("provider")), "average")


def _text(spec: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"spec.carbon.{key} is required and must be a non-empty string")
    return value


def _credentials(
    provider: str,
    names: tuple[str, ...],
    *,
    env: Mapping[str, str],
    secret: Mapping[str, str] | None,
    overridden: bool,
    official: str,
) -> dict[str, Secret]:
    """Credentials from the job's own Secret, else the operator's, and the operator's only for `official`."""
    if secret is not None:
        values = credentials_from_secret(secret, names)
        missing = [n for n in names if n not in values]
        if missing:
            raise AccessError(
                "CredentialsMissing",
                f"the Secret named by spec.carbon.secretRef has no {' or '.join(missing)} for {provider}",
            )
        return {n: Secret(v) for n, v in values.items()}
    if overridden:
        raise AccessError(
            "OperatorCredentialsRefused",
            f"{provider} with spec.carbon.baseURL needs its own credentials in spec.carbon.secretRef: "
            f"the operator's credentials are only sent to {official}",
        )
    found: dict[str, Secret] = {}
    for n in names:
        try:
            value = load_secret(env, n)
        except ValueError:
            raise AccessError(
                "CredentialsMissing", f"{provider}: the operator's credentials are unreadable"
            ) from None
        if value is not None:
            found[n] = value
    if len(found) != len(names):
        raise AccessError(
            "CredentialsMissing",
            f"{provider} needs credentials: a Secret in the job's namespace named by spec.carbon.secretRef "
            f"with keys {', '.join(names)}, or operator-level credentials",
        )
    return found


def build_provider(
    spec: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    clock: Clock,
    http: httpx.AsyncClient | None = None,
    secret: Mapping[str, str] | None = None,
    access: AccessPolicy | None = None,
) -> Provider:
    """Build the provider a job asked for; bad or refused specs fail here, before anything connects.

    `env` is the operator's environment: its credentials (ELECTRICITYMAPS_API_KEY, WATTTIME_USERNAME /
    WATTTIME_PASSWORD, or the same names with `_FILE`) go only to the provider's official endpoint.
    `secret` is the data of the job's own Secret (spec.carbon.secretRef), or None when it names none:
    when given it is the only source of credentials. `access` (default: from `env`) limits baseURL
    overrides and trace files; its refusals are AccessErrors with a message safe for the tenant.
    """
    access = access if access is not None else AccessPolicy.from_env(env)
    name = spec.get("provider")
    if name not in PROVIDERS:
        raise ValueError(f"unknown carbon provider {name!r}; known providers: {', '.join(PROVIDERS)}")
    signal_type = spec.get("signalType") or signal_type_for(spec)
    if signal_type not in SIGNAL_TYPES:
        raise ValueError(
            f"spec.carbon.signalType must be one of {', '.join(SIGNAL_TYPES)}, got {signal_type!r}"
        )
    fixed = FIXED_SIGNAL_TYPES.get(name)
    if fixed is not None and signal_type != fixed:
        raise ValueError(f"provider {name} gives a {fixed} signal, but signalType is {signal_type!r}")
    zone = _text(spec, "zone", "GB" if name == "uk-neso" else None)
    raw_url = spec.get("baseURL")
    # Refused before any client exists: a job cannot make the operator connect anywhere unlisted.
    base_url = access.check_base_url(raw_url) if raw_url is not None else None
    overridden = base_url is not None
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
        creds = _credentials(
            name,
            (electricitymaps.API_KEY_ENV,),
            env=env,
            secret=secret,
            overridden=overridden,
            official=electricitymaps.DEFAULT_BASE_URL,
        )
        return electricitymaps.ElectricityMapsProvider(
            zone=zone,
            base_url=base_url or electricitymaps.DEFAULT_BASE_URL,
            token=creds[electricitymaps.API_KEY_ENV],
            clock=clock,
            http=client(),
            owns_http=owns,
        )
    if name == "watttime":
        creds = _credentials(
            name,
            (watttime.USERNAME_ENV, watttime.PASSWORD_ENV),
            env=env,
            secret=secret,
            overridden=overridden,
            official=watttime.DEFAULT_BASE_URL,
        )
        return watttime.WattTimeProvider(
            zone=zone,
            base_url=base_url or watttime.DEFAULT_BASE_URL,
            username=creds[watttime.USERNAME_ENV],
            password=creds[watttime.PASSWORD_ENV],
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
    column = spec.get("traceColumn", "direct")
    if column not in TRACE_COLUMNS:
        raise ValueError(f"spec.carbon.traceColumn must be one of {', '.join(TRACE_COLUMNS)}, got {column!r}")
    path = access.resolve_trace(spec.get("tracePath"))
    try:
        header = [cell.strip() for cell in read_header(path)]
        loaded = (
            load_forecast_trace(path)
            if trace_kind(header) == "watttime-forecast"
            else load_trace(path, column)
        )
    except (OSError, UnicodeDecodeError, TraceError) as exc:
        # The detail (which may quote the file) stays in the operator's log; the tenant gets our words.
        log.warning("trace for spec.carbon.tracePath %r unusable: %s", spec.get("tracePath"), exc)
        raise AccessError(
            "TraceUnreadable",
            "spec.carbon.tracePath is not a trace gridwise can read (details in the operator log)",
        ) from None
    for note in getattr(loaded, "notes", ()):
        log.warning("trace for spec.carbon.tracePath %r repaired on load: %s", spec.get("tracePath"), note)
    if loaded.signal_type != signal_type and spec.get("signalType"):
        raise ValueError(f"the trace is a {loaded.signal_type} signal, but signalType is {signal_type!r}")
    return trace.TraceProvider(zone=zone, trace=loaded, clock=clock)
