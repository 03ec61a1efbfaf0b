"""Leader election on a coordination.k8s.io Lease, with client-go's semantics, so replicas never act twice.

kopf's peering pauses peers by priority and freezes all of them when priorities tie, so gridwise
elects one leader with a Lease (the protocol of client-go's `leaderelection` package) and runs kopf
in standalone mode only while it leads. What makes it safe, as in client-go:

- **Expiry is judged by observed time.** A standby never compares the holder's `renewTime` with its
  own wall clock (clocks differ between nodes). It remembers when, on its own monotonic clock, it
  last saw the Lease record *change*; the Lease is free once it has not changed for
  `leaseDurationSeconds` of local time.
- **Renewals are bounded.** Each attempt has its own timeout, and the leader stops acting once it
  has not renewed for `renew_deadline` (< `lease_duration`), before any standby can take over.
- **Transient errors are retried.** 5xx, 429, timeouts and refused connections are logged and
  retried every `retry_period`, by the leader until its renew deadline and by a standby for ever.
  Only a persistent 401/403 (this replica may never lead: broken RBAC or credentials) is fatal.

Lease times are wall-clock strings for humans (`kubectl get lease`); no decision reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gridwise.k8s.kube import read_object

log = logging.getLogger(__name__)


def _micro(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseConflict(Exception):
    """Someone else wrote the Lease between our read and our write (HTTP 409), or it vanished."""


class LeaseDenied(Exception):
    """The API server refused this replica the Lease (HTTP 401/403): RBAC or credentials."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class CannotLead(RuntimeError):
    """The Lease was denied (401/403) for longer than a lease duration: this replica can never lead."""


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec: what a replica compares to tell whether the holder is still renewing."""

    holder: str | None
    lease_duration_s: int
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: dict[str, Any], default_duration: int) -> LeaseRecord:
        return cls(
            holder=spec.get("holderIdentity") or None,
            lease_duration_s=int(spec.get("leaseDurationSeconds") or default_duration),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_s,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


class LeaseAPI(Protocol):
    """The three calls leader election needs. LeaseConflict / LeaseDenied, or else a transient error."""

    async def get(self) -> tuple[LeaseRecord, str] | None:
        """The record and its resourceVersion, or None when there is no Lease."""
        ...

    async def create(self, record: LeaseRecord) -> str: ...

    async def update(self, record: LeaseRecord, resource_version: str) -> str: ...


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's defaults: a new leader at most ~15 s after the old one vanished, renewals every 2 s."""

    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    attempt_timeout_s: float = 5.0  # one get+update; also capped by what is left of the renew deadline

    def __post_init__(self) -> None:
        if not self.lease_duration_s > self.renew_deadline_s > self.retry_period_s > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > retry period > 0, got "
                f"{self.lease_duration_s}, {self.renew_deadline_s}, {self.retry_period_s}"
            )
        if self.attempt_timeout_s <= 0:
            raise ValueError("the per-attempt timeout must be positive")


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


