"""kopf keeps watched objects without their managedFields, CarbonAwareJobs with shared strings;
everything else passes unchanged."""

from __future__ import annotations

import asyncio
import copy
import functools
import gc
import inspect
import json
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.clients import watching
from kopf._cogs.structs import ephemera, references
from kopf._core.engines import indexing
from kopf._core.reactor import inventory, processing, queueing, running

from gridwise.api import LABEL_JOB, LABEL_MANAGED_BY, MANAGER, parse_job_spec
from gridwise.k8s import watch_transform
from gridwise.k8s.builders import build_job
from gridwise.k8s.handlers import slim_job
from gridwise.k8s.reconciler import pod_info


def event(name: str) -> dict[str, Any]:
    return {
        "type": "MODIFIED",
        "object": {
            "metadata": {
                "name": name,
                "annotations": {"gridwise.dev/last-handled-configuration": "{}"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            },
            "spec": {"work": {"gpuHours": 4}},
            "status": {"phase": "Running"},
        },
    }


def test_only_the_managed_fields_go() -> None:
    raw = event("a")
    expected = copy.deepcopy(raw)
    del expected["object"]["metadata"]["managedFields"]
    assert watch_transform.strip_managed_fields(raw) == expected
    # Bookmarks, events without metadata and errors from the API server pass through as they are.
    for other in (watching.Bookmark.LISTED, {"type": "BOOKMARK", "object": {}}, {"type": "ERROR"}, "x"):
        assert watch_transform.strip_managed_fields(other) == other


def _decoded(kind: str, name: str) -> dict[str, Any]:
    """As the watch decodes it: each event is its own JSON document, so no string is shared."""
    raw = event(name)
    raw["object"]["kind"] = kind
    raw["object"]["status"]["conditions"] = [{"type": "Ready", "status": "True", "message": "m" * 200}]
    decoded: dict[str, Any] = json.loads(json.dumps(raw))
    return decoded


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_carbonawarejobs_share_keys_and_short_values_and_stay_equal() -> None:
    a, b = _decoded("CarbonAwareJob", "a"), _decoded("CarbonAwareJob", "b")
    expected = copy.deepcopy(a)
    del expected["object"]["metadata"]["managedFields"]
    a, b = watch_transform.slim_event(a), watch_transform.slim_event(b)
    assert a == expected
    sa, sb = _strings(a["object"]), _strings(b["object"])
    assert [x == y for x, y in zip(sa, sb, strict=True)].count(False) == 1  # only the names differ
    for x, y in zip(sa, sb, strict=True):
        if x == y:  # one object for both bodies, except the long message (not worth a lookup)
            assert (x is y) == (len(x) <= watch_transform.SHARED_MAX_CHARS), x[:20]


def _running_pod(name: str) -> dict[str, Any]:
    """A trainer pod as a kubelet reports it (the kind of event a zone wake brings thousands of)."""
    started = "2026-12-06T10:00:05Z"
    container = {
        "name": "trainer",
        "image": "localhost/gridwise-trainer:5e6380c6810f28a3",
        "env": [{"name": f"GRIDWISE_{i}", "value": "x" * 40} for i in range(12)],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
        "volumeMounts": [{"name": "checkpoints", "mountPath": "/checkpoints"}],
    }
    return {
        "type": "MODIFIED",
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": "ml",
                "uid": f"uid-{name}",
                "resourceVersion": "4711",
                "labels": {LABEL_JOB: "j", "job-name": "j", LABEL_MANAGED_BY: MANAGER},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}],
                "deletionTimestamp": "2026-12-06T12:00:00Z",
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
            },
            "spec": {"containers": [container], "nodeName": "gpu-1", "tolerations": [{"operator": "Exists"}]},
            "status": {
                "phase": "Running",
                "podIP": "127.64.0.7",
                "podIPs": [{"ip": "127.64.0.7"}],
                "hostIP": "127.63.0.1",
                "startTime": "2026-12-06T10:00:00Z",
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": started}
                    for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                ],
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "image": container["image"],
                        "imageID": "sha256:" + "0" * 64,
                        "containerID": "containerd://" + "1" * 64,
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                        "lastState": {},
                    },
                    "not a mapping",  # what a hostile status writer may put there
                ],
            },
        },
    }


