"""What a fresh reading forecasts: the ensemble over the signal's history, with the provider's own
forecast as one of its members, and the error band per point.

One function for the live CarbonSignal and for the simulator, so a simulated reading is the reading
the operator would have had: the provider's current value (not a prediction of it), then the ensemble
from the end of the current interval on. Pure: no I/O, no clock (`now` is passed in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gridwise.carbon.ensemble import EnsembleForecaster
from gridwise.carbon.reading import IntensityPoint

# How far ahead a reading forecasts at least (a provider's longer forecast extends it, up to the cap):
# the jobs' default planning horizon (api.DEFAULT_FORECAST_HORIZON_HOURS), one week.
DEFAULT_HORIZON = timedelta(hours=168)
MAX_HORIZON = timedelta(days=14)
# One ensemble per shared signal: its memo holds every scored issue time of one call (57 x 6 members
# with the default settings) and the newest predictions; older entries are evicted first.
LIVE_MEMO_SIZE = 512
# The signal's own history is capped in points too (21+ days of 5-minute data fit).
MAX_HISTORY_POINTS = 8192


@dataclass(frozen=True)
class Outlook:
    forecast: tuple[IntensityPoint, ...]
    upper_error: tuple[float, ...]  # per forecast point, g/kWh
    note: str  # appended to the reading's reason


def live_forecaster() -> EnsembleForecaster:
    """The forecaster one live signal keeps (bounded memo)."""
    return EnsembleForecaster(memo_size=LIVE_MEMO_SIZE)


def history_to_keep(forecaster: EnsembleForecaster) -> timedelta:
    """How much past a signal keeps: what the ensemble uses (window + scored days + a day), plus a day."""
    settings = forecaster.settings
    return timedelta(days=settings.window_days + settings.score_days + 2)


def outlook(
    forecaster: EnsembleForecaster,
    history: Sequence[IntensityPoint],
    current: IntensityPoint | None,
    provider_forecast: Sequence[IntensityPoint],
    *,
    now: datetime,
    horizon: timedelta = DEFAULT_HORIZON,
) -> Outlook:
    """The forecast from the end of the current value (or now) to `horizon` ahead, and its band.

    `history` is the past the signal knows (the current value is added if it is not in it yet); the
    provider's forecast is recorded with that history and weighted by the error its earlier ones made.
    """
    past = list(history)
    if current is not None and (not past or current.start >= past[-1].end):
        past.append(current)
    start = max(now, past[-1].end) if past else now
    end = start + horizon
    if provider_forecast:
        end = max(end, min(provider_forecast[-1].end, start + MAX_HORIZON))
    given = tuple(p for p in provider_forecast if p.end > start)
    try:
        points, upper = forecaster.live(past, provider_forecast, start, end)
    except ValueError as exc:  # a provider interval that does not divide a day, say
        return Outlook(given, (0.0,) * len(given), f"; the provider's forecast as given ({exc})")
    if not points:
        note = "; no history yet: the provider's forecast as given" if given else "; no history yet"
        return Outlook(given, (0.0,) * len(given), note)
    hours = (points[-1].end - start).total_seconds() / 3600
    member = ", the provider's forecast one of its members" if provider_forecast else ""
    return Outlook(points, upper, f"; {hours:.0f} h forecast by the ensemble{member}")
