"""The planner's inputs and outputs: plain frozen values, so a plan is a pure function of its request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple

from gridwise.carbon.reading import IntensityPoint

POLICIES: Final = ("agnostic", "threshold", "forecast", "oracle")
# Work lost to one resume (checkpoint load, process start, warm-up), in GPU-hours at one replica.
DEFAULT_SWITCHING_COST_GPU_HOURS: Final = 0.1


@dataclass(frozen=True)
class PlanRequest:
    """Everything a plan depends on. Work is in GPU-hours at one replica (what one replica does in an hour).

    Throughput at n replicas, in GPU-hours of work per hour, is `throughput_table[n]` when given
    (measured, normalised to one replica = 1.0; missing counts are interpolated), else
    n * scaling_efficiency ** log2(n): each doubling of replicas keeps `scaling_efficiency` of the
    per-replica speed (1.0 = perfect linear scaling).
    """

    now: datetime
    deadline: datetime
    remaining_work_gpu_hours: float
    min_replicas: int
    max_replicas: int
    power_per_replica_watts: float
    forecast: Sequence[IntensityPoint]
    policy: str
    threshold_grams_per_kwh: float | None = None
    scaling_efficiency: float = 1.0
    throughput_table: Mapping[int, float] | None = None
    switching_cost_gpu_hours: float = DEFAULT_SWITCHING_COST_GPU_HOURS
    max_pauses_per_day: int | None = None
    current_replicas: int = 0
    slot_minutes: int = 60
    pauses_in_last_day: int = 0


class PlanSlot(NamedTuple):
    """Run `replicas` (0 = paused) over [start, end); `intensity` is what the planner assumed, gCO2/kWh.

    A named tuple, not a dataclass: a plan has one per slot to the deadline (up to two weeks of
    them) and a zone wake plans every job: a named tuple is built in a third of the time.
    """

    start: datetime
    end: datetime
    replicas: int
    intensity: float


@dataclass(frozen=True)
class Plan:
    slots: tuple[PlanSlot, ...]
    feasible: bool
    reason: str
    expected_emissions_g: float
    expected_energy_kwh: float
    finish_time: datetime | None
    pauses: int = 0

    @property
    def replicas_now(self) -> int:
        return self.slots[0].replicas if self.slots else 0

    def next_change(self) -> PlanSlot | None:
        """The first slot whose replica count differs from now's: when the operator must act next."""
        now = self.replicas_now
        return next((slot for slot in self.slots if slot.replicas != now), None)
