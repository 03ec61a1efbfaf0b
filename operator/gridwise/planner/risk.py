"""How wrong the forecast may be: plan on a pessimistic future, so deferring must beat the error.

Shared by the live operator (decide.py) and the simulator, which runs decide(): both shade the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gridwise.carbon.reading import IntensityPoint

# The forecast policy plans on forecast + this share of the upper error band (the ensemble's upper
# quantile) at each lead. Chosen on Jan-Jun 2022 of ES, US-CAL-CISO and NO among 0, 0.5, 1, 1.5:
# 0.5 had the lowest summed emissions there and no run worse than run-now (BENCHMARKS.md, issue 13).
DEFAULT_RISK_FRACTION = 0.5


def shade(values: tuple[float, ...], upper_error: tuple[float, ...], fraction: float) -> tuple[float, ...]:
    """Raise each forecast value by `fraction` of how much higher the actual may be at its lead.

    Planning on this pessimistic future defers work only when the forecast saving beats the forecast's
    error at that horizon: an unforecastable grid (large errors) leaves nothing worth waiting for and
    the plan degrades towards running now at the energy-cheapest width.
    """
    if not math.isfinite(fraction) or fraction < 0:
        raise ValueError(f"the shading fraction must be >= 0, got {fraction}")
    return tuple(v + fraction * max(0.0, e) for v, e in zip(values, upper_error, strict=True))


def shade_points(
    points: Sequence[IntensityPoint], upper_error: Sequence[float], fraction: float
) -> list[IntensityPoint]:
    """`shade` on intensity points: same intervals, raised values."""
    values = shade(tuple(p.grams_per_kwh for p in points), tuple(upper_error), fraction)
    return [IntensityPoint(p.start, p.end, v) for p, v in zip(points, values, strict=True)]
