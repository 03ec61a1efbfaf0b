"""One CarbonSignal per (provider, zone, signal type, credentials), shared by every job that uses it.

Five hundred jobs in one zone make one provider call per refresh, not five hundred, and share one
ensemble forecaster: its history, memo and member scores live with the signal (bounded, see
carbon/outlook.py). Signals under different credentials never share one, so no tenant's data shapes
another tenant's forecast.
The operator's environment holds its own credentials and its access policy (allowed base URLs, trace
directories); a job's Secret is kept apart from it, so a job can never borrow the operator's keys
for a URL of its choosing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gridwise.carbon import CarbonSignal, build_provider
from gridwise.carbon.access import AccessPolicy
from gridwise.carbon.outlook import live_forecaster
from gridwise.clock import Clock


def signal_key(carbon: Mapping[str, Any], secret: Mapping[str, str] | None) -> str:
    """A cache key that separates credentials (and whose they are) without keeping them readable."""
    digest = hashlib.sha256(json.dumps(sorted((secret or {}).items())).encode()).hexdigest()[:16]
    return json.dumps(
        {**carbon, "secretRef": None, "_creds": digest, "_tenant": secret is not None},
        sort_keys=True,
        default=str,
    )


class SignalHub:
    def __init__(
        self,
        clock: Clock,
        env: Mapping[str, str],
        *,
        ttl_s: float = 300.0,
        min_interval_s: float = 60.0,
        timeout_s: float = 10.0,
        access: AccessPolicy | None = None,
    ) -> None:
        self._clock = clock
        self._env = dict(env)
        # Built once at start: a bad allow-list entry stops the operator with a clear message.
        self._access = access if access is not None else AccessPolicy.from_env(self._env)
        self._signals: dict[str, CarbonSignal] = {}
        self._specs: dict[str, dict[str, Any]] = {}
        self._refused: dict[str, tuple[ValueError, datetime]] = {}
        self._lock = asyncio.Lock()
        self._ttl_s, self._min_interval_s, self._timeout_s = ttl_s, min_interval_s, timeout_s

    async def get(self, carbon: Mapping[str, Any], secret: Mapping[str, str] | None = None) -> CarbonSignal:
        """The shared signal for this spec; ValueError (AccessError: safe `public_message`) for a bad spec.

        `secret` is the data of the Secret named by `carbon.secretRef` (read in the job's namespace).
        When the spec names a Secret, its data is the only source of credentials, even if empty.
        """
        tenant = dict(secret or {}) if (carbon.get("secretRef") or {}).get("name") else None
        key = signal_key(carbon, tenant)
        found = self._signals.get(key)
        if found is not None:
            return found
        refused = self._refused.get(key)
        now = self._clock.now()
        if refused is not None and (now - refused[1]).total_seconds() < self._ttl_s:
            raise refused[0]  # a refused spec is not re-read (a trace file) on every tick
        try:
            # Built outside the lock: loading one job's trace never holds up another job's signal.
            provider = await asyncio.to_thread(
                build_provider, carbon, env=self._env, clock=self._clock, secret=tenant, access=self._access
            )
        except ValueError as exc:
            self._refused[key] = (exc, now)
            raise
        self._refused.pop(key, None)
        async with self._lock:
            found = self._signals.get(key)
            if found is None:
                found = CarbonSignal(
                    provider,
                    clock=self._clock,
                    ttl_s=self._ttl_s,
                    min_interval_s=self._min_interval_s,
                    timeout_s=self._timeout_s,
                    forecaster=live_forecaster(),
                )
                self._signals[key] = found
                self._specs[key] = dict(carbon)
                return found
        await provider.aclose()  # another job built the same signal meanwhile
        return found

    def items(self) -> list[tuple[str, dict[str, Any], CarbonSignal]]:
        """Every shared signal with the carbon spec that made it (the zone watcher reads them)."""
        return [(key, self._specs[key], signal) for key, signal in list(self._signals.items())]

    async def aclose(self) -> None:
        async with self._lock:
            signals, self._signals, self._specs = list(self._signals.values()), {}, {}
        for s in signals:
            await s.aclose()
