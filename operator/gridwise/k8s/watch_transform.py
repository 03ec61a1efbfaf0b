"""Drops `metadata.managedFields` from every object kopf watches, before kopf queues or keeps it.

Why: kopf keeps each CarbonAwareJob's last body for the job's daemon, and at 400 jobs the
managed fields (every writer's list of the fields it set) were 17 KB of a body's 30 KB in memory.
Neither gridwise nor kopf reads them, and a merge patch never sends them. It is the transform
controller-runtime offers as `cache.TransformStripManagedFields` and the Kubernetes controllers
apply to their informers. kopf has no hook for it, so the one function its queueing calls to
stream watch events is wrapped (kopf is pinned; tests/unit/test_watch_transform.py checks the
call site is still there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from kopf._cogs.clients import watching

_MARK = "_gridwise_strips_managed_fields"


def strip_managed_fields(event: Any) -> Any:
    """The event with its object's managedFields removed in place (bookmarks pass through)."""
    if isinstance(event, dict):
        obj = event.get("object")
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
    return event


def stripping(stream: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """`stream`, with every event it yields stripped."""

    async def stripped(**kwargs: Any) -> AsyncIterator[Any]:
        events = stream(**kwargs)
        try:
            async for event in events:
                yield strip_managed_fields(event)
        finally:  # closed with the wrapper, not left to the garbage collector
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    setattr(stripped, _MARK, True)
    return stripped


def install() -> None:
    """Wraps kopf's watch stream once; call before kopf starts watching."""
    if not getattr(watching.infinite_watch, _MARK, False):
        watching.infinite_watch = stripping(watching.infinite_watch)
