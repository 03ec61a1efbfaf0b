"""The Kubernetes glue around the pure step: failures at the API boundary end in defined states.

The API server is replaced by an in-memory fake that can fail on demand (the real one is in
tests/cluster); the carbon signal is the real static provider.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from gridwise.clock import ManualClock
from gridwise.k8s import reconciler as reconciler_module
from gridwise.k8s.reconciler import IndexView, OperatorContext, PodInfo, Reconciler
from gridwise.metrics import OperatorMetrics
from gridwise.signal_hub import SignalHub

T0 = datetime(2030, 1, 6, tzinfo=UTC)


class FakeKube:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.creates = 0
        self.fail_status: ApiException | None = None
        self.fail_patch: ApiException | None = None
        self.secret_error: ApiException | None = None
        self.secret_reads = 0
        self.calls: list[tuple[str, str]] = []  # (verb, name) of every write, in order
        self.hold: dict[str, asyncio.Event] = {}  # a read of this Job waits until the event is set

    async def get_job(self, ns: str, name: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)  # let a concurrent tick interleave here
        if name in self.hold:
            await self.hold[name].wait()
        return self.jobs.get(name)

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        if manifest["kind"] != "Job":
            return manifest
        name = manifest["metadata"]["name"]
        if name in self.jobs:
            return None
        self.creates += 1
        job = {**manifest, "metadata": {**manifest["metadata"], "uid": f"job-{self.creates}"}}
        self.jobs[name] = job
        return job

    async def patch_job(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        if self.fail_patch is not None:
            raise self.fail_patch
        self.calls.append(("patch_job", name))
        self.jobs[name]["spec"].update(patch.get("spec", {}))
        return self.jobs[name]

    async def delete_job(self, ns: str, name: str) -> None:
        self.jobs.pop(name, None)

    async def job_pods(self, ns: str, job: str) -> list[dict[str, Any]]:
        return []

    async def read_secret(self, ns: str, name: str) -> dict[str, str]:
        self.secret_reads += 1
        await asyncio.sleep(0)  # the other jobs' ticks ask meanwhile
        if self.secret_error is not None:
            raise self.secret_error
        return {}

    async def patch_status(
        self, group: str, version: str, plural: str, ns: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        if self.fail_status is not None:
            raise self.fail_status
        self.calls.append(("status", name))
        self.statuses.append(status)
        return {}


@pytest.fixture
async def env() -> AsyncIterator[tuple[Reconciler, FakeKube, ManualClock]]:
    clock = ManualClock(T0)
    kube = FakeKube()
    hub = SignalHub(clock, {})
    async with httpx.AsyncClient() as scraper:
        ctx = OperatorContext(clock=clock, kube=kube, signals=hub, metrics=OperatorMetrics(), scraper=scraper)  # type: ignore[arg-type]
        yield Reconciler(ctx, backoff_s=0.0), kube, clock
    await hub.aclose()


def body(status: dict[str, Any] | None = None, name: str = "j", **spec_over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "completeWithin": "24h",
        "replicas": {"min": 1, "max": 1},
        "work": {"gpuHours": 4, "totalSteps": 100},
        "carbon": {"provider": "static", "zone": "XX", "staticGramsPerKWh": 900},
        "policy": {"type": "threshold", "thresholdGramsPerKWh": 200},
        "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
    }
    spec.update(spec_over)
    meta = {"name": name, "namespace": "ns", "uid": f"caj-{name}", "generation": 1}
    return {"metadata": meta, "spec": spec, "status": status or {}}


async def test_the_first_reconcile_never_runs_twice_at_once(env: Any) -> None:
    reconciler, kube, _ = env
    await asyncio.gather(reconciler.tick(body()), reconciler.tick(body()))
    assert kube.creates == 1
    created = [s for s in kube.statuses if s.get("acceptedTime")]
    assert len({s["acceptedTime"] for s in created}) == 1


async def test_a_rejected_status_write_is_kept_and_retried(env: Any) -> None:
    reconciler, kube, clock = env
    await reconciler.tick(body())  # creates the Job, suspended
    kube.jobs["j"]["spec"]["suspend"] = False  # running, as after a clean spell
    written = kube.statuses[-1]
    clock.advance(60)
    kube.fail_status = ApiException(status=422, reason="status.foo: Invalid value")
    result = await reconciler.tick(body(written))  # dirty grid: pauses, but cannot write the status
    assert not result.written and result.retry_after is not None
    assert kube.jobs["j"]["spec"]["suspend"] is True and result.status["pauseTimes"] == [
        "2030-01-06T00:01:00Z"
    ]
    warned = [e for e in result.events if e[:2] == ("Warning", "StatusWriteFailed")]
    assert len(warned) == 1 and "status.foo" in warned[0][2], "the owner is told where they look"
    reconciler._not_before.clear()  # skip the backoff: the next failure must not warn again
    clock.advance(30)
    repeat = await reconciler.tick(body(written))
    assert not repeat.written and not [e for e in repeat.events if e[1] == "StatusWriteFailed"]
    clock.advance(30)
    kube.fail_status = None
    again = await reconciler.tick(body(written))  # the watched body still has the old status
    assert again.written
    last = kube.statuses[-1]
    assert last["accounting"]["lastTime"] == "2030-01-06T00:02:00Z"
    assert last["pauseTimes"] == ["2030-01-06T00:01:00Z"], "the pause record survived the failed write"
    # Both minutes accounted once: the baseline (1 replica, run at once) did 2 minutes of work.
    assert last["accounting"]["baselineWorkGPUHours"] == pytest.approx(2 / 60)
    assert not [e for e in again.events if e[1] == "CarbonIntensity"], "the pause is not announced twice"


async def test_an_invalid_edit_is_observed_and_acted_on_by_the_last_accepted_spec(env: Any) -> None:
    reconciler, kube, clock = env
    await reconciler.tick(body())  # creates the Job, suspended (the grid is dirty)
    clock.advance(60)
    await reconciler.tick(body(kube.statuses[-1]))  # observes it: jobUID is recorded
    edited = body(kube.statuses[-1], deadline="2030-06-01T00:00:00Z", completeWithin=None)
    edited["metadata"]["generation"] = 2
    clock.advance(60)
    result = await reconciler.tick(edited)
    assert result.status["phase"] == "Paused", "the Job is still observed: not Failed, not Pending"
    applied = next(c for c in result.status["conditions"] if c["type"] == "SpecApplied")
    assert applied["reason"] == "InvalidSpec"
    assert [e[:2] for e in result.events if e[1] == "InvalidSpec"] == [("Warning", "InvalidSpec")]
    # 20.5 h in, the old 24 h deadline needs the 4 GPU-h to start now: the Job is resumed.
    clock.advance(20.5 * 3600)
    late = await reconciler.tick(dict(edited, status=result.status))
    assert kube.jobs["j"]["spec"]["suspend"] is False and late.status["phase"] == "Running"
    assert kube.creates == 1


async def test_a_rejected_job_patch_ends_in_a_condition_not_an_exception(env: Any) -> None:
    reconciler, kube, clock = env
    await reconciler.tick(body(policy={"type": "agnostic"}))
    clock.advance(60)
    kube.fail_patch = ApiException(status=422, reason="spec.completions: field is immutable")
    result = await reconciler.tick(body(kube.statuses[-1], policy={"type": "agnostic"}))
    cond = next(c for c in result.status["conditions"] if c["type"] == "Reconciled")
    assert cond["status"] == "False" and cond["reason"] == "JobPatchFailed"
    assert "immutable" in cond["message"]
    assert result.status["replicas"] == 0, "the Job was not resumed, so status does not say it was"
    assert ("Warning", "JobPatchFailed") in [(e[0], e[1]) for e in result.events]
    assert result.retry_after is None, "a 422 is permanent: the next tick retries at its interval"
    kube.fail_patch = ApiException(status=503, reason="etcd leader changed")
    clock.advance(60)
    result = await reconciler.tick(body(kube.statuses[-1], policy={"type": "agnostic"}))
    assert result.retry_after is not None, "a 503 is transient: back off"


async def test_a_missing_secret_is_a_named_stale_signal(env: Any) -> None:
    reconciler, kube, clock = env
    carbon = {"provider": "static", "zone": "XX", "staticGramsPerKWh": 900, "secretRef": {"name": "creds"}}
    kube.secret_error = ApiException(status=404, reason="not found")
    await reconciler.tick(body(carbon=carbon))
    clock.advance(60)
    result = await reconciler.tick(body(kube.statuses[-1], carbon=carbon))
    cond = next(c for c in result.status["conditions"] if c["type"] == "CarbonSignalStale")
    assert cond["status"] == "True" and "Secret creds not found in namespace ns" in cond["message"]
    assert result.status["phase"] == "Running", "no signal: the job runs as its deadline requires"


async def test_jobs_that_share_a_secret_read_it_once_per_wake(env: Any) -> None:
    reconciler, kube, _ = env
    carbon = {"provider": "static", "zone": "XX", "staticGramsPerKWh": 900, "secretRef": {"name": "creds"}}
    jobs = [body(carbon=carbon, name=f"j{i}") for i in range(20)]
    await asyncio.gather(*(reconciler.tick(b) for b in jobs))
    await asyncio.gather(*(reconciler.tick(b) for b in jobs))
    assert kube.secret_reads == 1, "one GET for 40 ticks of 20 jobs, not one per tick"


async def test_a_provider_bug_is_a_stale_signal_not_a_frozen_job(env: Any, monkeypatch: Any) -> None:
    reconciler, kube, clock = env
    await reconciler.tick(body())

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("provider library bug")

    monkeypatch.setattr(reconciler.ctx.signals, "get", broken)
    clock.advance(60)
    result = await reconciler.tick(body(kube.statuses[-1]))
    cond = next(c for c in result.status["conditions"] if c["type"] == "CarbonSignalStale")
    assert cond["status"] == "True" and "provider library bug" in cond["message"]
    assert result.status["phase"] == "Running"


async def test_any_exception_in_a_tick_ends_in_a_defined_state(env: Any, monkeypatch: Any) -> None:
    import gridwise.k8s.reconciler as module

    reconciler, kube, clock = env
    await reconciler.tick(body())
    status = kube.statuses[-1]

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("bug in the step")

    monkeypatch.setattr(module, "step", broken)
    clock.set(T0 + timedelta(hours=21))  # 4 GPU-h of work, 3 h left: the deadline needs the job now
    result = await reconciler.tick(body(status))
    cond = next(c for c in result.status["conditions"] if c["type"] == "Reconciled")
    assert cond["reason"] == "InternalError" and "bug in the step" in cond["message"]
    assert kube.jobs["j"]["spec"]["suspend"] is False, "the deadline needs it: the fail-safe resumed it"
    assert result.written
    assert [e[1] for e in result.events] == ["InternalError"]
    clock.advance(60)
    again = await reconciler.tick(body(kube.statuses[-1]))
    assert "InternalError" not in [e[1] for e in again.events], "a Warning once, not every tick"


async def test_transient_failures_back_off_without_stopping(env: Any) -> None:
    reconciler, kube, clock = env
    slow = Reconciler(reconciler.ctx, backoff_s=100.0)
    await slow.tick(body())
    written = len(kube.statuses)
    kube.fail_status = ApiException(status=503, reason="etcd unavailable")
    clock.advance(60)
    failed = await slow.tick(body(kube.statuses[-1]))
    assert failed.retry_after == 100.0
    kube.fail_status = None
    clock.advance(60)
    skipped = await slow.tick(body(kube.statuses[-1]))
    assert skipped.action == "backoff" and len(kube.statuses) == written, "no API call while backing off"
    slow._not_before.clear()  # the backoff has passed
    again = await slow.tick(body(kube.statuses[-1]))
    assert again.written and again.retry_after is None


async def test_each_tick_records_the_reading_it_decided_with_for_the_trainer(env: Any) -> None:
    """GET /v1/signal serves the board: it must be the status's own carbonIntensity, tick by tick."""
    from gridwise.job_signal import signal_document

    reconciler, kube, clock = env
    first = await reconciler.tick(body())
    signal = reconciler.ctx.board.get("ns", "j")
    assert signal is not None and signal.carbon == first.status["carbonIntensity"]
    assert signal.carbon["gramsPerKWh"] == 900 and signal.time == T0
    doc = signal_document("ns", "j", signal)
    assert doc["gramsPerKWh"] == kube.statuses[-1]["carbonIntensity"]["gramsPerKWh"]
    assert all(p["end"] > "2030-01-06T00:00:00Z" for p in doc["forecast"])
    clock.advance(60)
    later = await reconciler.tick(body(kube.statuses[-1], carbon={"provider": "static", "zone": "XX",
                                                                  "staticGramsPerKWh": 150}))  # fmt: skip
    assert reconciler.ctx.board.get("ns", "j").carbon == later.status["carbonIntensity"]
    assert later.status["carbonIntensity"]["gramsPerKWh"] == 150


