"""After a zone wake, the ticks that pause or resume pods go before the ticks their watch events cause."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from gridwise.clock import ManualClock
from gridwise.k8s.handlers import run_job
from gridwise.k8s.reconciler import TickResult
from gridwise.k8s.wakeups import Wakeups

NOW = datetime(2030, 1, 6, 12, tzinfo=UTC)
CARBON = {"provider": "p", "zone": "z"}


class NoHub:
    def items(self) -> list[Any]:
        return []


class Running:
    def __init__(self) -> None:
        self.stop = False

    def __bool__(self) -> bool:
        return self.stop


class Reconciler:
    """Records each job's ticks; a job's tick can be held open to stand for a slow urgent tick."""

    def __init__(self) -> None:
        self.ctx = SimpleNamespace(
            clock=ManualClock(NOW),
            metrics=SimpleNamespace(reconcile_errors=SimpleNamespace(inc=lambda: None)),
            board=SimpleNamespace(forget=lambda *_: None),
        )
        self.ticks: list[str] = []
        self.hold: dict[str, asyncio.Event] = {}

    async def tick(self, body: Any, index: Any) -> TickResult:
        name = body.metadata.name
        self.ticks.append(name)
        if name in self.hold:
            await self.hold[name].wait()
        return TickResult({})


def body(name: str) -> Any:
    return SimpleNamespace(metadata=SimpleNamespace(namespace="ns", name=name), spec={"carbon": CARBON})


async def started(
    reconciler: Reconciler, wakeups: Wakeups, *names: str, interval_s: float = 3600
) -> tuple[Running, list[Any]]:
    stopped = Running()
    tasks = [
        asyncio.create_task(
            run_job(reconciler, wakeups, body(n), ({}, {}), stopped, interval_s=interval_s)  # type: ignore[arg-type]
        )
        for n in names
    ]
    await asyncio.sleep(0.05)
    assert sorted(reconciler.ticks) == sorted(names), "each job's first tick runs at once"
    reconciler.ticks.clear()
    return stopped, tasks


async def stop(stopped: Running, tasks: list[Any], wakeups: Wakeups, *names: str) -> None:
    stopped.stop = True
    for n in names:
        wakeups.wake(("ns", n))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=2)


async def test_a_watch_event_tick_waits_for_the_urgent_tick_running_and_an_edit_does_not() -> None:
    wakeups = Wakeups(ManualClock(NOW), NoHub(), coalesce_s=0.01, quiet_s=0.01)  # type: ignore[arg-type]
    reconciler = Reconciler()
    stopped, tasks = await started(reconciler, wakeups, "a", "b")
    reconciler.hold["a"] = asyncio.Event()
    wakeups.wake(("ns", "a"))  # the zone changed: a pauses (slowly)
    await asyncio.sleep(0.02)
    wakeups.wake_later(("ns", "b"))  # b's pod terminated
    await asyncio.sleep(0.1)
    assert reconciler.ticks == ["a"], "b's follow-up waits while a's urgent tick runs"
    wakeups.wake_later(("ns", "b"), urgent=True)  # b's spec was edited: that may change its decision
    await asyncio.sleep(0.1)
    assert reconciler.ticks == ["a", "b"]
    wakeups.wake_later(("ns", "b"))
    await asyncio.sleep(0.1)
    assert reconciler.ticks == ["a", "b"]
    reconciler.hold["a"].set()
    await asyncio.sleep(0.05)
    assert reconciler.ticks == ["a", "b", "b"], "once a's tick is done, b's follow-up runs, once"
    await stop(stopped, tasks, wakeups, "a", "b")


async def test_a_follow_up_waits_at_most_the_cap(monkeypatch: Any) -> None:
    wakeups = Wakeups(ManualClock(NOW), NoHub(), coalesce_s=0.01, quiet_s=0.01)  # type: ignore[arg-type]
    original = wakeups.after_urgent_ticks
    monkeypatch.setattr(wakeups, "after_urgent_ticks", lambda job: original(job, timeout_s=0.2))
    reconciler = Reconciler()
    stopped, tasks = await started(reconciler, wakeups, "a", "b")
    reconciler.hold["a"] = asyncio.Event()  # a's tick never ends on its own
    wakeups.wake(("ns", "a"))
    await asyncio.sleep(0.02)
    wakeups.wake_later(("ns", "b"))
    await asyncio.sleep(0.1)
    assert reconciler.ticks == ["a"]
    await asyncio.sleep(0.25)
    assert reconciler.ticks == ["a", "b"], "a stuck urgent tick does not hold other jobs for longer"
    reconciler.hold["a"].set()
    await stop(stopped, tasks, wakeups, "a", "b")


def test_the_safety_net_stretches_past_its_budget_of_passes_per_second() -> None:
    wakeups = Wakeups(ManualClock(NOW), NoHub(), safety_net_per_s=20.0)  # type: ignore[arg-type]
    for i in range(100):
        wakeups.register(("ns", f"j{i}"), CARBON)
    assert wakeups.safety_net_s(10.0) == 10.0  # 100 jobs / 10 s = 10 a second: within budget
    for i in range(100, 1000):
        wakeups.register(("ns", f"j{i}"), CARBON)
    assert wakeups.safety_net_s(10.0) == 50.0  # 1000 jobs: 20 a second, not 100
    assert wakeups.safety_net_s(60.0) == 60.0


async def test_many_jobs_share_the_safety_net_budget_and_an_event_still_wakes_one_at_once() -> None:
    wakeups = Wakeups(ManualClock(NOW), NoHub(), safety_net_per_s=10.0)  # type: ignore[arg-type]
    reconciler = Reconciler()
    names = [f"j{i}" for i in range(5)]
    stopped, tasks = await started(reconciler, wakeups, *names, interval_s=0.05)
    await asyncio.sleep(1.0)
    # Unbudgeted, 5 jobs at 0.05 s would tick ~100 times in this second; the budget allows ~10.
    assert len(reconciler.ticks) <= 20, reconciler.ticks
    reconciler.ticks.clear()
    wakeups.wake(("ns", "j3"))
    await asyncio.sleep(0.05)
    assert "j3" in reconciler.ticks  # (another job's net pass may fall in the same 50 ms)
    await stop(stopped, tasks, wakeups, *names)


async def test_a_pauses_events_spread_over_a_second_tick_its_job_once() -> None:
    # The Job suspended, then each pod terminating and gone, 0.1 s apart: news for the status only.
    # (The quiet time leaves 0.25 s for a late wake-up of this test on a loaded machine.)
    wakeups = Wakeups(ManualClock(NOW), NoHub(), coalesce_s=0.01, quiet_s=0.35, max_wait_s=5.0)  # type: ignore[arg-type]
    reconciler = Reconciler()
    stopped, tasks = await started(reconciler, wakeups, "a")
    for _ in range(8):
        wakeups.wake_later(("ns", "a"))
        await asyncio.sleep(0.1)
    assert reconciler.ticks == [], "no tick while the events keep coming (0.25 s windows: 3-4)"
    await asyncio.sleep(0.5)
    assert reconciler.ticks == ["a"], "one tick once they are quiet"
    await stop(stopped, tasks, wakeups, "a")


async def test_a_stream_of_events_still_ticks_within_the_longest_wait() -> None:
    wakeups = Wakeups(ManualClock(NOW), NoHub(), coalesce_s=0.01, quiet_s=0.3, max_wait_s=0.45)  # type: ignore[arg-type]
    reconciler = Reconciler()
    stopped, tasks = await started(reconciler, wakeups, "a")
    for _ in range(24):  # never quiet for 0.3 s, for 1.2 s
        wakeups.wake_later(("ns", "a"))
        await asyncio.sleep(0.05)
    assert 1 <= len(reconciler.ticks) <= 4, reconciler.ticks  # about every 0.45 s, not never
    await stop(stopped, tasks, wakeups, "a")


async def test_a_spec_edit_during_a_burst_ticks_at_once_and_a_forgotten_job_not_at_all() -> None:
    wakeups = Wakeups(ManualClock(NOW), NoHub(), coalesce_s=0.01, quiet_s=1.0, max_wait_s=5.0)  # type: ignore[arg-type]
    reconciler = Reconciler()
    stopped, tasks = await started(reconciler, wakeups, "a")
    wakeups.wake_later(("ns", "a"))  # a pod terminated: could wait a second
    wakeups.wake_later(("ns", "a"), urgent=True)  # the spec was edited: may change the decision
    await asyncio.sleep(0.15)
    assert reconciler.ticks == ["a"]
    await asyncio.sleep(1.1)
    assert reconciler.ticks == ["a"], "the edit's tick saw the pod's event too"
    await stop(stopped, tasks, wakeups, "a")
    event = wakeups.register(("ns", "b"), CARBON)
    wakeups.wake_later(("ns", "b"))
    wakeups.forget(("ns", "b"))  # deleted meanwhile
    assert not wakeups._pending, "forgetting a job drops its timer"
    await asyncio.sleep(1.1)
    assert not event.is_set()


def test_a_job_wanted_for_a_decision_is_told_at_once_and_its_other_events_are_not() -> None:
    """`on_urgent` ends a held status write of that job (drains.PauseDrains.interrupt)."""
    told: list[tuple[str, str]] = []
    wakeups = Wakeups(ManualClock(NOW), NoHub(), on_urgent=told.append)  # type: ignore[arg-type]
    wakeups.register(("ns", "a"), CARBON)
    wakeups.register(("ns", "b"), {"provider": "p", "zone": "other"})
    wakeups.wake(("ns", "a"), urgent=False)  # a watch event: news for its status only
    assert told == [] and not wakeups.urgent_pending(("ns", "a"))
    assert wakeups.wake_zone(("p", "z", "")) == 1
    assert told == [("ns", "a")] and wakeups.urgent_pending(("ns", "a"))
    assert wakeups.claim_urgent(("ns", "a")) and not wakeups.urgent_pending(("ns", "a"))