@dataclass
class LeaderElector:
    """One replica's view of the Lease. `clock` is monotonic seconds; `wall` only labels the record."""

    api: LeaseAPI
    identity: str
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[asyncio.Event, float], Awaitable[None]] = _sleep_unless
    on_standby: Callable[[], None] | None = None  # after each campaign attempt that did not win
    observed: LeaseRecord | None = None
    observed_at: float = 0.0  # local monotonic time the record last changed (or was first seen)
    _denied_since: float | None = None
    _last_error: str | None = None

    @property
    def is_leader(self) -> bool:
        """Whether the last record we saw (or wrote) names us. Says nothing about expiry."""
        return self.observed is not None and self.observed.holder == self.identity

    def _observe(self, record: LeaseRecord, now: float) -> None:
        if record != self.observed:
            self.observed, self.observed_at = record, now

    async def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew). Errors propagate; the loops classify them."""
        now = self.clock()
        stamp = _micro(self.wall())
        duration = round(self.timing.lease_duration_s)
        found = await self.api.get()
        if found is None:
            record = LeaseRecord(self.identity, duration, stamp, stamp, 0)
            await self.api.create(record)
            self.observed, self.observed_at = record, now
            return True
        current, version = found
        self._observe(current, now)
        held_by_other = current.holder is not None and current.holder != self.identity
        if held_by_other and self.observed_at + current.lease_duration_s > now:
            return False  # the holder renewed within a lease duration of *our* time
        if current.holder == self.identity:
            record = replace(current, lease_duration_s=duration, renew_time=stamp)
        else:
            record = LeaseRecord(self.identity, duration, stamp, stamp, current.transitions + 1)
        await self.api.update(record, version)
        self.observed, self.observed_at = record, now
        return True

    async def _attempt(self, limit_s: float) -> bool:
        """One bounded attempt; False on a conflict or a transient error (logged once per kind)."""
        try:
            ok = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=max(0.001, limit_s))
        except LeaseConflict:
            ok = False
        except LeaseDenied as exc:
            if self._denied_since is None:
                self._denied_since = self.clock()
            self._note(f"the API server denied the Lease: {exc}")
            if self.clock() - self._denied_since > self.timing.lease_duration_s:
                raise CannotLead(
                    f"{self.identity} cannot take part in leader election: the Lease has been denied "
                    f"for over {self.timing.lease_duration_s:.0f}s ({exc}); check the operator's RBAC"
                ) from exc
            return False
        except (TimeoutError, ApiException, OSError, aiohttp.ClientError, ValueError) as exc:
            self._denied_since = None
            reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            self._note(f"Lease request failed, will retry: {reason}")
            return False
        self._denied_since = None
        if self._last_error is not None:
            log.info("leader election: the API server answers again")
            self._last_error = None
        return ok

    def _note(self, message: str) -> None:
        """Logs an error when it first appears or changes, not on every retry."""
        short = message[:300]
        if short != self._last_error:
            log.warning("leader election: %s", short)
            self._last_error = short

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Campaigns until this replica leads (True) or `stop` is set (False); transient errors ride."""
        while not stop.is_set():
            if await self._attempt(self.timing.attempt_timeout_s):
                log.info("leader election: %s now leads (Lease held)", self.identity)
                return True
            if self.on_standby is not None:
                self.on_standby()
            await self.sleep(stop, self.timing.retry_period_s)
        return False

    async def renew(self, stop: asyncio.Event) -> str:
        """Renews while leading. Returns "stopped", or why leadership ended: "taken" or "renew deadline"."""
        last_renew = self.clock()
        while True:
            await self.sleep(stop, self.timing.retry_period_s)
            if stop.is_set():
                return "stopped"
            started = self.clock()
            left = last_renew + self.timing.renew_deadline_s - started
            if left > 0 and await self._attempt(min(self.timing.attempt_timeout_s, left)):
                last_renew = started  # the write happened after this: a safe lower bound
                continue
            if not self.is_leader:
                log.warning(
                    "leader election: %s lost the Lease to %s",
                    self.identity,
                    self.observed.holder if self.observed else None,
                )
                return "taken"
            if self.clock() - last_renew >= self.timing.renew_deadline_s:
                log.warning(
                    "leader election: %s could not renew the Lease for %.0fs (renew deadline)",
                    self.identity,
                    self.clock() - last_renew,
                )
                return "renew deadline"

    async def release(self, limit_s: float = 2.0) -> bool:
        """Hands the Lease back (client-go's ReleaseOnCancel) so a standby takes over without waiting."""
        try:
            return await asyncio.wait_for(self._release(), timeout=limit_s)
        except (TimeoutError, LeaseConflict, LeaseDenied, ApiException, OSError, aiohttp.ClientError) as exc:
            log.warning("leader election: could not release the Lease (it expires instead): %s", exc)
            return False

    async def _release(self) -> bool:
        found = await self.api.get()
        if found is None or found[0].holder != self.identity:
            return False
        stamp = _micro(self.wall())
        record = replace(found[0], holder=None, lease_duration_s=1, renew_time=stamp, acquire_time=stamp)
        await self.api.update(record, found[1])
        self.observed, self.observed_at = record, self.clock()
        log.info("leader election: %s released the Lease", self.identity)
        return True


class KubeLeaseAPI:
    """The Lease through the API server, as raw JSON (no model classes), one object."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, default_duration: int = 15) -> None:
        self._api: Any = client.CoordinationV1Api(api)
        self.namespace, self.name, self.default_duration = namespace, name, default_duration

    @staticmethod
    def _raise(exc: ApiException) -> None:
        if exc.status in (401, 403):
            raise LeaseDenied(exc.status, str(exc.reason)[:300]) from exc
        if exc.status in (404, 409):
            raise LeaseConflict(str(exc.reason)) from exc
        raise exc

    async def get(self) -> tuple[LeaseRecord, str] | None:
        try:
            resp = await self._api.read_namespaced_lease(self.name, self.namespace, _preload_content=False)
            data = await read_object(resp)
        except ApiException as exc:
            if exc.status == 404:
                return None
            self._raise(exc)
            raise  # unreachable: _raise always raises
        record = LeaseRecord.from_spec(data.get("spec") or {}, self.default_duration)
        return record, str(data["metadata"]["resourceVersion"])

    def _manifest(self, record: LeaseRecord, resource_version: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": record.to_spec(),
        }

    async def create(self, record: LeaseRecord) -> str:
        try:
            resp = await self._api.create_namespaced_lease(
                self.namespace, self._manifest(record, None), _preload_content=False
            )
            return str((await read_object(resp))["metadata"]["resourceVersion"])
        except ApiException as exc:
            self._raise(exc)
            raise

    async def update(self, record: LeaseRecord, resource_version: str) -> str:
        try:
            resp = await self._api.replace_namespaced_lease(
                self.name, self.namespace, self._manifest(record, resource_version), _preload_content=False
            )
            return str((await read_object(resp))["metadata"]["resourceVersion"])
        except ApiException as exc:
            self._raise(exc)
            raise
