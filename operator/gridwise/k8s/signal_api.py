"""GET /v1/signal/<namespace>/<name>: a job's grid reading, for its trainer, on the operator's HTTP port.

Thin: validate the names, find the job's JobSignal, answer `gridwise.job_signal.signal_document`.
The leader answers from what its last tick decided (the SignalBoard). A standby, or a leader that
has not ticked the job yet, answers from the job's written status (`status.carbonIntensity`), so
the Service may route a trainer to any replica. Those API reads are cached per job and limited in
number at once, so an unauthenticated caller cannot make the operator hammer the API server; and
they only ever reach namespaces the operator watches (its RBAC allows nothing else anyway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from gridwise.job_signal import JobSignal, SignalBoard, from_status, signal_document, valid_name

log = logging.getLogger(__name__)

# (namespace, name) -> the CarbonAwareJob, or None when it does not exist.
Lookup = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]

_NO_STORE = {"Cache-Control": "no-store"}


class SignalEndpoint:
    def __init__(
        self,
        board: SignalBoard,
        lookup: Lookup | None = None,
        namespaces: Sequence[str] = (),
        *,
        cache_ttl_s: float = 15.0,
        max_cached: int = 4096,
        max_concurrent: int = 4,
    ) -> None:
        """`namespaces` empty: every namespace (a cluster-wide operator)."""
        self.board, self.lookup = board, lookup
        self.namespaces = frozenset(namespaces)
        self.cache_ttl_s, self.max_cached = cache_ttl_s, max_cached
        self._cache: dict[tuple[str, str], tuple[float, JobSignal | None]] = {}
        self._reads = asyncio.Semaphore(max_concurrent)

    async def find(self, namespace: str, name: str) -> JobSignal | None:
        """The job's signal; None for no such job here. Raises when the status cannot be read now."""
        if not (valid_name(namespace) and valid_name(name)):
            return None
        if self.namespaces and namespace not in self.namespaces:
            return None
        found = self.board.get(namespace, name)
        if found is not None or self.lookup is None:
            return found
        key = (namespace, name)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._reads:
            body = await self.lookup(namespace, name)
        signal = from_status(body.get("status") or {}) if body is not None else None
        if len(self._cache) >= self.max_cached:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= self.max_cached:
                self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (now + self.cache_ttl_s, signal)
        return signal

    async def handle(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        try:
            signal = await self.find(namespace, name)
        except Exception as exc:  # the API server away or refusing: the trainer keeps its last reading
            log.info("signal for %s/%s: job status unreadable: %s", namespace, name, type(exc).__name__)
            return web.json_response(
                {"error": "the job's status cannot be read now; retry later"}, status=503, headers=_NO_STORE
            )
        if signal is None:
            return web.json_response(
                {"error": "no such CarbonAwareJob is known to this operator"},
                status=404,
                headers=_NO_STORE,
            )
        return web.json_response(signal_document(namespace, name, signal), headers=_NO_STORE)