def test_an_owned_pod_keeps_what_its_index_entry_reads_and_little_else() -> None:
    raw = _running_pod("p")
    full = copy.deepcopy(raw["object"])
    slimmed = watch_transform.slim_event(raw)["object"]
    assert pod_info(slimmed) == pod_info(full) and pod_info(full) is not None
    assert pod_info(full).running_since is not None  # type: ignore[union-attr]
    del full["metadata"]["managedFields"]
    assert slimmed["metadata"] == full["metadata"]  # kopf's labels filter, uid and version
    assert "spec" not in slimmed
    assert len(json.dumps(slimmed)) < len(json.dumps(full)) / 3
    # A pod that has not started yet, or a finished one, indexes the same way too.
    for status in ({"phase": "Pending"}, {"phase": "Succeeded"}, None):
        pod = _running_pod("other")
        pod["object"]["status"] = status
        full = copy.deepcopy(pod["object"])
        assert pod_info(watch_transform.slim_event(pod)["object"]) == pod_info(full)


def test_an_owned_job_loses_its_pod_template_and_indexes_the_same() -> None:
    raw = {
        "replicas": {"min": 1, "max": 4},
        "work": {"gpuHours": 1, "totalSteps": 10},
        "completeWithin": "1h",
        "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
    }
    spec = parse_job_spec("j", "ml", raw, datetime(2030, 1, 1, tzinfo=UTC))
    job = build_job({"metadata": {"name": "j", "uid": "u", "labels": {}}}, spec, replicas=3, suspend=False)
    job["status"] = {"active": 3, "ready": 3, "conditions": [{"type": "Suspended", "status": "False"}]}
    full = copy.deepcopy(job)
    slimmed = watch_transform.slim_event({"type": "MODIFIED", "object": job})["object"]
    assert slim_job(slimmed) == slim_job(full)
    assert "template" not in slimmed["spec"] and slimmed["spec"]["parallelism"] == 3
    assert slimmed["metadata"] == full["metadata"]


def test_only_core_pods_and_batch_jobs_are_cut() -> None:
    # A custom resource that happens to be called Pod or Job is somebody else's: left whole.
    for kind, api in (("Pod", "example.com/v1"), ("Job", "example.com/v1"), ("Pod", "batch/v1")):
        raw = _running_pod("p")
        raw["object"].update(kind=kind, apiVersion=api)
        expected = copy.deepcopy(raw)
        del expected["object"]["metadata"]["managedFields"]
        assert watch_transform.slim_event(raw) == expected


def test_other_kinds_keep_their_own_strings() -> None:
    a, b = _decoded("Pod", "a"), _decoded("Pod", "b")
    a, b = watch_transform.slim_event(a), watch_transform.slim_event(b)
    assert a["object"]["status"]["phase"] is not b["object"]["status"]["phase"]
    assert "managedFields" not in a["object"]["metadata"]


def test_the_wrapped_stream_yields_every_event_stripped_and_closes_the_stream_it_wraps() -> None:
    closed: list[bool] = []

    async def stream(**kwargs: Any) -> AsyncIterator[Any]:
        assert kwargs == {"resource": "r", "namespace": None}
        try:
            yield watching.Bookmark.LISTED
            yield event("a")
            yield event("b")
        finally:
            closed.append(True)

    async def first_two() -> list[Any]:
        got = []
        async for e in watch_transform.stripping(stream)(resource="r", namespace=None):
            got.append(e)
            if len(got) == 2:
                break
        return got

    got = asyncio.run(first_two())
    assert got[0] is watching.Bookmark.LISTED
    assert got[1]["object"]["metadata"] == {
        "name": "a",
        "annotations": {"gridwise.dev/last-handled-configuration": "{}"},
    }
    assert closed == [True]


def test_install_wraps_kopfs_watch_and_processing_once_where_kopf_calls_them() -> None:
    original, original_processor = watching.infinite_watch, processing.process_resource_event
    try:
        watch_transform.install()
        wrapped, wrapped_processor = watching.infinite_watch, processing.process_resource_event
        watch_transform.install()
        assert watching.infinite_watch is wrapped and wrapped is not original
        # A new install wraps kopf's own processing again (for its counter), never a wrapper.
        assert processing.process_resource_event is not wrapped_processor
        for processor in (wrapped_processor, processing.process_resource_event):
            # install() sets the mark with setattr: the function's type does not declare it.
            assert cast(Any, processor)._gridwise_wraps is original_processor
        # kopf looks both up on their modules when it starts: the wrappers are what it uses. (The
        # ignore: kopf's private modules do not re-export the modules they import.)
        assert queueing.watching is watching and running.processing is processing  # type: ignore[attr-defined]
        assert "watching.infinite_watch(" in inspect.getsource(queueing.watcher)
        assert "processing.process_resource_event," in inspect.getsource(running.spawn_tasks)
    finally:
        watching.infinite_watch = original
        processing.process_resource_event = original_processor


