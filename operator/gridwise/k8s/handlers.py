"""kopf handlers: thin. One loop per CarbonAwareJob hands the object to the Reconciler.

Each job runs in its own kopf daemon, so no two reconciles of one job overlap and creation and
the first reconcile are one. The loop sleeps until something can change its decision: its
zone's carbon signal (one watcher for all zones, `wakeups.py`), an edit of its spec, or the time
its plan said it changes. The interval (`--tick-seconds`) is only a safety net. The Reconciler
writes the status itself, only when a reader would see a difference (`status_writes.py`), so a
rejected write cannot stop anything and an unchanged job costs the API server nothing.
Handlers are registered on a registry per operator instance (not kopf's global one), so tests
and the demo can build operators with different clocks and intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from gridwise.api import GROUP, LABEL_JOB, LABEL_MANAGED_BY, MANAGER, PLURAL, VERSION, parse_time
from gridwise.k8s.builders import job_name
from gridwise.k8s.reconciler import FINISHED_CONDITIONS, IndexView, PodInfo, Reconciler, TickResult, pod_info
from gridwise.k8s.wakeups import Wakeups, wall_seconds_until

log = logging.getLogger(__name__)

MIN_DELAY_S = 0.05
# The Jobs and pods gridwise makes (builders.common_labels), the only ones it indexes.
JOBS = ("batch", "v1", "jobs")
PODS = ("", "v1", "pods")
OWNED_LABELS = {LABEL_MANAGED_BY: MANAGER}
JOB_SPEC_FIELDS = ("suspend", "parallelism", "completions", "completionMode")
JOB_STATUS_FIELDS = ("active", "ready", "succeeded", "failed", "terminating", "completionTime")


def slim_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a Job a decision reads: the index holds these, not templates or managedFields."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(GROUP)},
            "ownerReferences": [
                {k: r.get(k) for k in ("apiVersion", "kind", "name", "uid", "controller")}
                for r in meta.get("ownerReferences") or []
            ],
            **({"deletionTimestamp": meta["deletionTimestamp"]} if meta.get("deletionTimestamp") else {}),
        },
        "spec": {k: spec[k] for k in JOB_SPEC_FIELDS if k in spec},
        "status": {
            **{k: status[k] for k in JOB_STATUS_FIELDS if k in status},
            "conditions": [_slim_condition(c) for c in status.get("conditions") or []],
        },
    }


def _slim_condition(c: Mapping[str, Any]) -> dict[str, Any]:
    slim = {"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason")}
    if c.get("type") in FINISHED_CONDITIONS:  # when a failed Job stopped (a Complete one: completionTime)
        slim["lastTransitionTime"] = c.get("lastTransitionTime")
    return slim


def _post(body: kopf.Body, result: TickResult) -> None:
    for type_, reason, message in result.events:
        kopf.event(body, type=type_, reason=reason, message=message)


def _index_view(body: kopf.Body, jobs: kopf.Index[Any, Any], pods: kopf.Index[Any, Any]) -> IndexView:
    """The owned Job and its pods from kopf's watch-fed indexes: no API call per reconcile."""
    key = (body.metadata.namespace, job_name(body.metadata.name or ""))
    found = list(jobs.get(key, []))
    infos = [p for p in pods.get(key, []) if isinstance(p, PodInfo)]
    return IndexView(job=found[0] if found else None, pods=sorted(infos, key=lambda p: p.name))


def next_delay(reconciler: Reconciler, result: TickResult, interval_s: float) -> float:
    """Wall seconds until this job should be reconciled again if nothing wakes it first."""
    delay = interval_s
    if result.retry_after is not None:
        delay = min(delay, result.retry_after)
    clock = reconciler.ctx.clock
    planned = (result.status.get("nextChange") or {}).get("time")
    if planned:
        # A resume planned for 14:00 happens at 14:00, not at the next safety-net pass.
        with contextlib.suppress(ValueError):
            delay = min(delay, wall_seconds_until(clock, parse_time(str(planned))))
    # A deferred status write is due when its interval runs out (so a restart loses at most that).
    due = result.write_due
    if due is not None:
        delay = min(delay, wall_seconds_until(clock, due))
    return max(MIN_DELAY_S, delay)


