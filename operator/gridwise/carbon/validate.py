"""Sanity checks on provider answers: garbage must become a stale reading, not a bad schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from gridwise.carbon.errors import ProviderError
from gridwise.carbon.reading import IntensityPoint

# No real grid exceeds ~1,200 gCO2/kWh on average; marginal coal is ~1,000. 5,000 is surely garbage.
MAX_GRAMS_PER_KWH: Final = 5000.0
LBS_PER_MWH_TO_G_PER_KWH: Final = 0.453592


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