class Traced(dict[str, Any]):
    """A dict that can be weakly referenced: alive only while something holds it."""


def pod_event(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "MODIFIED",
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "train-0",
                "namespace": "ns",
                "uid": "pod-uid",
                "resourceVersion": "7",
                "labels": {"job-name": "train", LABEL_MANAGED_BY: MANAGER},
            },
            "status": status,
        },
    }


def handle_with_kopf(raw_event: dict[str, Any], *, released: bool) -> tuple[Any, weakref.ref[Any]]:
    """Runs kopf's own processing of one watch event with an index handler on Pods, the garbage
    collector off; returns the index and a weak reference to the event's status."""
    registry = kopf.OperatorRegistry()

    @kopf.index("", "v1", "pods", registry=registry, id="phases")
    async def phases(name: str, status: kopf.Status, **_: Any) -> dict[str, Any]:
        return {name: status.get("phase")}

    indexers = indexing.OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())
    processor = processing.process_resource_event
    if released:
        processor = watch_transform.releasing(processor)
    status = weakref.ref(raw_event["object"]["status"])

    async def run() -> None:
        await processor(
            lifecycle=kopf.lifecycles.all_at_once,
            indexers=indexers,
            registry=registry,
            settings=kopf.OperatorSettings(),
            memories=inventory.ResourceMemories(),
            memobase=ephemera.AnyMemo(ephemera.Memo()),  # as kopf's own spawn_tasks passes it
            resource=references.Resource("", "v1", "pods", kind="Pod", namespaced=True),
            raw_event=cast(kopf.RawEvent, raw_event),  # a Pod's watch event, built as a plain dict
            event_queue=asyncio.Queue(),
        )

    asyncio.run(run())
    return indexers[kopf.HandlerId("phases")].index, status


def test_a_handled_pods_event_is_freed_at_once_not_by_the_collector() -> None:
    gc.collect()
    gc.disable()
    try:
        index, status = handle_with_kopf(pod_event(Traced(phase="Running")), released=True)
        assert {k: list(v) for k, v in index.items()} == {"train-0": ["Running"]}, "handled whole"
        assert status() is None, "what is left of a handled event is freed without the collector"
        # Without the release, kopf's Body (in a cycle with its views) kept it until a full pass.
        _, kept = handle_with_kopf(pod_event(Traced(phase="Running")), released=False)
        assert kept() is not None
        gc.collect()
        assert kept() is None
    finally:
        gc.enable()


def test_only_handled_jobs_and_pods_are_emptied_even_when_handling_fails() -> None:
    caj = event("a")
    caj["object"].update(apiVersion="gridwise.dev/v1alpha1", kind="CarbonAwareJob")
    job = {"type": "MODIFIED", "object": {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}}
    seen: list[int] = []

    async def processor(*, raw_event: dict[str, Any], **_: Any) -> None:
        seen.append(len(raw_event["object"]))  # whole while kopf handles it
        if raw_event is job:
            raise RuntimeError("a framework error")

    async def run() -> None:
        wrapped = watch_transform.releasing(processor)
        await wrapped(raw_event=caj, resource="r")
        await wrapped(raw_event={"type": "MODIFIED", "object": {}})  # nothing to release
        with pytest.raises(RuntimeError):
            await wrapped(raw_event=job)

    asyncio.run(run())
    assert seen == [5, 0, 3]
    assert caj["object"]["spec"] == {"work": {"gpuHours": 4}}, "a kept kind stays whole"
    assert job["object"] == {}


def pod(phase: str, uid: str = "pod-uid", kind: str = "MODIFIED", **meta: Any) -> dict[str, Any]:
    e = pod_event({"phase": phase})
    e["type"] = kind
    e["object"]["metadata"].update(uid=uid, **meta)
    return e


