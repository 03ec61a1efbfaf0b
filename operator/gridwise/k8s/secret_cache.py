"""Credentials Secrets read at most once a minute, not once per job and tick.

Every job with `spec.carbon.secretRef` needs its Secret's values before it can read its carbon
signal, and a job's tick comes often: every zone wake, every follow-up of its Job's or pods'
events, the safety net. Read from the API server each time, a zone wake of a thousand jobs that
share a provider key is a thousand Secret GETs queued before their pauses, and the steady state
costs a GET per tick. Watching Secrets instead would need the right to list every Secret in the
watched namespaces, which the chart does not grant (least privilege, `rbac.providerSecretNames`).

So each (namespace, name) is read at most once per `ttl_s`, and readers that ask while a read is
in flight share it. A Secret that is missing or may not be read is remembered for `miss_ttl_s`:
its jobs are told at once, and a Secret created or granted later is seen within that time. Any
other failure is not remembered: the next tick reads again. A rotated key is used within `ttl_s`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubernetes_asyncio.client.exceptions import ApiException

Key = tuple[str, str]  # (namespace, Secret name)
TTL_S = 60.0
MISS_TTL_S = 10.0
REMEMBERED_FAILURES = (403, 404)  # answers that stay true until someone changes the cluster


@dataclass(frozen=True)
class _Entry:
    until: float  # monotonic
    values: dict[str, str] | None  # None: the read failed with `status`
    status: int = 0
    reason: str = ""


class SecretCache:
    """Secrets' values by (namespace, name), each read at most once per TTL (see the module doc)."""

    def __init__(
        self,
        read: Callable[[str, str], Awaitable[dict[str, str]]],
        *,
        ttl_s: float = TTL_S,
        miss_ttl_s: float = MISS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl_s, self._miss_ttl_s = ttl_s, miss_ttl_s
        self._clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._reading: dict[Key, asyncio.Future[_Entry]] = {}

    async def get(self, namespace: str, name: str) -> dict[str, str]:
        """The Secret's values (a copy), or the ApiException its read raised (403, 404: remembered)."""
        key = (namespace, name)
        entry = self._entries.get(key)
        if entry is None or entry.until <= self._clock():
            reading = self._reading.get(key)
            if reading is None:
                reading = asyncio.ensure_future(self._fetch(key))
                # Retrieved even when every reader was cancelled: no "never retrieved" warning.
                reading.add_done_callback(lambda f: f.cancelled() or f.exception())
                self._reading[key] = reading
            # Shielded: one reader cancelled (its job deleted) does not cancel the others' read.
            entry = await asyncio.shield(reading)
        if entry.values is None:
            raise ApiException(status=entry.status, reason=entry.reason)
        return dict(entry.values)

    async def _fetch(self, key: Key) -> _Entry:
        try:
            values = await self._read(*key)
            entry = _Entry(self._clock() + self._ttl_s, dict(values))
        except ApiException as exc:
            if exc.status not in REMEMBERED_FAILURES:
                raise
            entry = _Entry(self._clock() + self._miss_ttl_s, None, int(exc.status), str(exc.reason or ""))
        finally:
            del self._reading[key]
        self._forget_expired()
        self._entries[key] = entry
        return entry

    def _forget_expired(self) -> None:
        """Drops what has expired, so Secrets no job refers to any more do not stay in memory."""
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.until <= now]:
            del self._entries[key]