async def _two_running(reconciler: Reconciler, kube: FakeKube, clock: ManualClock) -> dict[str, Any]:
    """Jobs a and b created, then both running (as after a clean spell) on a grid now dirty."""
    first = {name: (await reconciler.tick(body(name=name))).status for name in ("a", "b")}
    for job in kube.jobs.values():
        job["spec"]["suspend"] = False
        job["status"] = {"active": 1}
    clock.advance(60)
    kube.calls.clear()
    return first


async def test_a_wakes_job_patches_go_before_its_status_writes(env: Any) -> None:
    """A zone wake pauses many jobs: no status write may queue in front of a Job patch still coming."""
    reconciler, kube, clock = env
    first = await _two_running(reconciler, kube, clock)
    kube.hold["a"] = asyncio.Event()  # a's tick is still deciding (its Job read is slow)
    ticks = [asyncio.create_task(reconciler.tick(body(first[n], name=n))) for n in ("a", "b")]
    await asyncio.sleep(0.05)
    assert kube.calls == [("patch_job", "b")], "b paused its Job but waits to write its status"
    kube.hold["a"].set()
    results = await asyncio.gather(*ticks)
    assert all(r.written for r in results)
    verbs = [verb for verb, _ in kube.calls]
    assert verbs == ["patch_job", "patch_job", "status", "status"], kube.calls


