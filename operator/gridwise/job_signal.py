"""The grid reading a job's trainer should use: the one the operator itself decided on, as JSON.

The reconciler records, after every tick, the job's `status.carbonIntensity` (what the step booked
and decided with) and a short forecast; the operator's HTTP server answers
GET /v1/signal/<namespace>/<name> with `signal_document` of it. Pure: no Kubernetes, no clock, no
I/O, so the document's shape is unit-tested and the trainer never needs provider credentials.

Only the reading leaves the operator: no spec, no Secret names, no provider error text (a stale
reading's reason may name a Secret), so an unauthenticated caller learns a zone's intensity and
nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from gridwise.api import SpecError, format_time, parse_time
from gridwise.carbon.reading import IntensityPoint
from gridwise.trainer_contract import CONTRACT_VERSION

FORECAST_HOURS: Final = 24.0  # "a short forecast": what a trainer may plan a checkpoint around
FORECAST_MAX_POINTS: Final = 48
# Kubernetes namespace and object names (DNS-1123): anything else is refused before a lookup.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class JobSignal:
    """What the operator decided on for one job at one tick."""

    carbon: Mapping[str, Any] | None  # status.carbonIntensity; None: no reading yet
    # The reading's forecast as the tick had it (shared, not copied): cut to a short one only when a
    # trainer asks, so the reconciler's per-tick record costs nothing.
    forecast: tuple[IntensityPoint, ...] = ()
    time: datetime | None = None  # the tick's clock time


def valid_name(text: str) -> bool:
    """A namespace or object name Kubernetes could hold (bounds what a lookup may be asked)."""
    return len(text) <= 253 and _NAME.match(text) is not None


def short_forecast(
    points: Sequence[IntensityPoint],
    now: datetime,
    hours: float = FORECAST_HOURS,
    limit: int = FORECAST_MAX_POINTS,
) -> tuple[IntensityPoint, ...]:
    """The forecast points still to come within `hours`, at most `limit` of them."""
    until = now + timedelta(hours=hours)
    ahead = sorted((p for p in points if p.end > now and p.start < until), key=lambda p: p.start)
    return tuple(ahead[:limit])


def from_status(status: Mapping[str, Any]) -> JobSignal:
    """A job's signal as its written status holds it (a standby, or a leader before its first tick).

    The status keeps no forecast, so this one has none.
    """
    carbon = status.get("carbonIntensity")
    last = (status.get("accounting") or {}).get("lastTime")
    try:
        when = parse_time(str(last)) if last else None
    except SpecError:
        when = None
    return JobSignal(carbon=dict(carbon) if isinstance(carbon, Mapping) else None, time=when)


def signal_document(namespace: str, name: str, signal: JobSignal) -> dict[str, Any]:
    """The endpoint's JSON (docs/trainer-contract.md "The grid signal"); gramsPerKWh null: none yet.

    `grams_per_kwh`/`signal_type` repeat the value for trainers built against contract 1.0, which
    parsed only those keys.
    """
    carbon = signal.carbon or {}
    raw = carbon.get("gramsPerKWh")
    grams = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
    signal_type = str(carbon.get("signalType") or "average")
    return {
        "contractVersion": CONTRACT_VERSION,
        "namespace": namespace,
        "name": name,
        "gramsPerKWh": grams,
        "signalType": signal_type,
        "provider": str(carbon.get("provider") or ""),
        "zone": str(carbon.get("zone") or ""),
        "stale": grams is None or bool(carbon.get("stale")),
        "time": format_time(signal.time) if signal.time is not None else None,
        "forecast": [
            {
                "start": format_time(p.start),
                "end": format_time(p.end),
                "gramsPerKWh": round(p.grams_per_kwh, 2),
            }
            for p in (
                short_forecast(signal.forecast, signal.time)
                if signal.time is not None
                else signal.forecast[:FORECAST_MAX_POINTS]
            )
        ],
        "grams_per_kwh": grams,
        "signal_type": signal_type,
    }


class SignalBoard:
    """The latest JobSignal per job, written by the reconciler and read by the HTTP server."""

    def __init__(self) -> None:
        self._signals: dict[tuple[str, str], JobSignal] = {}

    def put(self, namespace: str, name: str, signal: JobSignal) -> None:
        self._signals[(namespace, name)] = signal

    def get(self, namespace: str, name: str) -> JobSignal | None:
        return self._signals.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        self._signals.pop((namespace, name), None)

    def clear(self) -> None:
        """A leadership term ended: what this replica decided is no longer the job's reading."""
        self._signals.clear()

    def __len__(self) -> int:
        return len(self._signals)
