"""Live grid carbon intensity from a number, a file or a small HTTP JSON endpoint.

The trainer reads the signal itself instead of importing the operator, so the image stays torch-only.
In an operator-run pod GRIDWISE_CARBON_URL is the operator's GET /v1/signal/<ns>/<name>: the reading
the operator decided on for this job (docs/trainer-contract.md, "The grid signal"). The document is
{"gramsPerKWh": x | null, "signalType": ..., "stale": ...}; the older {"grams_per_kwh": x,
"signal_type": ...} and a bare number are still read. Nothing here raises into training: a failing
endpoint, a document without a value or an implausible one keeps the last good reading (or the
fixed GRIDWISE_CARBON_INTENSITY, or none: emissions n/a) and says so in the log.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    grams_per_kwh: float
    signal_type: str
    source: str  # env | file | url | default
    stale: bool = False  # the operator follows its last good forecast for this value

    def describe(self) -> str:
        return f"{self.grams_per_kwh:g} g/kWh {self.signal_type} from {self.source}"


def _first(raw: dict[str, object], *keys: str) -> object:
    return next((raw[k] for k in keys if k in raw), None)


class IntensitySource:
    """Returns the latest reading, re-polling at most every `poll_seconds` and keeping the last good one."""

    def __init__(
        self,
        fixed: float | None = None,
        url: str | None = None,
        path: Path | None = None,
        signal_type: str = "average",
        poll_seconds: float = 60.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.fixed, self.url, self.path = fixed, url, path
        self.signal_type = signal_type
        self.poll_seconds = poll_seconds
        self.timeout_s = timeout_s
        self._last: Reading | None = None
        self._at = float("-inf")
        self._stale_logged = False

    def _fetch(self) -> Reading | None:
        if self.url:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
                return self._parse(resp.read(), "url")
        if self.path:
            return self._parse(self.path.read_bytes(), "file")
        if self.fixed is not None:
            return Reading(self.fixed, self.signal_type, "env")
        return None

    def _parse(self, body: bytes, origin: str) -> Reading:
        raw = json.loads(body)
        if isinstance(raw, dict):
            value = _first(raw, "gramsPerKWh", "grams_per_kwh")
            if value is None:
                raise ValueError("no reading yet (gramsPerKWh is null)")
            sig = str(_first(raw, "signalType", "signal_type") or self.signal_type)
            stale = raw.get("stale") is True
        else:
            value, sig, stale = raw, self.signal_type, False
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"intensity {value!r} is not a number")
        grams = float(value)
        if not 0 <= grams < 5000:
            raise ValueError(f"implausible intensity {grams}")
        return Reading(grams, sig, origin, stale)

    def read(self, now: float | None = None) -> Reading | None:
        t = time.monotonic() if now is None else now
        if self._last is not None and t - self._at < self.poll_seconds:
            return self._last
        self._at = t
        try:
            reading = self._fetch()
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as exc:
            fallback = self._last or (
                Reading(self.fixed, self.signal_type, "env") if self.fixed is not None else None
            )
            using = f"keeping {fallback.describe()}" if fallback else "emissions are n/a until it answers"
            log.warning("carbon intensity unavailable (%s: %s); %s", type(exc).__name__, exc, using)
            return fallback
        if reading is not None:
            if reading.stale != self._stale_logged:
                self._stale_logged = reading.stale
                if reading.stale:
                    log.warning(
                        "the carbon signal is stale (the operator follows its last good forecast); using %s",
                        reading.describe(),
                    )
                else:
                    log.info("the carbon signal is fresh again: %s", reading.describe())
            self._last = reading
        return self._last
