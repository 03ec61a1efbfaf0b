"""PauseDrains: status writes wait for a mass pause's pods, never longer than the hold."""

from __future__ import annotations

import asyncio

from gridwise.k8s.drains import PauseDrains, drained

SUSPENDED_GONE = {"spec": {"suspend": True}, "status": {}}
SUSPENDED_ACTIVE = {"spec": {"suspend": True}, "status": {"active": 2, "terminating": 1}}


class Mono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_job_is_drained_when_suspended_with_no_active_pod() -> None:
    assert drained(SUSPENDED_GONE)
    assert drained({"spec": {"suspend": True}, "status": {"active": 0, "terminating": 3}})
    assert not drained(SUSPENDED_ACTIVE)
    assert not drained({"spec": {"suspend": False}, "status": {}}), "a resumed Job is not a drained pause"
    assert not drained({})


async def test_settled_waits_until_every_pause_drained() -> None:
    drains = PauseDrains(hold_s=30.0)
    drains.started(("ns", "a"))
    drains.started(("ns", "b"))
    waiter = asyncio.create_task(drains.settled())
    await asyncio.sleep(0.01)
    drains.seen(("ns", "a"), SUSPENDED_GONE)
    drains.seen(("ns", "b"), SUSPENDED_ACTIVE)  # the controller still counts b's pods
    drains.seen(("ns", "c"), SUSPENDED_GONE)  # not a pause of ours: changes nothing
    await asyncio.sleep(0.01)
    assert not waiter.done() and len(drains) == 1
    drains.seen(("ns", "b"), SUSPENDED_GONE)
    await asyncio.wait_for(waiter, timeout=1.0)
    assert len(drains) == 0


async def test_a_pause_never_reported_drained_holds_writes_only_hold_s() -> None:
    # A Job deleted meanwhile, a patch that changed nothing, a Job controller down: no event says
    # the pods are gone, and status writes must still go.
    drains = PauseDrains(hold_s=0.2)
    drains.started(("ns", "a"))
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(drains.settled(), timeout=2.0)
    assert 0.15 <= asyncio.get_running_loop().time() - started < 1.0
    assert len(drains) == 0, "the expired pause is dropped, so the next write does not wait again"
    await asyncio.wait_for(drains.settled(), timeout=0.05)


async def test_an_old_pause_expires_by_the_clock_it_was_given() -> None:
    mono = Mono()
    drains = PauseDrains(hold_s=30.0, now=mono)
    drains.started(("ns", "a"))
    mono.t += 31.0
    await asyncio.wait_for(drains.settled(), timeout=0.05)
    assert len(drains) == 0


async def test_no_hold_means_no_wait_and_nothing_tracked() -> None:
    drains = PauseDrains(hold_s=0.0)
    drains.started(("ns", "a"))
    assert len(drains) == 0
    await asyncio.wait_for(drains.settled(), timeout=0.05)


async def test_a_deleted_job_is_forgotten() -> None:
    drains = PauseDrains(hold_s=30.0)
    drains.started(("ns", "a"))
    drains.forget(("ns", "a"))
    await asyncio.wait_for(drains.settled(), timeout=0.05)


async def test_a_new_pause_during_a_wait_is_waited_for_too() -> None:
    drains = PauseDrains(hold_s=30.0)
    drains.started(("ns", "a"))
    waiter = asyncio.create_task(drains.settled())
    await asyncio.sleep(0.01)
    drains.started(("ns", "b"))
    drains.seen(("ns", "a"), SUSPENDED_GONE)
    await asyncio.sleep(0.01)
    assert not waiter.done(), "b's pods are still being stopped"
    drains.seen(("ns", "b"), SUSPENDED_GONE)
    await asyncio.wait_for(waiter, timeout=1.0)


async def test_an_interrupted_waiter_stops_waiting_and_the_others_wait_on() -> None:
    """A job wanted for a decision must not wait behind its own held write (drains.py)."""
    drains = PauseDrains(hold_s=30.0)
    drains.started(("ns", "a"))
    b = asyncio.create_task(drains.settled(("ns", "b")))
    c = asyncio.create_task(drains.settled(("ns", "c")))
    await asyncio.sleep(0.01)
    drains.interrupt(("ns", "b"))
    drains.interrupt(("ns", "nobody"))  # no one waits under that key: nothing happens
    assert await asyncio.wait_for(b, timeout=1.0) is False, "b was interrupted"
    await asyncio.sleep(0.01)
    assert not c.done(), "c still waits for a's pods"
    drains.seen(("ns", "a"), SUSPENDED_GONE)
    assert await asyncio.wait_for(c, timeout=1.0) is True
    assert await drains.settled(("ns", "b")) is True, "nothing drains: no wait, and no interrupt is kept"