async def test_a_status_write_waits_for_other_jobs_decisions_only_so_long(env: Any) -> None:
    reconciler, kube, clock = env
    quick = Reconciler(reconciler.ctx, backoff_s=0.0, act_first_s=0.05)
    first = await _two_running(quick, kube, clock)
    kube.hold["a"] = asyncio.Event()  # a never finishes deciding in this test's time
    stuck = asyncio.create_task(quick.tick(body(first["a"], name="a")))
    result = await asyncio.wait_for(quick.tick(body(first["b"], name="b")), timeout=2.0)
    assert result.written and kube.calls[-1] == ("status", "b"), "one slow job cannot hold every write"
    kube.hold["a"].set()
    await stuck


async def test_a_pause_writes_status_once_the_controller_counted_its_pods_out(env: Any) -> None:
    """In a mass pause the cluster stops pods first; status writes (and Events) follow (drains.py)."""
    reconciler, kube, clock = env
    holding = Reconciler(reconciler.ctx, backoff_s=0.0, pause_write_hold_s=30.0)
    first = await _two_running(holding, kube, clock)
    ticks = [asyncio.create_task(holding.tick(body(first[n], name=n))) for n in ("a", "b")]
    await asyncio.sleep(0.05)
    assert kube.calls == [("patch_job", "a"), ("patch_job", "b")], "both paused, no status written yet"
    holding.drains.seen(("ns", "a"), {"spec": {"suspend": True}, "status": {}})
    holding.drains.seen(("ns", "b"), {"spec": {"suspend": True}, "status": {"active": 1}})
    await asyncio.sleep(0.05)
    assert kube.calls[2:] == [], "b's pods are still counted: every write waits"
    holding.drains.seen(("ns", "b"), {"spec": {"suspend": True}, "status": {}})
    results = await asyncio.wait_for(asyncio.gather(*ticks), timeout=2.0)
    assert all(r.written and r.status["phase"] == "Paused" for r in results)
    assert sorted(kube.calls[2:]) == [("status", "a"), ("status", "b")]


