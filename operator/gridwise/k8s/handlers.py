"""kopf handlers: thin. One loop per CarbonAwareJob hands the object to the Reconciler.

Each job runs in its own kopf daemon (so no two reconciles of one job ever overlap, and the
create and the first tick are one), woken by what can change its decision: its zone's carbon
signal (one watcher per zone, `wakeups.py`), an edit of its spec, or the time its plan said
it changes. A slow interval is only a safety net. The loop keeps the status in memory and
writes it only when something a reader uses has changed (`status_writes.py`).

Handlers are registered on a registry per operator instance (not kopf's global one), so
tests and the demo can build operators with different clocks and intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import kopf

from gridwise.api import GROUP, KUEUE_QUEUE_LABEL, LABEL_MANAGED_BY, MANAGER, PLURAL, VERSION, parse_time
from gridwise.k8s.builders import job_name
from gridwise.k8s.reconciler import Observed, Reconciler, TickResult
from gridwise.k8s.wakeups import Wakeups, wall_seconds_until
from gridwise.status_writes import WritePolicy, write_reason

log = logging.getLogger(__name__)

MIN_RETRY_S = 1.0
JOB_SPEC_FIELDS = ("suspend", "parallelism", "completions", "completionMode")
JOB_STATUS_FIELDS = ("active", "ready", "succeeded", "failed", "terminating")


def slim_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """The few fields of a Job a decision reads: the index holds this, not whole Jobs."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    labels = meta.get("labels") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "labels": {k: v for k, v in labels.items() if k == KUEUE_QUEUE_LABEL},
            "ownerReferences": [
                {"uid": r.get("uid"), "controller": r.get("controller"), "kind": r.get("kind")}
                for r in meta.get("ownerReferences") or []
            ],
        },
        "spec": {k: spec[k] for k in JOB_SPEC_FIELDS if k in spec},
        "status": {
            **{k: status[k] for k in JOB_STATUS_FIELDS if k in status},
            "conditions": [
                {"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason")}
                for c in status.get("conditions") or []
            ],
        },
    }


def _post(body: kopf.Body, result: TickResult) -> None:
    for type_, reason, message in result.events:
        kopf.event(body, type=type_, reason=reason, message=message)


def _observed(body: kopf.Body, jobs: kopf.Index[Any, Any], pods: kopf.Index[Any, Any]) -> Observed:
    """The owned Job and its running pods' IPs from kopf's watch-fed indexes: no API call per tick."""
    key = (body.metadata.namespace, job_name(body.metadata.name or ""))
    found = list(jobs.get(key, []))
    return Observed(job=found[0] if found else None, pod_ips=sorted(pods.get(key, [])))


