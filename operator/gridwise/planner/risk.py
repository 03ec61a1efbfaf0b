"""How wrong the forecast may be: plan on a pessimistic future, so deferring must beat the error.

Shared by the live operator (decide.py) and the simulator, which runs decide(): both shade the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from gridwise.carbon.reading import IntensityPoint

# The forecast policy plans on forecast + this share of the upper error band (the ensemble's upper
# quantile) at each lead, ramped in over DEFAULT_RISK_RAMP_HOURS (below). Chosen on Jan-Jun 2022 of
# ES, US-CAL-CISO and NO among 0, 0.5, 1, 1.5 (with no ramp): 0.5 had the lowest summed emissions
# there and no run worse than run-now (BENCHMARKS.md, issue 13).
DEFAULT_RISK_FRACTION = 0.5
# ... reached in full only this far ahead: a point `lead` hours ahead is shaded by
# fraction x min(1, lead / ramp) of its band. A near slot is re-planned within the hour, so trusting its
# forecast risks one slot; work committed to a far slot is what a wrong forecast can trap against the
# deadline. Chosen on the same H1 data among 6, 12, 18, 24, 36 and 48 h (and fractions 0.4-1; no ramp
# was the shipped rule): 24 h at 0.5 emitted less than no ramp on both job mixes, 6 and 12 start dates
# per trace, with no worse worst run over the 12 (BENCHMARKS.md, issue 13).
DEFAULT_RISK_RAMP_HOURS = 24.0


def lead_weight(lead_hours: float, ramp_hours: float) -> float:
    """Share of the shading applied `lead_hours` ahead: rises linearly from 0 now to 1 at `ramp_hours`."""
    if not math.isfinite(ramp_hours) or ramp_hours < 0:
        raise ValueError(f"the shading ramp must be >= 0 hours, got {ramp_hours}")
    if ramp_hours == 0:
        return 1.0
    return min(1.0, max(0.0, lead_hours) / ramp_hours)


def shade(
    values: tuple[float, ...],
    upper_error: tuple[float, ...],
    fraction: float,
    leads_hours: tuple[float, ...] | None = None,
    ramp_hours: float = 0.0,
) -> tuple[float, ...]:
    """Raise each forecast value by `fraction` of how much higher the actual may be at its lead.

    Planning on this pessimistic future defers work only when the forecast saving beats the forecast's
    error at that horizon: an unforecastable grid (large errors) leaves nothing worth waiting for and
    the plan degrades towards running now at the energy-cheapest width. With `leads_hours` (each value's
    lead) and a `ramp_hours` > 0 the share grows with the lead (`lead_weight`): near values are trusted.
    """
    if not math.isfinite(fraction) or fraction < 0:
        raise ValueError(f"the shading fraction must be >= 0, got {fraction}")
    leads = leads_hours if leads_hours is not None else (math.inf,) * len(values)
    return tuple(
        v + fraction * lead_weight(lead, ramp_hours) * max(0.0, e)
        for v, e, lead in zip(values, upper_error, leads, strict=True)
    )


def shade_points(
    points: Sequence[IntensityPoint],
    upper_error: Sequence[float],
    fraction: float,
    now: datetime | None = None,
    ramp_hours: float = 0.0,
) -> list[IntensityPoint]:
    """`shade` on intensity points: same intervals, raised values; leads count from `now` to each start."""
    leads = None if now is None else tuple((p.start - now).total_seconds() / 3600 for p in points)
    values = shade(tuple(p.grams_per_kwh for p in points), tuple(upper_error), fraction, leads, ramp_hours)
    return [IntensityPoint(p.start, p.end, v) for p, v in zip(points, values, strict=True)]