async def test_a_job_wanted_for_a_decision_does_not_wait_behind_its_held_write(env: Any) -> None:
    """A tick waits with the job's lock: were it not let go, the job's next decision (a zone
    change, a spec edit) would wait up to the hold for other jobs' pods (drains.py)."""
    reconciler, kube, clock = env
    holding = Reconciler(reconciler.ctx, backoff_s=0.0, pause_write_hold_s=30.0)
    first = await _two_running(holding, kube, clock)
    a = asyncio.create_task(holding.tick(body(first["a"], name="a")))  # a's pods go slowly
    await asyncio.sleep(0.05)
    b = asyncio.create_task(holding.tick(body(first["b"], name="b")))
    await asyncio.sleep(0.05)
    assert not b.done(), "b's write waits for a's pods"
    holding.drains.interrupt(("ns", "b"))  # b is woken urgently meanwhile
    held = await asyncio.wait_for(b, timeout=1.0)
    assert held.written and held.write_due is not None and ("status", "b") not in kube.calls
    holding.drains.wanted = lambda key: key == ("ns", "b")  # woken before its tick reached the wait
    await asyncio.wait_for(holding.tick(body(first["b"], name="b")), timeout=1.0)
    assert ("status", "b") not in kube.calls
    holding.drains.wanted = lambda key: False
    later = asyncio.create_task(holding.tick(body(first["b"], name="b")))
    await asyncio.sleep(0.05)
    assert not later.done(), "a tick not wanted elsewhere waits for the pods as before"
    for name in ("a", "b"):
        holding.drains.seen(("ns", name), {"spec": {"suspend": True}, "status": {}})
    results = await asyncio.wait_for(asyncio.gather(a, later), timeout=2.0)
    assert all(r.written and r.status["phase"] == "Paused" for r in results)
    assert kube.calls.count(("patch_job", "b")) == 1, "the deferred status kept b's pause: not made twice"
    assert kube.calls.count(("status", "b")) == 1