def merge_status(status: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A tick's status over the previous one; None removes a field (as in a merge patch)."""
    merged = {**status, **update}
    return {k: v for k, v in merged.items() if v is not None}


def status_patch(written: Mapping[str, Any] | None, status: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from what was written to `status`: fields it no longer has are removed."""
    patch: dict[str, Any] = dict(status)
    for key in written or {}:
        if key not in status:
            patch[key] = None
    return patch


class JobLoop:
    """Reconciles one CarbonAwareJob until kopf stops its daemon; never raises out."""

    def __init__(
        self,
        reconciler: Reconciler,
        wakeups: Wakeups,
        body: kopf.Body,
        indexes: tuple[kopf.Index[Any, Any], kopf.Index[Any, Any]],
        *,
        interval_s: float,
        policy: WritePolicy,
    ) -> None:
        self.reconciler, self.wakeups, self.body = reconciler, wakeups, body
        self.jobs, self.pods = indexes
        self.interval_s, self.policy = interval_s, policy
        self.key = (body.metadata.namespace or "", body.metadata.name or "")
        self.status: dict[str, Any] = dict(copy.deepcopy(dict(body.get("status") or {})))
        self.written: dict[str, Any] | None = copy.deepcopy(self.status) if self.status else None
        last = (self.status.get("accounting") or {}).get("lastTime")
        self.written_at: datetime | None = parse_time(last) if last else None
        self.failures = 0

    @property
    def _clock(self) -> Any:
        return self.reconciler.ctx.clock

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        wake = self.wakeups.register(self.key, dict(self.body.spec.get("carbon") or {}))
        carbon = dict(self.body.spec.get("carbon") or {})
        try:
            while not stopped:
                wake.clear()
                delay = await self.once()
                new_carbon = dict(self.body.spec.get("carbon") or {})
                if new_carbon != carbon:  # a provider or zone switch moves the job to its new zone
                    carbon = new_carbon
                    wake = self.wakeups.register(self.key, carbon)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=delay)
        finally:
            self.wakeups.forget(self.key)

    async def once(self) -> float:
        """One reconcile and, if it matters, one status write; returns how long to sleep."""
        ctx = self.reconciler.ctx
        view = {**copy.deepcopy(dict(self.body)), "status": copy.deepcopy(self.status)}
        try:
            result = await self.reconciler.tick(view, _observed(self.body, self.jobs, self.pods))
        except Exception:
            ctx.metrics.reconcile_errors.inc()
            self.failures += 1
            log.exception("reconcile of %s/%s failed (attempt %d); retrying", *self.key, self.failures)
            return min(self.interval_s, MIN_RETRY_S * float(2 ** min(self.failures - 1, 6)))
        self.failures = 0
        self.status = merge_status(self.status, result.status)
        _post(self.body, result)
        await self._write()
        return self._next_delay()

    async def _write(self) -> None:
        now = self._clock.now()
        reason = write_reason(self.written, self.written_at, self.status, now, self.policy)
        if reason is None:
            return
        ctx = self.reconciler.ctx
        try:
            await ctx.kube.patch_caj_status(*self.key, status_patch(self.written, self.status))
        except Exception as exc:
            # Kept in memory and retried next time: the pause record and totals are not lost.
            ctx.metrics.status_write_errors.inc()
            log.warning("status of %s/%s not written (%s); will retry", *self.key, exc)
            return
        ctx.metrics.status_writes.labels(reason=reason).inc()
        self.written, self.written_at = copy.deepcopy(self.status), now

    def _next_delay(self) -> float:
        delay = self.interval_s
        if self.written is not None and self.written_at is not None:
            # A deferred write is due at the latest when its interval runs out.
            due = self.written_at + self.policy.max_interval
            delay = min(delay, max(0.05, wall_seconds_until(self._clock, due)))
        planned = (self.status.get("nextChange") or {}).get("time")
        if planned:
            # Wake at the planned change (a resume at 14:00 happens at 14:00, not at the next poll).
            delay = min(delay, max(0.05, wall_seconds_until(self._clock, parse_time(planned))))
        return delay


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    wakeups: Wakeups,
    *,
    tick_seconds: float,
    policy: WritePolicy | None = None,
) -> None:
    """Wires the CarbonAwareJob handlers (and the indexes they read) into `registry`."""
    write_policy = policy or WritePolicy()
    generations: dict[tuple[str, str], int] = {}

    @kopf.index("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGER}, registry=registry, id="owned_jobs")
    def owned_jobs(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): slim_job(body)}

    @kopf.index("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGER}, registry=registry, id="running_pods")
    def running_pods(
        namespace: str | None, labels: kopf.Labels, status: kopf.Status, meta: kopf.Meta, **_: Any
    ) -> dict[Any, Any] | None:
        job, ip = labels.get("job-name"), status.get("podIP")
        if job and ip and status.get("phase") == "Running" and not meta.get("deletionTimestamp"):
            return {(namespace, job): ip}
        return None

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, id="reconcile", cancellation_timeout=10.0)
    async def run_job(body: kopf.Body, stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
        # kopf passes each index as a keyword argument named by its id.
        loop = JobLoop(
            reconciler,
            wakeups,
            body,
            (kwargs["owned_jobs"], kwargs["running_pods"]),
            interval_s=tick_seconds,
            policy=write_policy,
        )
        await loop.run(stopped)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="spec_edits")
    def on_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        # Raw watch events cost no API writes; a new generation (a spec edit) wakes the job at once.
        key = (body.metadata.namespace or "", body.metadata.name or "")
        if type == "DELETED":
            generations.pop(key, None)
            return
        generation = int(body.metadata.get("generation") or 0)
        if generations.get(key) not in (None, generation):
            wakeups.wake(key)
        generations[key] = generation

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="forget", optional=True)
    async def on_delete(name: str, namespace: str | None, **_: Any) -> None:
        # The Job and Service go with their owner (garbage collection); the checkpoint PVC is not
        # owned, so it stays for a later run.
        reconciler.ctx.metrics.jobs.forget(namespace or "", name)
        wakeups.forget((namespace or "", name))
