"""Wakes CarbonAwareJobs when something they depend on changes, instead of each polling.

A grid change is one event per zone, not one discovery per job: one watcher reads every shared
carbon signal when its cached value expires (its TTL, or the end of the interval the current
value covers, whichever comes first) and, when the reading changes (a new value, a forecast
revision, stale or fresh again), wakes every job that uses that zone at once. Spec edits and a
job's own planned change times wake just that job. The per-job interval is only a safety net.

A zone wake is urgent: its jobs' Job changes are what pause or resume pods. The watch events those
changes cause (the Job suspended, each pod terminating and gone) wake the same jobs again, but are
news for their status, not for the decision. So a job's watch events are debounced: its tick comes
once they have been quiet for `FOLLOW_UP_QUIET_S` (at most `FOLLOW_UP_MAX_S` after the first), one
tick for the whole pause rather than one per event; and it waits (at most `FOLLOW_UP_WAIT_S`) until
no urgent tick is running, so a thousand follow-ups do not delay the last jobs' pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gridwise.carbon import SignalReading
from gridwise.clock import Clock
from gridwise.signal_hub import SignalHub

log = logging.getLogger(__name__)

JobKey = tuple[str, str]  # (namespace, name)
ZoneKey = tuple[str, str, str]  # (provider, zone, signal type) as the spec names them
FOLLOW_UP_WAIT_S = 5.0  # the longest a follow-up tick waits for urgent ones
# A pause's events for one job (the Job, each pod terminating, then gone, the Job's status) arrive
# over a second or more under load; one tick once they are quiet sees all of them.
FOLLOW_UP_QUIET_S = 1.0
FOLLOW_UP_MAX_S = 5.0  # a stream of events still ticks this often: status lags at most this much
# The safety net's budget across all jobs: past this many jobs per second of interval, the net
# stretches (1000 jobs at a 10 s interval would be 100 ticks a second, most of a core, for news
# that the events above already deliver).
SAFETY_NET_PASSES_PER_S = 20.0


def zone_key(carbon: Mapping[str, Any]) -> ZoneKey:
    """Which jobs a signal change concerns; credentials are not part of it (a spurious wake is cheap)."""
    return (str(carbon.get("provider", "")), str(carbon.get("zone", "")), str(carbon.get("signalType", "")))


def fingerprint(reading: SignalReading) -> Hashable:
    """What a decision reads from a reading: a change here may change a decision."""
    current = reading.current
    head = (current.start, round(current.grams_per_kwh, 3)) if current is not None else None
    forecast = tuple((p.start, round(p.grams_per_kwh, 1)) for p in reading.forecast)
    band = tuple(round(e, 1) for e in reading.forecast_upper)  # decide() shades the forecast with it
    return (reading.stale, head, forecast, band)


def wall_seconds_until(clock: Clock, when: datetime) -> float:
    """Wall-clock seconds until `when` on `clock` (a replayed clock runs `speed` times faster)."""
    speed = float(getattr(clock, "speed", 1.0))
    return max(0.0, (when - clock.now()).total_seconds() / speed)


@dataclass
class _Pending:
    """A job's watch-event wake not yet fired: when its burst began and when it is due."""

    first: float
    due: float
    urgent: bool
    handle: asyncio.TimerHandle


