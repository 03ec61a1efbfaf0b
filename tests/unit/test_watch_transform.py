"""kopf keeps watched objects without their managedFields, CarbonAwareJobs with shared strings;
everything else passes unchanged."""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

from kopf._cogs.clients import watching
from kopf._core.reactor import queueing

from gridwise.k8s import watch_transform


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


def test_install_wraps_kopfs_watch_once_where_kopfs_queueing_calls_it() -> None:
    original = watching.infinite_watch
    try:
        watch_transform.install()
        wrapped = watching.infinite_watch
        watch_transform.install()
        assert watching.infinite_watch is wrapped and wrapped is not original
        # kopf's queueing looks the function up on the module at each watch: the wrapper is used.
        assert queueing.watching is watching
        assert "watching.infinite_watch(" in inspect.getsource(queueing.watcher)
    finally:
        watching.infinite_watch = original  # type: ignore[assignment]