async def test_a_status_write_waits_for_a_pause_that_never_drains_only_the_hold(env: Any) -> None:
    reconciler, kube, clock = env
    holding = Reconciler(reconciler.ctx, backoff_s=0.0, pause_write_hold_s=0.2)
    first = (await holding.tick(body())).status
    kube.jobs["j"]["spec"]["suspend"] = False
    clock.advance(60)
    result = await asyncio.wait_for(holding.tick(body(first)), timeout=2.0)
    assert result.written and kube.calls[-1] == ("status", "j"), "no Job event came; the status still goes"


async def test_a_burst_of_ticks_does_not_ask_pods_that_did_not_answer(env: Any, monkeypatch: Any) -> None:
    """In a zone wake a trainer that refused last time is asked next tick, not ahead of the pauses."""
    reconciler, kube, clock = env
    monkeypatch.setattr(reconciler_module, "BUSY_TICKS", 1)  # two ticks deciding at once is a burst
    asked: list[str] = []
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        if request.url.host == "10.0.0.1":  # a's trainer answers, slowly
            await gate.wait()
            return httpx.Response(200, text="gridwise_trainer_progress_ratio 0.5\n")
        raise httpx.ConnectError("connection refused", request=request)  # b's is still starting

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as scraper:
        ctx = dataclasses.replace(reconciler.ctx, scraper=scraper)
        quick = Reconciler(ctx, backoff_s=0.0, act_first_s=0.05)
        first = await _two_running(quick, kube, clock)
        pod = {
            n: [PodInfo(f"{n}-0", "Running", ip, False, T0.timestamp())]
            for n, ip in (("a", "10.0.0.1"), ("b", "10.0.0.2"))
        }

        def tick(name: str, status: dict[str, Any]) -> Any:
            return quick.tick(body(status, name=name), IndexView(kube.jobs[name], pod[name]))

        b = (await tick("b", first["b"])).status
        assert asked == ["10.0.0.2"], "alone, a refusing pod is asked"
        a = asyncio.create_task(tick("a", first["a"]))  # still deciding: its scrape waits
        await asyncio.sleep(0.05)
        b = (await tick("b", b)).status
        assert asked == ["10.0.0.2", "10.0.0.1"], "in the burst b's pod was not asked again"
        skipped = ctx.metrics.registry.get_sample_value(
            "gridwise_trainer_scrapes_total", {"result": "skipped"}
        )
        assert skipped == 1, "and the operator's /metrics counts it"
        gate.set()
        assert (await a).status["progressSource"] == "trainer"
        await tick("b", b)
    assert asked[-1] == "10.0.0.2", "after the burst it is asked again"


