"""Live grid carbon intensity from a number, a file or a small HTTP JSON endpoint.

The trainer reads the signal itself instead of importing the operator, so the image stays torch-only.
"""

from __future__ import annotations

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
        value = float(raw["grams_per_kwh"]) if isinstance(raw, dict) else float(raw)
        if not 0 <= value < 5000:
            raise ValueError(f"implausible intensity {value}")
        sig = str(raw.get("signal_type", self.signal_type)) if isinstance(raw, dict) else self.signal_type
        return Reading(value, sig, origin)

    def read(self, now: float | None = None) -> Reading | None:
        t = time.monotonic() if now is None else now
        if self._last is not None and t - self._at < self.poll_seconds:
            return self._last
        self._at = t
        try:
            reading = self._fetch()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fallback = self._last or (
                Reading(self.fixed, self.signal_type, "env") if self.fixed is not None else None
            )
            log.warning("carbon intensity unavailable (%s); using %s", exc, fallback)
            return fallback
        if reading is not None:
            self._last = reading
        return self._last
