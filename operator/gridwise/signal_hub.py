"""One CarbonSignal per (provider, zone, signal type, credentials), shared by every job that uses it.

Five hundred jobs in one zone make one provider call per refresh, not five hundred.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gridwise.carbon import CarbonSignal, build_provider
from gridwise.clock import Clock


def signal_key(carbon: Mapping[str, Any], secret: Mapping[str, str]) -> str:
    """A cache key that separates credentials without keeping them readable in the key."""
    digest = hashlib.sha256(json.dumps(sorted(secret.items())).encode()).hexdigest()[:16]
    return json.dumps({**carbon, "secretRef": None, "_creds": digest}, sort_keys=True, default=str)


class SignalHub:
    def __init__(
        self,
        clock: Clock,
        env: Mapping[str, str],
        *,
        ttl_s: float = 300.0,
        min_interval_s: float = 60.0,
        timeout_s: float = 10.0,
    ) -> None:
        self._clock = clock
        self._env = dict(env)
        self._signals: dict[str, CarbonSignal] = {}
        self._specs: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._ttl_s, self._min_interval_s, self._timeout_s = ttl_s, min_interval_s, timeout_s

    async def get(self, carbon: Mapping[str, Any], secret: Mapping[str, str] | None = None) -> CarbonSignal:
        """The shared signal for this spec; ValueError (with a readable message) for a bad spec."""
        secret = secret or {}
        key = signal_key(carbon, secret)
        async with self._lock:
            found = self._signals.get(key)
            if found is None:
                provider = build_provider(carbon, env={**self._env, **secret}, clock=self._clock)
                found = CarbonSignal(
                    provider,
                    clock=self._clock,
                    ttl_s=self._ttl_s,
                    min_interval_s=self._min_interval_s,
                    timeout_s=self._timeout_s,
                )
                self._signals[key] = found
                self._specs[key] = dict(carbon)
            return found

    def items(self) -> list[tuple[str, dict[str, Any], CarbonSignal]]:
        """Every shared signal with the carbon spec that made it (the zone watcher reads them)."""
        return [(key, self._specs[key], signal) for key, signal in list(self._signals.items())]

    async def aclose(self) -> None:
        async with self._lock:
            signals, self._signals, self._specs = list(self._signals.values()), {}, {}
        for s in signals:
            await s.aclose()
