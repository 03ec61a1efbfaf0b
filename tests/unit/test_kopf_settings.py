"""kopf's change detection sees the same essence of a CarbonAwareJob with the lean diff base."""

from __future__ import annotations

import copy
import gc
from typing import Any, cast

import kopf
from kopf._cogs.structs import references

from gridwise.api import LABEL_MANAGED_BY, MANAGER
from gridwise.k8s.builders import common_labels
from gridwise.k8s.runtime import EVENT_POSTERS, EVENT_WORKERS, WORKER_IDLE_S, LeanDiffBase, build_settings


class NoCopy(dict[str, Any]):
    """A status that fails the test if anything deep-copies it."""

    def __deepcopy__(self, memo: Any) -> Any:
        raise AssertionError("the status was deep-copied")


def caj(status: dict[str, Any]) -> kopf.RawBody:
    raw: dict[str, Any] = {
        "apiVersion": "gridwise.dev/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {
            "name": "j",
            "namespace": "ns",
            "uid": "u",
            "generation": 3,
            "resourceVersion": "42",
            "labels": {"team": "a"},
            "annotations": {
                "note": "kept",
                "gridwise.dev/last-handled-configuration": '{"spec": {}}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "finalizers": ["gridwise.dev/finalizer"],
        },
        "spec": {"completeWithin": "24h", "replicas": {"min": 1, "max": 2}, "work": {"gpuHours": 4}},
        "status": status,
    }
    # A whole object as the API server sends it: kopf's RawBody declares only the fields it reads.
    return cast(kopf.RawBody, raw)


def test_the_lean_essence_is_kopfs_own() -> None:
    status = {"phase": "Running", "conditions": [{"type": "Suspended", "status": "False"}]}
    raw = caj(status)
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="gridwise.dev", key="last-handled-configuration")
    lean = LeanDiffBase(prefix="gridwise.dev", key="last-handled-configuration")
    assert lean.build(body=kopf.Body(copy.deepcopy(raw))) == kopfs.build(body=kopf.Body(raw))
    changed = caj(status)
    changed["spec"]["replicas"]["max"] = 4
    assert lean.build(body=kopf.Body(changed)) != lean.build(body=kopf.Body(raw)), "a spec edit is a diff"


def test_the_status_is_never_copied() -> None:
    lean = LeanDiffBase(prefix="gridwise.dev", key="last-handled-configuration")
    essence = lean.build(body=kopf.Body(caj(NoCopy(phase="Running"))))
    assert "status" not in essence and essence["spec"]["work"] == {"gpuHours": 4}


def test_events_are_posted_over_a_bounded_number_of_connections() -> None:
    # kopf's own default is a worker per object with no connection limit: a zone wake's thousand
    # Events would open as many TLS connections (BENCHMARKS.md, issue 12, ninth round).
    settings = kopf.OperatorSettings()
    assert settings.posting.worker_limit is None
    build_settings(settings)
    assert settings.posting.worker_limit == EVENT_POSTERS
    assert 1 <= EVENT_POSTERS <= settings.queueing.worker_limit


def test_object_workers_give_their_slot_back_soon() -> None:
    # kopf keeps an object's worker, and its slot, for 5 s after the object's last event: with 256
    # slots a zone wake's thousand Jobs and their pods drained at about 50 objects a second, every
    # other event waiting in memory (BENCHMARKS.md, issue 12, eleventh round).
    settings = kopf.OperatorSettings()
    assert settings.queueing.idle_timeout == 5.0
    build_settings(settings)
    assert settings.queueing.worker_limit == EVENT_WORKERS
    assert settings.queueing.idle_timeout == WORKER_IDLE_S
    assert EVENT_WORKERS / WORKER_IDLE_S >= 500, "objects a second the workers drain at the least"


def test_the_api_server_sends_only_gridwises_own_jobs_and_pods() -> None:
    # kopf's `labels=` on a handler filters on the client: without a server-side selector every
    # Job and pod in the watched namespaces comes down the watch (tests/cluster/test_watch_scope.py).
    settings = kopf.OperatorSettings()
    build_settings(settings)
    jobs = references.Resource("batch", "v1", "jobs", kind="Job")
    pods = references.Resource("", "v1", "pods", kind="Pod")
    cajs = references.Resource("gridwise.dev", "v1alpha1", "carbonawarejobs", kind="CarbonAwareJob")
    selector = f"{LABEL_MANAGED_BY}={MANAGER}"
    assert settings.watching.label_selectors.collect(jobs) == [selector]
    assert settings.watching.label_selectors.collect(pods) == [selector]
    assert settings.watching.label_selectors.collect(cajs) == [], "users' own resources stay whole"
    assert common_labels("j")[LABEL_MANAGED_BY] == MANAGER, "what gridwise's Jobs and pods carry"


def test_the_lean_essence_keeps_nothing_of_the_body_for_the_collector() -> None:
    # The Body built for the essence is in a reference cycle with its own views: it must not hold
    # the event's spec until the garbage collector's next full pass.
    lean = LeanDiffBase(prefix="gridwise.dev", key="last-handled-configuration")
    raw = caj({"phase": "Running"})
    gc.collect()
    gc.disable()
    try:
        lean.build(body=kopf.Body(raw))
        holders = [o for o in gc.get_referrers(raw["spec"]) if o is not raw]
        assert not holders, "a cycle still holds the spec"
    finally:
        gc.enable()
