"""kopf handlers: thin. Each one hands the object to the Reconciler and writes back what it returns.

Handlers are registered on a registry per operator instance (not kopf's global one), so
tests and the demo can build operators with different clocks and tick intervals.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from gridwise.api import GROUP, PLURAL, VERSION
from gridwise.k8s.reconciler import Reconciler, TickResult, apply_result

log = logging.getLogger(__name__)


def _post(body: kopf.Body, result: TickResult) -> None:
    for type_, reason, message in result.events:
        kopf.event(body, type=type_, reason=reason, message=message)


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler, *, tick_seconds: float) -> None:
    """Wires the CarbonAwareJob handlers into `registry`."""

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="accept")
    async def on_create(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        result = await reconciler.tick(body)
        apply_result(result, patch.status)
        _post(body, result)

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="reconcile", interval=tick_seconds, sharp=False)
    async def on_tick(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        try:
            result = await reconciler.tick(body)
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