class Wakeups:
    """Per-job wake events and the one watcher task that sets them on zone signal changes.

    The watcher passes over every shared signal at least every `max_poll_s` wall seconds, so a
    signal a job creates is watched within a second; a pass reads cached values (no provider
    call) unless a value has expired.
    """

    def __init__(
        self,
        clock: Clock,
        signals: SignalHub,
        *,
        max_poll_s: float = 1.0,
        on_zone_wake: Any = None,
        on_urgent: Callable[[JobKey], None] | None = None,
        coalesce_s: float = 0.25,
        quiet_s: float = FOLLOW_UP_QUIET_S,
        max_wait_s: float = FOLLOW_UP_MAX_S,
        safety_net_per_s: float = SAFETY_NET_PASSES_PER_S,
    ) -> None:
        """`coalesce_s`: how long an urgent watch event waits (for kopf to store what it saw).

        `on_urgent(job)`: a job was just wanted for a decision (drains.PauseDrains.interrupt).

        `quiet_s`, `max_wait_s`: the debounce of a job's other watch events (see the module doc).
        """
        self._clock = clock
        self._safety_net_per_s = safety_net_per_s
        self._coalesce_s = coalesce_s
        self._quiet_s = max(coalesce_s, quiet_s)
        self._max_wait_s = max(self._quiet_s, max_wait_s)
        self._pending: dict[JobKey, _Pending] = {}
        self._on_zone_wake = on_zone_wake  # e.g. a Prometheus counter's inc
        self._on_urgent = on_urgent
        self._signals = signals
        self._max_poll_s = max_poll_s
        self._events: dict[JobKey, asyncio.Event] = {}
        self._zones: dict[JobKey, ZoneKey] = {}
        self._by_zone: dict[ZoneKey, set[JobKey]] = defaultdict(set)
        self._last: dict[str, Hashable] = {}
        self.zone_wakes = 0  # how many zone changes woke jobs (for tests and the benchmark log)
        self._urgent: set[JobKey] = set()  # jobs whose pending wake may change their decision
        self._urgent_ticks = 0
        self._held: dict[JobKey, asyncio.Event] = {}  # follow-ups waiting, and what lets each go

    def safety_net_s(self, interval_s: float) -> float:
        """The safety-net interval at the current job count: `interval_s`, or longer past the budget.

        Only the net stretches: zone changes, planned changes, due status writes and watch
        events still wake a job at once.
        """
        return max(interval_s, len(self._events) / self._safety_net_per_s)

    def register(self, job: JobKey, carbon: Mapping[str, Any]) -> asyncio.Event:
        """The event that wakes `job`; re-registering (a provider switch) moves it to its new zone."""
        self.unregister(job)
        event = self._events.setdefault(job, asyncio.Event())
        zone = zone_key(carbon)
        self._zones[job] = zone
        self._by_zone[zone].add(job)
        return event

    def unregister(self, job: JobKey) -> None:
        zone = self._zones.pop(job, None)
        if zone is not None:
            self._by_zone[zone].discard(job)
            if not self._by_zone[zone]:
                del self._by_zone[zone]

    def forget(self, job: JobKey) -> None:
        self.unregister(job)
        self._events.pop(job, None)
        self._urgent.discard(job)
        pending = self._pending.pop(job, None)
        if pending is not None:
            pending.handle.cancel()

    def wake(self, job: JobKey, *, urgent: bool = True) -> None:
        event = self._events.get(job)
        if event is not None:
            if urgent:
                self._mark_urgent(job)
            event.set()

    def urgent_pending(self, job: JobKey) -> bool:
        """Whether `job` has an urgent wake its loop has not claimed yet."""
        return job in self._urgent

    def _mark_urgent(self, job: JobKey) -> None:
        self._urgent.add(job)
        if self._on_urgent is not None:
            self._on_urgent(job)
        held = self._held.get(job)
        if held is not None:
            held.set()  # a held follow-up becomes this urgent tick

    def wake_later(self, job: JobKey, *, urgent: bool = False) -> None:
        """Wakes `job` once for a burst of watch events: one tick sees them all.

        An `urgent` event (a spec edit) wakes it after `coalesce_s`; the others once the job's
        events have been quiet for `quiet_s` (at most `max_wait_s` after the first), and that tick
        may wait for the urgent ones (see the module doc).
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        if urgent:
            self._mark_urgent(job)
        pending = self._pending.get(job)
        if pending is None:
            due = now + (self._coalesce_s if urgent else self._quiet_s)
            self._pending[job] = _Pending(now, due, urgent, loop.call_at(due, self._fire, job))
            return
        if urgent and not pending.urgent:
            pending.urgent = True
            due = min(pending.due, now + self._coalesce_s)
            if due < pending.due:  # sooner than the timer set: set it again
                pending.due = due
                pending.handle.cancel()
                pending.handle = loop.call_at(due, self._fire, job)
        elif not pending.urgent:  # one more event: the burst goes on (the timer re-arms itself)
            pending.due = min(now + self._quiet_s, pending.first + self._max_wait_s)

    def _fire(self, job: JobKey) -> None:
        pending = self._pending.get(job)
        if pending is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < pending.due:  # events came after the timer was set
            pending.handle = loop.call_at(pending.due, self._fire, job)
            return
        del self._pending[job]
        self.wake(job, urgent=False)

    def claim_urgent(self, job: JobKey) -> bool:
        """Whether `job` has an urgent wake pending; claiming it clears it."""
        if job in self._urgent:
            self._urgent.discard(job)
            return True
        return False

    async def after_urgent_ticks(self, job: JobKey, timeout_s: float = FOLLOW_UP_WAIT_S) -> None:
        """Holds a follow-up tick of `job` until no urgent tick runs, it is woken urgently, or `timeout_s`."""
        if self._urgent_ticks == 0 or job in self._urgent:
            return
        held = self._held.setdefault(job, asyncio.Event())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(held.wait(), timeout=timeout_s)
        finally:
            self._held.pop(job, None)

    @contextlib.contextmanager
    def urgent_tick(self) -> Iterator[None]:
        """Marks a tick that follow-up ticks let go first."""
        self._urgent_ticks += 1
        try:
            yield
        finally:
            self._urgent_ticks -= 1
            if self._urgent_ticks == 0:
                for held in self._held.values():
                    held.set()

    def wake_zone(self, zone: ZoneKey) -> int:
        jobs = list(self._by_zone.get(zone, ()))
        for job in jobs:
            self.wake(job)
        return len(jobs)

    async def watch(self, stop: asyncio.Event) -> None:
        """Reads every shared signal when it expires and wakes its zone on a change; never raises."""
        while not stop.is_set():
            delay = self._max_poll_s
            for key, carbon, signal in self._signals.items():
                try:
                    reading = await signal.read()
                except Exception:  # CarbonSignal never raises; a bug here must not stop the watcher
                    log.exception("zone watcher could not read %s", key)
                    continue
                fp = fingerprint(reading)
                previous = self._last.get(key)
                self._last[key] = fp
                if previous is not None and fp != previous:
                    woken = self.wake_zone(zone_key(carbon))
                    self.zone_wakes += 1
                    if self._on_zone_wake is not None:
                        self._on_zone_wake()
                    log.info("signal %s/%s changed: woke %d job(s)", reading.provider, reading.zone, woken)
                delay = min(delay, self._due_in(reading, signal.ttl_s))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.05, delay))

    def _due_in(self, reading: SignalReading, ttl_s: float) -> float:
        """Wall seconds until this reading may change: its TTL, or the end of its current interval."""
        speed = float(getattr(self._clock, "speed", 1.0))
        due = ttl_s / speed
        if reading.current is not None:
            due = min(due, wall_seconds_until(self._clock, reading.current.end))
        return due
