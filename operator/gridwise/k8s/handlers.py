"""kopf handlers: thin. Each one hands the object to the Reconciler and writes back what it returns.

Handlers are registered on a registry per operator instance (not kopf's global one), so
tests and the demo can build operators with different clocks and tick intervals.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from gridwise.api import GROUP, LABEL_MANAGED_BY, MANAGER, PLURAL, VERSION
from gridwise.k8s.builders import job_name
from gridwise.k8s.reconciler import Observed, Reconciler, TickResult, apply_result

log = logging.getLogger(__name__)


def _post(body: kopf.Body, result: TickResult) -> None:
    for type_, reason, message in result.events:
        kopf.event(body, type=type_, reason=reason, message=message)


def _observed(body: kopf.Body, jobs: kopf.Index[Any, Any], pods: kopf.Index[Any, Any]) -> Observed:
    """The owned Job and its running pods' IPs from kopf's watch-fed indexes: no API call per tick."""
    key = (body.metadata.namespace, job_name(body.metadata.name or ""))
    found = list(jobs.get(key, []))
    return Observed(job=found[0] if found else None, pod_ips=sorted(pods.get(key, [])))


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler, *, tick_seconds: float) -> None:
    """Wires the CarbonAwareJob handlers (and the indexes they read) into `registry`."""

    @kopf.index("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGER}, registry=registry, id="owned_jobs")
    def owned_jobs(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): dict(body)}

    @kopf.index("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGER}, registry=registry, id="running_pods")
    def running_pods(
        namespace: str | None, labels: kopf.Labels, status: kopf.Status, meta: kopf.Meta, **_: Any
    ) -> dict[Any, Any] | None:
        job, ip = labels.get("job-name"), status.get("podIP")
        if job and ip and status.get("phase") == "Running" and not meta.get("deletionTimestamp"):
            return {(namespace, job): ip}
        return None

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="accept")
    async def on_create(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        result = await reconciler.tick(body)
        apply_result(result, patch.status)
        _post(body, result)

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="reconcile", interval=tick_seconds, sharp=False)
    async def on_tick(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        # kopf passes each index as a keyword argument named by its id.
        observed = _observed(body, kwargs["owned_jobs"], kwargs["running_pods"])
        try:
            result = await reconciler.tick(body, observed)
        except Exception:
            reconciler.ctx.metrics.reconcile_errors.inc()
            raise  # kopf logs it and the next tick retries
        apply_result(result, patch.status)
        _post(body, result)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="forget", optional=True)
    async def on_delete(name: str, namespace: str | None, **_: Any) -> None:
        # The Job and Service go with their owner (garbage collection); the checkpoint PVC is not
        # owned, so it stays for a later run.
        reconciler.ctx.metrics.jobs.forget(namespace or "", name)