async def test_after_a_gap_a_pod_is_booked_from_when_it_started_running(env: Any) -> None:
    # The last status was written while the pod was Pending; the operator was then away for 40
    # minutes (a restart, an API server outage). The pod says it has run since minute 30: ten
    # minutes of work, not the twenty that half the gap would give.
    reconciler, kube, clock = env
    first = await reconciler.tick(body(policy={"type": "agnostic"}))  # creates the Job
    kube.jobs["j"]["spec"]["suspend"] = False
    written = (await reconciler.tick(body(first.status, policy={"type": "agnostic"}))).status
    assert written["accounting"]["workingPods"] == 0 and written["phase"] == "Running"
    started = T0 + timedelta(minutes=30)
    clock.set(T0 + timedelta(minutes=40))
    pod = PodInfo("j-0", "Running", None, False, running_since=started.timestamp())  # no IP: no scrape
    fresh = Reconciler(reconciler.ctx, backoff_s=0.0)  # a new term: nothing held in memory
    result = await fresh.tick(body(written, policy={"type": "agnostic"}), IndexView(kube.jobs["j"], [pod]))
    acc = result.status["accounting"]
    assert acc["workingPods"] == 1
    assert acc["workDoneGPUHours"] == pytest.approx(10 / 60)
    assert result.status["energyJoules"] == pytest.approx(10 * 60 * 400.0)


async def test_after_a_gap_a_finished_job_is_booked_until_it_finished(env: Any) -> None:
    # The pod ran at the last written status; the operator was away for 40 minutes and the Job
    # completed 10 minutes in. Ten minutes drew power, not the twenty that half the gap would give.
    reconciler, kube, clock = env
    agnostic: dict[str, Any] = {"policy": {"type": "agnostic"}}
    first = await reconciler.tick(body(**agnostic))
    kube.jobs["j"]["spec"]["suspend"] = False
    pod = PodInfo("j-0", "Running", None, False, running_since=T0.timestamp())
    running = (await reconciler.tick(body(first.status, **agnostic), IndexView(kube.jobs["j"], [pod]))).status
    assert running["accounting"]["workingPods"] == 1
    energy = running["energyJoules"]
    done = T0 + timedelta(minutes=10)
    kube.jobs["j"]["status"] = {
        "completionTime": done.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "conditions": [{"type": "Complete", "status": "True"}],
    }
    clock.set(T0 + timedelta(minutes=40))
    fresh = Reconciler(reconciler.ctx, backoff_s=0.0)
    result = await fresh.tick(body(running, **agnostic), IndexView(kube.jobs["j"], []))
    assert result.status["phase"] == "Succeeded"
    assert result.status["energyJoules"] - energy == pytest.approx(10 * 60 * 400.0)


async def test_a_pause_the_job_watch_has_not_shown_yet_is_not_made_twice(env: Any) -> None:
    # Under load the Job watch lags the pod watch: the pods' events wake the job while its
    # indexed Job still says it runs. It must not be paused (patched, recorded, announced) again.
    reconciler, kube, clock = env
    first = await reconciler.tick(body())  # creates the Job; the grid (900 g) is above 200
    kube.jobs["j"]["spec"].update(suspend=False, parallelism=1)  # running, as after a clean spell
    stale = copy.deepcopy(kube.jobs["j"])
    pod = PodInfo("j-0", "Running", None, False, running_since=T0.timestamp())
    clock.advance(30)
    paused = await reconciler.tick(body(first.status), IndexView(stale, [pod]))
    assert paused.action == "pause" and kube.calls.count(("patch_job", "j")) == 1
    clock.advance(5)
    going = PodInfo("j-0", "Running", None, True, running_since=T0.timestamp())  # terminating
    again = await reconciler.tick(body(paused.status), IndexView(stale, [going]))
    assert kube.calls.count(("patch_job", "j")) == 1, "paused twice on a stale index"
    assert again.status["pauseTimes"] == paused.status["pauseTimes"] and len(again.status["pauseTimes"]) == 1
    assert not [e for e in again.events if e[1] == "CarbonIntensity"], again.events
    # Once the watch shows the pause, the index is believed again.
    clock.advance(5)
    later = await reconciler.tick(body(again.status), IndexView(kube.jobs["j"], []))
    assert later.status["phase"] == "Paused" and not reconciler._expected
