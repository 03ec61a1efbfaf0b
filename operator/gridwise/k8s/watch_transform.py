"""Slims every object kopf watches before kopf queues or keeps it: no managedFields, shared strings,
and owned Jobs and Pods cut to the fields their index handlers read.

Why: kopf keeps each CarbonAwareJob's last body for the job's daemon, and at 400 jobs the
managed fields (every writer's list of the fields it set) were 17 KB of a body's 30 KB in memory.
Neither gridwise nor kopf reads them, and a merge patch never sends them. It is the transform
controller-runtime offers as `cache.TransformStripManagedFields` and the Kubernetes controllers
apply to their informers. kopf has no hook for it, so the one function its queueing calls to
stream watch events is wrapped (kopf is pinned; tests/unit/test_watch_transform.py checks the
call site is still there).

What is left of a CarbonAwareJob's body is mostly its status, and every body spells the same ~150
keys and many of the same values ("Running", "True", condition reasons) as strings of its own:
`json.loads` shares keys only within one document. Interning them makes 1000 bodies share one copy
of each (BENCHMARKS.md, issue 12: kopf's bodies held 19.6 KiB per job).

Jobs and Pods are kept by nobody, but kopf queues each watch event in a per-object backlog until a
worker handles it, and a zone wake brings thousands at once (each pod twice, as it terminates and
as it goes) faster than two busy cores handle them. A Pod's spec and a Job's pod template are most
of such an event and no handler reads them, so they go before the event is queued. What stays is a
superset of what `handlers.slim_job` and `reconciler.pod_info` read, and all of the metadata (kopf
filters on labels and tracks each object by its uid and resourceVersion).

And once kopf has handled a Job's or Pod's event, what is left of it is emptied. kopf wraps each
event's object in a `Body` whose views point back at it (a reference cycle), so the object outlived
its event until a full collection of the garbage collector, which a busy operator runs seldom: a
zone wake's thousands of Job and Pod events stayed in memory together (BENCHMARKS.md, issue 12,
eleventh round). Only the small cycle itself is now left to the collector.

And an event is not handled at all when a newer one of the same object already waits in kopf's
backlog for it (a deletion always is): every handler here reads the object's latest state (index
entries, the daemon's body), so the newer event does all the older one would, and kopf itself
handled only the latest of a backlog until it dropped its batching. A zone wake brings each job's
Job, pods and CarbonAwareJob several events within a second or two, faster than two busy cores
handle them (BENCHMARKS.md, issue 12, twelfth round).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from kopf._cogs.clients import watching
from kopf._core.reactor import processing

_MARK = "_gridwise_wraps"  # on a wrapper install() made: the kopf function it wraps
# The kinds kopf keeps bodies of (daemons); Jobs and Pods only pass through slim index handlers.
KEPT_KINDS = frozenset({"CarbonAwareJob"})
# What an owned Pod's event keeps of its status (`reconciler.pod_info` reads these and the
# containers' states).
POD_STATUS_FIELDS = ("phase", "podIP")
# Longer strings (kopf's last-handled configuration, long messages) are rarely equal across objects.
SHARED_MAX_CHARS = 128


def _object_of(event: Any) -> dict[str, Any] | None:
    """The event's object, if it has one (bookmarks and errors from the API server do not)."""
    obj = event.get("object") if isinstance(event, dict) else None
    return obj if isinstance(obj, dict) else None


def strip_managed_fields(event: Any) -> Any:
    """The event with its object's managedFields removed in place (bookmarks pass through)."""
    obj = _object_of(event)
    meta = obj.get("metadata") if obj is not None else None
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return event


def trim_pod(obj: dict[str, Any]) -> None:
    """In place: no spec; of the status, the phase, the IP and each container's state."""
    obj.pop("spec", None)
    status = obj.get("status")
    if not isinstance(status, dict):
        return
    kept: dict[str, Any] = {k: status[k] for k in POD_STATUS_FIELDS if k in status}
    containers = status.get("containerStatuses")
    if isinstance(containers, list):
        kept["containerStatuses"] = [
            {"state": c.get("state")} for c in containers if isinstance(c, dict) and "state" in c
        ]
    obj["status"] = kept


def trim_job(obj: dict[str, Any]) -> None:
    """In place: the Job without its pod template (the only large part of a Job's spec)."""
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.pop("template", None)


