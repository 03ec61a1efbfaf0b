"""A constant intensity: for demos, tests, and clusters that only want the planner's deadline logic."""

from __future__ import annotations

from datetime import datetime, timedelta

from gridwise.carbon.reading import IntensityPoint, ProviderResult
from gridwise.carbon.secrets import Secret
from gridwise.carbon.validate import check_value
from gridwise.clock import Clock

HOUR = timedelta(hours=1)


class StaticProvider:
    name = "static"
    secrets: tuple[Secret, ...] = ()

    def __init__(self, *, zone: str, signal_type: str, grams_per_kwh: float, clock: Clock, hours: int = 48):
        self.zone = zone
        self.signal_type = signal_type
        self._value = check_value(grams_per_kwh, "staticGramsPerKWh")
        self._clock = clock
        self._hours = hours

    async def fetch(self) -> ProviderResult:
        now = self._clock.now()
        hour = now.replace(minute=0, second=0, microsecond=0)
        points = tuple(
            IntensityPoint(hour + HOUR * i, hour + HOUR * (i + 1), self._value) for i in range(self._hours)
        )
        return ProviderResult(current=points[0], forecast=points, signal_type=self.signal_type)

    def history(self, until: datetime, span: timedelta) -> tuple[IntensityPoint, ...]:
        return ()

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticProvider(zone={self.zone!r}, grams_per_kwh={self._value})"
