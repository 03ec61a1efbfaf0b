"""kopf handlers: thin. The timer hands the object to the Reconciler and posts the Events it returns.

There is no create handler: kopf starts the timer as soon as it sees an object, so the first
reconcile runs once (a create handler and the timer used to run it twice, concurrently).
The Reconciler writes the status itself, so a rejected status write cannot stop kopf's timer for
good (kopf ends a timer whose own patch fails). Transient errors back off inside the Reconciler
(skipped ticks) so that each failure does not become a kopf Event; only a bug in this module itself
leaves the handler, as kopf.TemporaryError, which kopf retries after the given delay.
Handlers are registered on a registry per operator instance (not kopf's global one), so tests
and the demo can build operators with different clocks and tick intervals.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from gridwise.api import GROUP, LABEL_MANAGED_BY, MANAGER, PLURAL, VERSION
from gridwise.k8s.builders import job_name
from gridwise.k8s.reconciler import IndexView, PodInfo, Reconciler, TickResult, pod_info

log = logging.getLogger(__name__)


def _post(body: kopf.Body, result: TickResult) -> None:
    for type_, reason, message in result.events:
        kopf.event(body, type=type_, reason=reason, message=message)


def _index_view(body: kopf.Body, jobs: kopf.Index[Any, Any], pods: kopf.Index[Any, Any]) -> IndexView:
    """The owned Job and its pods from kopf's watch-fed indexes: no API call per tick."""
    key = (body.metadata.namespace, job_name(body.metadata.name or ""))
    found = list(jobs.get(key, []))
    infos = [p for p in pods.get(key, []) if isinstance(p, PodInfo)]
    return IndexView(job=found[0] if found else None, pods=sorted(infos, key=lambda p: p.name))


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler, *, tick_seconds: float) -> None:
    """Wires the CarbonAwareJob handlers (and the indexes they read) into `registry`."""

    @kopf.index("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGER}, registry=registry, id="owned_jobs")
    def owned_jobs(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): dict(body)}

    @kopf.index("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGER}, registry=registry, id="job_pods")
    def job_pods(
        namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[Any, Any] | None:
        job = labels.get("job-name")
        info = pod_info(dict(body))
        if job and info is not None:
            return {(namespace, job): info}
        return None

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="reconcile", interval=tick_seconds, sharp=False)
    async def on_tick(body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
        # kopf passes each index as a keyword argument named by its id.
        try:
            index = _index_view(body, kwargs["owned_jobs"], kwargs["job_pods"])
            result = await reconciler.tick(body, index)
        except Exception as exc:  # the reconciler catches its own; this is the last line of defence
            reconciler.ctx.metrics.reconcile_errors.inc()
            logger.exception("reconcile of %s/%s failed", body.metadata.namespace, body.metadata.name)
            raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=max(tick_seconds, 5.0)) from exc
        _post(body, result)
        if result.retry_after is not None:
            # Backed off inside the reconciler (ticks are skipped until then), not through
            # kopf.TemporaryError: kopf would post an Event for every failed attempt.
            reconciler.ctx.metrics.reconcile_errors.inc()
            logger.info("transient error; next reconcile in %.0f s or later", result.retry_after)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="forget", optional=True)
    async def on_delete(name: str, namespace: str | None, uid: str | None, **_: Any) -> None:
        # The Job and Service go with their owner (garbage collection); the checkpoint PVC is not
        # owned, so it stays for a later run.
        reconciler.ctx.metrics.jobs.forget(namespace or "", name)
        reconciler.forget(uid or "")