def watch_with_kopf(
    events: list[dict[str, Any]], *, one_at_a_time: bool = False
) -> tuple[dict[str, Any], list[str], list[str]]:
    """kopf's own watcher, per-object workers and processing (with an index handler on Pods) over
    `events`, delivered as one burst the way a watch stream brings a wake, or each only once the
    handler is busy with the one before; returns the index, the phases the handler saw and the
    kinds of the events left for a newer one."""
    registry = kopf.OperatorRegistry()
    handled: list[str] = []
    busy, next_arrived = asyncio.Event(), asyncio.Event()

    @kopf.index("", "v1", "pods", registry=registry, id="phases")
    async def phases(name: str, status: kopf.Status, **_: Any) -> dict[str, Any]:
        handled.append(str(status.get("phase")))
        if one_at_a_time and len(handled) < len(events):
            busy.set()
            await next_arrived.wait()  # the next event is queued while this one is handled
            next_arrived.clear()
        return {name: status.get("phase")}

    indexers = indexing.OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())
    resource = references.Resource("", "v1", "pods", kind="Pod", namespaced=True)
    settings = kopf.OperatorSettings()
    settings.queueing.idle_timeout = 0.01
    left: list[str] = []

    async def burst(**_: Any) -> AsyncIterator[Any]:
        for i, e in enumerate(events):
            if one_at_a_time and i:
                await busy.wait()
                busy.clear()
            yield e
            if one_at_a_time and i:
                next_arrived.set()  # the watcher has queued it by now
        # A watch goes on after a burst; its end queues kopf's end-of-stream marker behind the
        # last event, which would then look superseded (only ever as the operator stops).
        await asyncio.sleep(0.5)

    async def run() -> None:
        original = watching.infinite_watch
        watching.infinite_watch = burst
        try:
            await queueing.watcher(
                namespace=None,
                settings=settings,
                resource=resource,
                processor=functools.partial(
                    watch_transform.releasing(processing.process_resource_event, left.append),
                    lifecycle=kopf.lifecycles.all_at_once,
                    indexers=indexers,
                    registry=registry,
                    settings=settings,
                    memories=inventory.ResourceMemories(),
                    memobase=ephemera.Memo(),
                    resource=resource,
                    event_queue=asyncio.Queue(),
                ),
            )
        finally:
            watching.infinite_watch = original

    asyncio.run(run())
    index = {k: list(v) for k, v in indexers[kopf.HandlerId("phases")].index.items()}
    return index, handled, left


def test_a_burst_of_one_objects_events_is_handled_once_as_its_latest_state() -> None:
    index, handled, left = watch_with_kopf(
        [pod("Pending"), pod("Running"), pod("Running", deletionTimestamp="t")]
    )
    assert handled == ["Running"] and index == {"train-0": ["Running"]}
    assert left == ["Pod", "Pod"]


def test_a_deletion_is_always_handled_and_other_objects_are_not_superseded_by_each_other() -> None:
    burst = [pod("Running", "a"), pod("Running", "b", name="train-1"), pod("Running", "a", "DELETED")]
    index, handled, left = watch_with_kopf(burst)
    assert index == {"train-1": ["Running"]}, "a's deletion removed its entry; b is kept"
    # b's event handled; a's MODIFIED left for its DELETED, on which kopf drops a's entry unasked.
    assert handled == ["Running"] and left == ["Pod"]


def test_an_event_that_arrives_while_the_one_before_is_handled_leaves_that_one_handled() -> None:
    index, handled, left = watch_with_kopf(
        [pod("Pending"), pod("Running"), pod("Failed")], one_at_a_time=True
    )
    assert handled == ["Pending", "Running", "Failed"] and left == []
    assert index == {"train-0": ["Failed"]}


def test_every_event_is_counted_by_kind_handled_or_superseded() -> None:
    received: list[str] = []
    superseded: list[str] = []

    async def processor(**_: Any) -> None:
        pass

    async def run() -> None:
        wrapped = watch_transform.releasing(processor, superseded.append, received.append)
        pressed = asyncio.Event()
        pressed.set()  # a newer event of the same object waits
        await wrapped(raw_event=pod("Pending"), stream_pressure=pressed)
        await wrapped(raw_event=pod("Running"))
        await wrapped(raw_event={"type": "ERROR", "object": "gone"})  # no object: kind unknown

    asyncio.run(run())
    assert received == ["Pod", "Pod", "None"] and superseded == ["Pod"]


def test_an_event_is_handled_with_nothing_newer_queued_without_pressure_or_as_a_deletion() -> None:
    handled: list[str] = []

    async def processor(*, raw_event: dict[str, Any], **_: Any) -> None:
        handled.append(raw_event["object"]["status"]["phase"])

    async def run() -> None:
        wrapped = watch_transform.releasing(processor)
        quiet = asyncio.Event()  # as kopf's worker leaves it when the backlog is empty
        await wrapped(raw_event=pod("Pending"), stream_pressure=quiet)
        await wrapped(raw_event=pod("Running"))  # kopf's tests and observers pass no pressure
        quiet.set()  # something newer is queued: a deletion is still handled
        await wrapped(raw_event=pod("Failed", kind="DELETED"), stream_pressure=quiet)

    asyncio.run(run())
    assert handled == ["Pending", "Running", "Failed"]
