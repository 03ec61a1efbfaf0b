"""Injected time, so a real trace can be replayed fast through the same code that runs live.

Everything in gridwise that asks "what time is it" or "wait a while" takes a `Clock`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...

    def at_wall(self, unix_seconds: float) -> datetime:
        """This clock's time at a wall-clock instant: where a timestamp the cluster wrote falls."""
        ...


class SystemClock:
    """Wall-clock time: what the live operator uses by default."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def at_wall(self, unix_seconds: float) -> datetime:
        return datetime.fromtimestamp(unix_seconds, UTC)


class ReplayClock:
    """Time that starts at `start` and runs `speed` times faster than the wall clock.

    A demo replays a day of grid data in a minute with speed=1440.
    """

    def __init__(self, start: datetime, speed: float = 1.0, anchor: float | None = None) -> None:
        """`anchor` is the Unix time at which the replay is at `start` (default: now).

        A shared anchor puts several processes (operator replicas, a benchmark) on one timeline.
        """
        if start.tzinfo is None:
            raise ValueError("ReplayClock start must be timezone-aware (UTC)")
        if speed <= 0:
            raise ValueError(f"ReplayClock speed must be positive, got {speed}")
        self._start = start.astimezone(UTC)
        self._speed = speed
        self._wall0 = time.time() if anchor is None else anchor

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.time() - self._wall0) * self._speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._speed)

    def at_wall(self, unix_seconds: float) -> datetime:
        return self._start + timedelta(seconds=(unix_seconds - self._wall0) * self._speed)


class ManualClock:
    """Time that moves only when told to: for deterministic tests and the simulator."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock start must be timezone-aware (UTC)")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def set(self, when: datetime) -> None:
        if when < self._now:
            raise ValueError(f"ManualClock cannot go back from {self._now} to {when}")
        self._now = when

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)

    def at_wall(self, unix_seconds: float) -> datetime:
        """Timestamps are taken as this clock's own time (tests write them in it)."""
        return datetime.fromtimestamp(unix_seconds, UTC)


def as_utc(when: datetime) -> datetime:
    """`when` in UTC; a naive time is taken as UTC, as every source here speaks it."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_utc(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 time in UTC (see `as_utc`); surrounding spaces are refused, not trimmed.

    Raises ValueError (or OverflowError at the edges of datetime); callers turn it into their own error.
    """
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
