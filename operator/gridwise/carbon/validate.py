"""Sanity checks on provider answers: garbage must become a stale reading, not a bad schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from gridwise.carbon.errors import ProviderError
from gridwise.carbon.reading import IntensityPoint, ProviderResult

# No real grid exceeds ~1,200 gCO2/kWh on average; marginal coal is ~1,000. 5,000 is surely garbage.
MAX_GRAMS_PER_KWH: Final = 5000.0
LBS_PER_MWH_TO_G_PER_KWH: Final = 0.453592
# Clock skew we forgive: a point stamped this far ahead of our clock may still stand for now.
FUTURE_SLACK: Final = timedelta(minutes=5)


def check_value(value: object, what: str) -> float:
    """A finite number in [0, MAX]; anything else is a provider fault."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderError(f"{what} is not a number ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise ProviderError(f"{what} is not finite ({number})")
    if number < 0:
        raise ProviderError(f"{what} is negative ({number:g} g/kWh)")
    if number > MAX_GRAMS_PER_KWH:
        raise ProviderError(f"{what} is absurd ({number:g} g/kWh > {MAX_GRAMS_PER_KWH:g})")
    return number


def check_series(points: Sequence[IntensityPoint], what: str) -> tuple[IntensityPoint, ...]:
    """Ordered, non-overlapping, gap-free points; a gap means the provider lost data."""
    tolerance = timedelta(seconds=1)
    for index, point in enumerate(points):
        if point.end <= point.start:
            raise ProviderError(f"{what} point {index} has a non-positive duration")
        if index:
            previous = points[index - 1]
            if point.start < previous.end - tolerance:
                raise ProviderError(f"{what} points overlap or are out of order at {point.start.isoformat()}")
            if point.start > previous.end + tolerance:
                gap_min = (point.start - previous.end).total_seconds() / 60
                raise ProviderError(f"{what} has a gap of {gap_min:.0f} min after {previous.end.isoformat()}")
    return tuple(points)


def check_timeliness(result: ProviderResult, now: datetime, provider: str) -> None:
    """A fresh reading needs a current value that covers now: not stamped in the future, not over.

    A provider whose clock or data is wrong (a value for tomorrow, yesterday's last value) must give a
    stale reading that says so, never a "fresh" value the planner would act on.
    """
    current = result.current
    if current is None:
        raise ProviderError(f"{provider}: no value covers now", retryable=False)
    if current.start > now + FUTURE_SLACK:
        ahead = (current.start - now).total_seconds() / 60
        raise ProviderError(
            f"{provider}: current value is stamped {ahead:.0f} min in the future; ignored", retryable=False
        )
    if current.end <= now:
        ago = (now - current.end).total_seconds() / 60
        raise ProviderError(
            f"{provider}: latest value ended {ago:.0f} min ago; it does not cover now", retryable=False
        )