async def run_job(
    reconciler: Reconciler,
    wakeups: Wakeups,
    body: kopf.Body,
    indexes: tuple[kopf.Index[Any, Any], kopf.Index[Any, Any]],
    stopped: kopf.DaemonStopped,
    *,
    interval_s: float,
) -> None:
    """Reconciles one CarbonAwareJob until kopf stops its daemon; never raises out."""
    key = (body.metadata.namespace or "", body.metadata.name or "")
    carbon = dict(body.spec.get("carbon") or {})
    wake = wakeups.register(key, carbon)
    failures = 0
    urgent = True  # the first tick creates or adopts the Job
    try:
        while not stopped:
            wake.clear()
            urgent = wakeups.claim_urgent(key) or urgent
            if not urgent:
                # Woken only by watch events: after the ticks that pause or resume pods.
                await wakeups.after_urgent_ticks(key)
                wake.clear()  # what arrived meanwhile is seen by this tick
                urgent = wakeups.claim_urgent(key)
            try:
                with wakeups.urgent_tick() if urgent else contextlib.nullcontext():
                    result = await reconciler.tick(body, _index_view(body, *indexes))
                failures = 0
                _post(body, result)
                if result.retry_after is not None:
                    reconciler.ctx.metrics.reconcile_errors.inc()
                delay = next_delay(reconciler, result, wakeups.safety_net_s(interval_s))
            except Exception:  # the reconciler catches its own; this is the last line of defence
                failures += 1
                reconciler.ctx.metrics.reconcile_errors.inc()
                log.exception("reconcile of %s/%s failed (attempt %d); retrying", *key, failures)
                delay = min(interval_s, float(2 ** min(failures, 8)))
            new_carbon = dict(body.spec.get("carbon") or {})
            if new_carbon != carbon:  # a provider or zone switch moves the job to its new zone
                carbon = new_carbon
                wake = wakeups.register(key, carbon)
            try:
                await asyncio.wait_for(wake.wait(), timeout=delay)
                urgent = False
            except TimeoutError:  # a planned change (or the safety net) is due: act on it
                urgent = True
    finally:
        wakeups.forget(key)
        reconciler.ctx.board.forget(*key)  # not reconciled here any more: /v1/signal reads the status


def watch_only_owned(settings: kopf.OperatorSettings) -> None:
    """Has the API server send only gridwise's own Jobs and pods down the watches.

    The indexes' `labels` filter alone is kopf's, on the client: every other Job and pod in the
    watched namespaces (a GPU cluster's other workloads, thousands of pods) would be listed,
    streamed, decoded and queued by the operator only to be dropped (BENCHMARKS.md, issue 12,
    fifteenth round). kopf passes these selectors to its lists and watches (`labelSelector`).
    """
    selector = ",".join(f"{key}={value}" for key, value in OWNED_LABELS.items())
    for resource in (JOBS, PODS):
        settings.watching.label_selectors[resource] = selector


def register(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, wakeups: Wakeups, *, tick_seconds: float
) -> None:
    """Wires the CarbonAwareJob handlers (and the indexes they read) into `registry`."""
    generations: dict[tuple[str, str], int] = {}
    # After kopf has stored the index entry an event produced, not before; and once for a burst
    # (a pause changes the Job, then each pod twice): one tick sees all of it.
    wake_soon = wakeups.wake_later

    @kopf.index(*JOBS, labels=OWNED_LABELS, registry=registry, id="owned_jobs")
    async def owned_jobs(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        # A change of the owned Job (created, suspended, finished, deleted) is news for its owner.
        wake_soon((namespace or "", name))
        slim = slim_job(body)
        reconciler.drains.seen((namespace or "", name), slim)  # its pods counted out: writes may go
        return {(namespace, name): slim}

    @kopf.index(*PODS, labels=OWNED_LABELS, registry=registry, id="job_pods")
    async def job_pods(
        namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[Any, Any] | None:
        job = labels.get("job-name")
        info = pod_info(dict(body))
        owner = labels.get(LABEL_JOB)
        if owner:  # pods starting, running or gone change the job's work and energy
            wake_soon((namespace or "", owner))
        if job and info is not None:
            return {(namespace, job): info}
        return None

    @kopf.index(GROUP, VERSION, PLURAL, registry=registry, id="spec_edits")
    async def spec_edits(namespace: str | None, name: str, meta: kopf.Meta, **_: Any) -> None:
        # Indexers see every watch event quietly and cost no API writes: a new generation (a spec
        # edit) wakes the job at once. Nothing is stored.
        key = (namespace or "", name)
        generation = int(meta.get("generation") or 0)
        if generations.get(key) not in (None, generation):
            wake_soon(key, urgent=True)
        generations[key] = generation
        return None

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, id="reconcile", cancellation_timeout=10.0)
    async def reconcile(body: kopf.Body, stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
        # kopf passes each index as a keyword argument named by its id.
        indexes = (kwargs["owned_jobs"], kwargs["job_pods"])
        await run_job(reconciler, wakeups, body, indexes, stopped, interval_s=tick_seconds)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="forget", optional=True)
    async def on_delete(name: str, namespace: str | None, uid: str | None, **_: Any) -> None:
        # The Job and Service go with their owner (garbage collection); the checkpoint PVC is not
        # owned, so it stays for a later run.
        reconciler.ctx.metrics.jobs.forget(namespace or "", name)
        reconciler.ctx.board.forget(namespace or "", name)
        reconciler.forget(uid or "")
        reconciler.drains.forget((namespace or "", job_name(name)))
        wakeups.forget((namespace or "", name))
        generations.pop((namespace or "", name), None)
