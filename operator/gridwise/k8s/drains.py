"""Jobs this process paused whose pods the Job controller has not yet counted out.

A zone wake pauses a thousand jobs at once. What stops their pods is the Job patch, then the Job
controller deleting the pods and reporting `active: 0`, on the same API server, etcd and two cores
as everything else. Each job's status write and its Events are news for readers, not for the
pods: written in the middle of that, they would make the cluster take a thousand more writes
(and stream them back to every watcher) while it is still stopping pods. So status writes wait
until every pause this process began has drained, or at most `hold_s`: a mass pause's status
lags by that much, and a single pause's by the time its own pods take to be counted out.

A tick waits with its job's lock held, so a job whose write waits cannot be decided again. When
the job is wanted for a decision meanwhile (its zone changed, its spec was edited), its wait ends
(`interrupt`, or `wanted` before it waits): the status stays in memory and the tick that follows
writes it. Without that, a
job whose steady write was due as a mass pause began was itself paused up to `hold_s` late.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

JobKey = tuple[str, str]  # (namespace, Job name)
Waiter = tuple[str, str]  # (namespace, name) of the CarbonAwareJob whose write waits
HOLD_S = 30.0


def drained(job: Mapping[str, Any]) -> bool:
    """The Job is suspended and its controller counts no active pod (terminating ones are not)."""
    return (job.get("spec") or {}).get("suspend") is True and not (job.get("status") or {}).get("active")


class PauseDrains:
    """Pauses in flight, and a wait for all of them that never lasts longer than `hold_s`."""

    def __init__(self, hold_s: float = HOLD_S, now: Callable[[], float] = time.monotonic) -> None:
        self.hold_s = hold_s
        self._now = now
        self._since: dict[JobKey, float] = {}  # when each pause was patched (monotonic)
        # Who waits (`settled`), by the waiter's own key: True when every pause drained, False
        # when that waiter was interrupted.
        self._waiters: dict[Waiter | None, list[asyncio.Future[bool]]] = {}
        # Whether a waiter is already wanted for a decision (wakeups.Wakeups.urgent_pending): it
        # does not start waiting. `interrupt` ends the wait of one wanted while it waits.
        self.wanted: Callable[[Waiter], bool] = lambda waiter: False

    def __len__(self) -> int:
        return len(self._since)

    def started(self, key: JobKey) -> None:
        """The Job was just patched to suspend: its pods are still being stopped."""
        if self.hold_s <= 0:
            return
        self._since[key] = self._now()

    def seen(self, key: JobKey, job: Mapping[str, Any]) -> None:
        """A watch event of the Job: the pause has drained once the controller counts no pod."""
        if key in self._since and drained(job):
            self.forget(key)

    def forget(self, key: JobKey) -> None:
        self._since.pop(key, None)
        if not self._since:
            for waiter in list(self._waiters):
                self._release(waiter, True)

    def interrupt(self, waiter: Waiter) -> None:
        """Ends `waiter`'s wait now (its job is wanted for a decision); the others wait on."""
        self._release(waiter, False)

    def _release(self, waiter: Waiter | None, drained: bool) -> None:
        for future in self._waiters.pop(waiter, ()):
            if not future.done():
                future.set_result(drained)

    def _expire(self) -> float:
        """Drops pauses older than `hold_s` (a Job deleted meanwhile, a controller down); returns
        the seconds until the youngest left expires."""
        now = self._now()
        for key in [k for k, t in self._since.items() if now - t >= self.hold_s]:
            self.forget(key)
        return max((t + self.hold_s - now for t in self._since.values()), default=0.0)

    async def settled(self, waiter: Waiter | None = None) -> bool:
        """Until no pause is draining, at most `hold_s` from now: False if `waiter` is wanted first."""
        if waiter is not None and self.wanted(waiter):
            return False
        left = self._expire()
        if left <= 0:
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(waiter, []).append(future)
        drained = True
        try:
            with contextlib.suppress(TimeoutError):
                drained = await asyncio.wait_for(future, timeout=left)  # never more than hold_s
        finally:
            waiting = self._waiters.get(waiter)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._waiters[waiter]
        self._expire()
        return drained
