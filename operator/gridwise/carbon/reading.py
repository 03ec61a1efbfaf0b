"""The values every provider hands back, in one unit (gCO2/kWh) with the signal type attached.

Average and marginal intensities are different quantities, so a reading never travels without its type.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

SIGNAL_TYPES: Final = ("average", "marginal")
EMISSION_FACTORS: Final = ("direct", "lifecycle", "unknown")


@dataclass(frozen=True)
class IntensityPoint:
    """Carbon intensity valid over [start, end), in gCO2(eq)/kWh."""

    start: datetime
    end: datetime
    grams_per_kwh: float

    def covers(self, when: datetime) -> bool:
        return self.start <= when < self.end

    @cached_property
    def span_s(self) -> tuple[float, float]:
        """[start, end) in epoch seconds, worked out once: every job of a zone re-plans on these points."""
        return (self.start - EPOCH).total_seconds(), (self.end - EPOCH).total_seconds()


@dataclass(frozen=True)
class ProviderResult:
    """What one successful provider call returned, already converted to gCO2/kWh and validated.

    `forecast_unavailable` says why the provider served no forecast although its current value
    came back (its forecast endpoint is a paid tier the credentials lack); "" when it served one.
    """

    current: IntensityPoint | None
    forecast: tuple[IntensityPoint, ...]
    signal_type: str
    emission_factor: str = "unknown"
    forecast_unavailable: str = ""


@dataclass(frozen=True)
class SignalReading:
    """What the operator sees: never an exception, at worst a stale reading that says why.

    `forecast_upper` is, per forecast point, how much higher the actual may be (the forecaster's
    measured upper error at that lead, g/kWh): the planner shades the forecast with it. Empty = no band.
    """

    zone: str
    provider: str
    signal_type: str  # "average" | "marginal"
    current: IntensityPoint | None
    forecast: tuple[IntensityPoint, ...]
    stale: bool
    reason: str
    fetched_at: datetime
    emission_factor: str = "unknown"  # "direct" | "lifecycle" | "unknown"
    # Why the provider's own forecast is missing (a refused paid tier); the forecast is then ours.
    forecast_unavailable: str = ""
    forecast_upper: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.forecast_upper and len(self.forecast_upper) != len(self.forecast):
            have, want = len(self.forecast_upper), len(self.forecast)
            raise ValueError(f"forecast_upper has {have} values for {want} forecast points")

    def upper_error(self) -> tuple[float, ...]:
        """The band per forecast point (zeros when the reading has none)."""
        return self.forecast_upper or (0.0,) * len(self.forecast)
