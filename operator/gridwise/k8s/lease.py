"""Leader election on a coordination.k8s.io Lease, so several operator replicas never act twice.

kopf's peering pauses peers by priority and freezes all of them when priorities tie, so
gridwise elects one leader with a Lease instead (the same protocol as client-go) and runs
kopf in standalone mode only while it holds the Lease. Lease times are wall-clock times,
never the injected replay clock: other replicas and the API server share only real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)


def _micro(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaseLost(RuntimeError):
    """This replica stopped being the leader; it must stop acting at once."""


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
    ) -> None:
        self._api: Any = client.CoordinationV1Api(api)  # raw JSON dicts in and out
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds = lease_seconds

    async def _read(self) -> dict[str, Any] | None:
        try:
            resp = await self._api.read_namespaced_lease(self.name, self.namespace, _preload_content=False)
            body = await resp.read()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise ApiException(status=resp.status, reason=body.decode(errors="replace")[:500])
        data: dict[str, Any] = json.loads(body)
        return data

    async def try_acquire(self) -> bool:
        """One attempt: take a free or expired Lease, or renew ours. Optimistic: a race loses with 409."""
        now = datetime.now(UTC)
        lease = await self._read()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": _micro(now),
        }
        try:
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {**spec, "acquireTime": _micro(now), "leaseTransitions": 0},
                }
                await self._api.create_namespaced_lease(self.namespace, body)
                return True
            current = lease.get("spec") or {}
            holder = current.get("holderIdentity")
            renew = current.get("renewTime")
            duration = int(current.get("leaseDurationSeconds") or self.lease_seconds)
            expired = renew is None or _parse(renew) + timedelta(seconds=duration) < now
            if holder not in (None, "", self.identity) and not expired:
                return False
            new_spec = {**current, **spec}
            if holder != self.identity:
                new_spec["acquireTime"] = _micro(now)
                new_spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
            lease["spec"] = new_spec
            await self._api.replace_namespaced_lease(self.name, self.namespace, lease)
            return True
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Waits until this replica leads (True) or `stop` is set (False)."""
        while not stop.is_set():
            if await self.try_acquire():
                log.info(
                    "leader election: %s now holds lease %s/%s", self.identity, self.namespace, self.name
                )
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.lease_seconds / 3)
        return False

    async def hold(self, stop: asyncio.Event) -> None:
        """Renews until `stop`; raises LeaseLost when a renewal fails past the lease's duration."""
        last_ok = datetime.now(UTC)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.lease_seconds / 3)
                break
            except TimeoutError:
                pass
            try:
                ok = await self.try_acquire()
            except (ApiException, OSError) as exc:
                log.warning("leader election: renewal failed: %s", exc)
                ok = False
            if ok:
                last_ok = datetime.now(UTC)
            elif datetime.now(UTC) - last_ok > timedelta(seconds=self.lease_seconds * 2 / 3):
                raise LeaseLost(f"{self.identity} lost lease {self.namespace}/{self.name}")

    async def release(self) -> None:
        """Hands the Lease back at shutdown so a standby takes over at once rather than after expiry."""
        lease = await self._read()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"]["holderIdentity"] = None
        lease["spec"]["renewTime"] = None
        try:
            await self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            log.warning("leader election: could not release the lease: %s", exc)
