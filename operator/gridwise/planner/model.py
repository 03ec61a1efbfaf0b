"""The planner's inputs and outputs: plain frozen values, so a plan is a pure function of its request."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, NamedTuple, overload

from gridwise.carbon.reading import IntensityPoint
from gridwise.planner.slots import Grid

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


class SlotColumns(Sequence[PlanSlot]):
    """A plan's slots as columns (the grid and a replica count per slot); a PlanSlot is made when read.

    A decision reads the replica counts and at most one slot's times, so the operator never builds
    the two weeks of slot objects a plan describes.
    """

    __slots__ = ("grid", "replicas")

    def __init__(self, grid: Grid, replicas: Sequence[int]) -> None:
        if len(replicas) != len(grid):
            raise ValueError(f"{len(replicas)} replica counts for {len(grid)} slots")
        self.grid, self.replicas = grid, tuple(replicas)

    def __len__(self) -> int:
        return len(self.replicas)

    @overload
    def __getitem__(self, index: int) -> PlanSlot: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[PlanSlot, ...]: ...
    def __getitem__(self, index: int | slice) -> PlanSlot | tuple[PlanSlot, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        g = self.grid
        return PlanSlot(g.start(index), g.end(index), self.replicas[index], g.intensity[index])

    def __iter__(self) -> Iterator[PlanSlot]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"SlotColumns({list(self)!r})"


@dataclass(frozen=True)
class Plan:
    slots: Sequence[PlanSlot]  # SlotColumns from plan(); any sequence of PlanSlot works
    feasible: bool
    reason: str
    expected_emissions_g: float
    expected_energy_kwh: float
    finish_time: datetime | None
    pauses: int = 0

    @property
    def replicas(self) -> tuple[int, ...]:
        """The replica count of every slot, in order (no slot objects built)."""
        if isinstance(self.slots, SlotColumns):
            return self.slots.replicas
        return tuple(s.replicas for s in self.slots)

    @property
    def replicas_now(self) -> int:
        replicas = self.replicas
        return replicas[0] if replicas else 0

    def next_change(self) -> PlanSlot | None:
        """The first slot whose replica count differs from now's: when the operator must act next."""
        now = self.replicas_now
        index = next((i for i, n in enumerate(self.replicas) if n != now), None)
        return None if index is None else self.slots[index]

    def kept_from_now(self) -> timedelta:
        """How long the plan keeps now's replica count before its first change (or its end)."""
        change = self.next_change()
        if not self.slots:
            return timedelta()
        until = change.start if change is not None else self.slots[-1].end
        return until - self.slots[0].start