# Cut to what their index handlers read before kopf queues them (not kept: only the index entry is).
# Keyed by apiVersion too: a CRD's kind that happens to be called Pod or Job is left whole.
TRIMMED: dict[tuple[Any, Any], Callable[[dict[str, Any]], None]] = {
    ("v1", "Pod"): trim_pod,
    ("batch/v1", "Job"): trim_job,
}


def share_strings(value: Any) -> Any:
    """`value` rebuilt with its keys and short strings interned; equal to it in every other way."""
    if isinstance(value, dict):
        return {(sys.intern(k) if type(k) is str else k): share_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [share_strings(v) for v in value]
    if type(value) is str and len(value) <= SHARED_MAX_CHARS:
        return sys.intern(value)
    return value


def slim_event(event: Any) -> Any:
    """The event without managedFields; for the kinds kopf keeps, with its strings shared; Jobs and
    Pods cut to what their index handlers read."""
    event = strip_managed_fields(event)
    obj = _object_of(event)
    if obj is None:
        return event
    if obj.get("kind") in KEPT_KINDS:
        event["object"] = share_strings(obj)
    elif (trim := TRIMMED.get((obj.get("apiVersion"), obj.get("kind")))) is not None:
        trim(obj)
    return event


def stripping(stream: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """`stream`, with every event it yields slimmed."""

    async def stripped(**kwargs: Any) -> AsyncIterator[Any]:
        events = stream(**kwargs)
        try:
            async for event in events:
                yield slim_event(event)
        finally:  # closed with the wrapper, not left to the garbage collector
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    setattr(stripped, _MARK, stream)
    return stripped


def release_handled(event: Any) -> None:
    """Empties a handled event's Job or Pod in place: only its index entry is kept of it."""
    obj = _object_of(event)
    if obj is not None and (obj.get("apiVersion"), obj.get("kind")) in TRIMMED:
        obj.clear()


def superseded(raw_event: Any, stream_pressure: asyncio.Event | None) -> bool:
    """True when a newer event of the same object is already queued and this one is not a deletion.

    kopf's watcher sets an object's `stream_pressure` as it queues an event in the object's backlog,
    and the object's worker clears it when it takes the last one: set while a worker holds an event
    means a newer one waits behind it. (Or, when a watcher stops, as the operator or its term
    does, its end-of-stream marker: then an event still queued behind a busy worker goes unhandled,
    with nothing left to act on it; the next term lists every object afresh.)
    """
    return stream_pressure is not None and stream_pressure.is_set() and _type_of(raw_event) != "DELETED"


def _type_of(event: Any) -> Any:
    return event.get("type") if isinstance(event, dict) else None


def _count_nothing(kind: str) -> None:
    pass


def releasing(
    processor: Callable[..., Coroutine[Any, Any, Any]],
    on_superseded: Callable[[str], None] = _count_nothing,
    on_event: Callable[[str], None] = _count_nothing,
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """`processor` (kopf's handling of one watch event) unless the event is `superseded` (then
    `on_superseded` is told the object's kind), and the event's object released after either.

    `on_event` is told the kind of every event, handled or not."""

    async def process(
        *args: Any, raw_event: Any, stream_pressure: asyncio.Event | None = None, **kwargs: Any
    ) -> Any:
        try:
            kind = str((_object_of(raw_event) or {}).get("kind"))
            on_event(kind)
            if superseded(raw_event, stream_pressure):
                on_superseded(kind)
                return None  # nothing patched: kopf expects no new resource version
            return await processor(*args, raw_event=raw_event, stream_pressure=stream_pressure, **kwargs)
        finally:
            release_handled(raw_event)

    setattr(process, _MARK, processor)
    return process


def install(
    on_superseded: Callable[[str], None] = _count_nothing, on_event: Callable[[str], None] = _count_nothing
) -> None:
    """Wraps kopf's watch stream once and its event processing (again, for these counters); call
    before kopf starts watching."""
    if getattr(watching.infinite_watch, _MARK, None) is None:
        watching.infinite_watch = stripping(watching.infinite_watch)
    kopfs = getattr(processing.process_resource_event, _MARK, processing.process_resource_event)
    processing.process_resource_event = releasing(kopfs, on_superseded, on_event)
