"""Energy, emissions and the emissions avoided against running at once, integrated tick by tick.

Pure arithmetic on the previous totals, so a restarted operator continues from the totals it
wrote into the CarbonAwareJob's status and loses nothing. What it counts, and why:

- Work comes from pods that are Running and not terminating (Pending pods do no work), or from
  the trainer's own progress when it reports.
- Energy comes from pods that are Running, terminating ones included (a pod that checkpoints
  after SIGTERM still draws power), or from the trainer's energy counter when it reports.
- An interval is split where the pod counts changed: at each new pod's start where the pods say
  when they started, at the Job's finish where it says when, else half at the old count and half
  at the new (the change happened somewhere in between); and where the intensity changed.
- Time before the first carbon reading is kept as unpriced energy and booked at the first value
  that arrives, instead of at 0 g forever.
- Avoided emissions are split into a timing part (same energy, the baseline's intensity) and a
  width part (the baseline's extra or saved energy per unit of work, at the baseline's
  intensity); the two add up to the total.
- The baseline is of the same kind as the job's own energy. It is modelled (max replicas at
  powerPerReplicaWatts), and scaled by the job's energy over what that model gives for the
  job's own pods over the same intervals: with the trainer measuring a GPU that draws half its
  nameplate, the baseline draws half too, and the width part is about width alone. The ratio is
  cumulative and applies to the whole baseline, because the baseline mostly runs while the job
  is paused and nothing is measured.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from gridwise.planner.scaling import throughputs

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Usage:
    """Pods of the job at one observation."""

    working: int = 0  # Running and not terminating: training
    drawing: int = 0  # Running, terminating included: drawing power


@dataclass(frozen=True)
class Model:
    """The manifest's estimates, used where nothing was measured."""

    power_per_replica_watts: float
    scaling_efficiency: float
    max_replicas: int
    work_gpu_hours: float


@dataclass(frozen=True)
class Avoided:
    timing_grams: float = 0.0
    width_grams: float = 0.0

    @property
    def total_grams(self) -> float:
        return self.timing_grams + self.width_grams


@dataclass(frozen=True)
class Totals:
    """Running totals kept in status; grams are gCO2(e) in the job's signal type."""

    energy_joules: float = 0.0
    emissions_grams: float = 0.0
    work_done_gpu_hours: float = 0.0
    # The run-now counterfactual: the job started at once at max replicas.
    baseline_energy_joules: float = 0.0
    baseline_emissions_grams: float = 0.0
    baseline_work_gpu_hours: float = 0.0
    # Energy used while no carbon reading existed yet; priced at the first reading.
    unpriced_energy_joules: float = 0.0
    unpriced_baseline_energy_joules: float = 0.0
    # What the nameplate model gives for the job's own pods over the intervals accounted so far.
    # None: nothing was ever measured (totals from before this field), i.e. equal to energy_joules.
    model_energy_joules: float | None = None

    @property
    def baseline_scale(self) -> float:
        """The job's energy over the model's for it: scales the modelled baseline to the same kind."""
        model = self.energy_joules if self.model_energy_joules is None else self.model_energy_joules
        return self.energy_joules / model if model > 0 else 1.0

    @property
    def scaled_baseline_emissions_grams(self) -> float:
        """The baseline's emissions, of the same kind as the job's (measured where the job's are)."""
        return self.baseline_emissions_grams * self.baseline_scale

    @property
    def baseline_grams_per_gpu_hour(self) -> float | None:
        if self.baseline_work_gpu_hours <= 0:
            return None
        return self.scaled_baseline_emissions_grams / self.baseline_work_gpu_hours

    def avoided(self) -> Avoided:
        """Baseline emissions for the work done so far, less the emissions, as timing + width.

        With e = J per GPU-hour of work and i = g per J: avoided = W*eB*iB - W*eA*iA
        = W*eA*(iB - iA) [timing] + W*(eB - eA)*iB [width]. eB is the modelled baseline's, scaled
        by `baseline_scale` (iB is a ratio of the two baseline sums, which the scale leaves alone).
        """
        work = self.work_done_gpu_hours
        priced = self.energy_joules - self.unpriced_energy_joules
        base_priced = self.baseline_energy_joules - self.unpriced_baseline_energy_joules
        if work <= 0 or self.baseline_work_gpu_hours <= 0 or base_priced <= 0:
            return Avoided()
        e_b = self.baseline_scale * self.baseline_energy_joules / self.baseline_work_gpu_hours
        i_b = self.baseline_emissions_grams / base_priced
        e_a = self.energy_joules / work
        i_a = self.emissions_grams / priced if priced > 0 else i_b
        return Avoided(timing_grams=work * e_a * (i_b - i_a), width_grams=work * (e_b - e_a) * i_b)

    def avoided_grams(self) -> float:
        return self.avoided().total_grams


def throughput(replicas: int, scaling_efficiency: float) -> float:
    """GPU-hours of single-replica work done per hour at `replicas`: the planner's scaling model."""
    return throughputs(max(replicas, 0), scaling_efficiency, None)[max(replicas, 0)]


def intensity_at(changes: Sequence[tuple[datetime, float | None]], when: datetime) -> float | None:
    """The intensity in force at `when`: the last change at or before it (None before the first)."""
    value: float | None = None
    for start, grams in changes:
        if start <= when:
            value = grams
        else:
            break
    return value


def usage_steps(
    start: datetime,
    end: datetime,
    before: Usage,
    after: Usage,
    started: Sequence[datetime] = (),
    ended: datetime | None = None,
) -> list[tuple[datetime, Usage]]:
    """When, inside [start, end), the pods went from `before` to `after`: (from, usage) steps.

    Pods were added and the new ones' start times are known (`started`: when each working pod
    began running): one step each, at its start. The newest starts are the new pods; a start
    before `start` counts from `start`. All pods stopped and the Job says when it finished
    (`ended`): one step there. Otherwise the change happened somewhere in between, and it is
    booked at the midpoint. The difference matters after a long gap (an operator restart, an API
    server outage): a pod that was Pending at the last tick 40 s ago and Running now ran since its
    start, not for the second half of the gap; a job that finished 5 s into the gap drew nothing
    for the other 35.
    """
    if ended is not None and after == Usage() and before != after:
        return [(min(max(ended, start), end), after)]
    added = after.working - before.working
    if added > 0 and after.drawing - before.drawing == added and len(started) >= added:
        newest = sorted(started)[-added:]
        steps: list[tuple[datetime, Usage]] = []
        for i, when in enumerate(newest, start=1):
            usage = Usage(before.working + i, before.drawing + i)
            steps.append((min(max(when, start), end), usage))
        return steps
    return [(start + (end - start) / 2, after)]


def _usage_at(before: Usage, steps: Sequence[tuple[datetime, Usage]], when: datetime) -> Usage:
    usage = before
    for at, step in steps:
        if at <= when:
            usage = step
    return usage


def _segments(
    start: datetime,
    end: datetime,
    before: Usage,
    steps: Sequence[tuple[datetime, Usage]],
    changes: Sequence[tuple[datetime, float | None]],
) -> list[tuple[float, Usage, float | None]]:
    """(seconds, usage, intensity) pieces of [start, end), cut at usage steps and intensity changes."""
    inside = [t for t, _ in (*steps, *changes) if start < t < end]
    cuts = sorted({start, end, *inside})
    out: list[tuple[float, Usage, float | None]] = []
    for a, b in itertools.pairwise(cuts):
        seconds = (b - a).total_seconds()
        if seconds > 0:
            out.append((seconds, _usage_at(before, steps, a), intensity_at(changes, a)))
    return out


def _price(totals: Totals, energy: float, base_energy: float, intensity: float | None) -> Totals:
    if intensity is None:
        return replace(
            totals,
            unpriced_energy_joules=totals.unpriced_energy_joules + energy,
            unpriced_baseline_energy_joules=totals.unpriced_baseline_energy_joules + base_energy,
        )
    # The first value back-fills the time before it.
    energy += totals.unpriced_energy_joules
    base_energy += totals.unpriced_baseline_energy_joules
    return replace(
        totals,
        emissions_grams=totals.emissions_grams + energy / J_PER_KWH * intensity,
        baseline_emissions_grams=totals.baseline_emissions_grams + base_energy / J_PER_KWH * intensity,
        unpriced_energy_joules=0.0,
        unpriced_baseline_energy_joules=0.0,
    )


def advance(
    totals: Totals,
    *,
    start: datetime,
    end: datetime,
    before: Usage,
    after: Usage,
    intensities: Sequence[tuple[datetime, float | None]],
    model: Model,
    measured_energy_joules: float | None = None,
    measured_work_gpu_hours: float | None = None,
    started: Sequence[datetime] = (),
    ended: datetime | None = None,
) -> Totals:
    """Adds the interval [start, end) to the totals.

    The pods changed from `before` to `after` at the times `usage_steps` gives (`started`: when
    each working pod began running, `ended`: when the Job finished, where known).

    `intensities` are (from, gCO2/kWh) changes in time order; None means no reading. Measured
    energy (the trainer's counter) and work (its progress) replace the model's estimates for the
    whole interval and are spread over its pieces in proportion to the model's energy and time.
    The baseline's energy stays modelled here; `model_energy_joules` keeps what the model gave for
    the job's pods over the same interval, so `Totals.baseline_scale` (measured over modelled)
    makes the baseline the same kind as the job's energy. An interval the model gives nothing for
    cannot calibrate it and counts as measured = modelled.
    """
    if end <= start:
        return totals
    steps = usage_steps(start, end, before, after, started, ended)
    pieces = _segments(start, end, before, steps, intensities)
    total_seconds = sum(s for s, _, _ in pieces)
    modeled: list[tuple[float, float]] = []  # (energy J, work GPU-h) per piece
    remaining = max(0.0, model.work_gpu_hours - totals.work_done_gpu_hours)
    for seconds, usage, _ in pieces:
        rate = throughput(usage.working, model.scaling_efficiency)
        # Estimated workers stop drawing power once the work is done: the trainer exits at its last step.
        busy = min(seconds, remaining / rate * 3600.0) if rate > 0 else 0.0
        work = rate * busy / 3600.0
        remaining = max(0.0, remaining - work)
        idle_drawing = max(0, usage.drawing - usage.working)
        energy = model.power_per_replica_watts * (usage.working * busy + idle_drawing * seconds)
        modeled.append((energy, work))
    model_energy = sum(e for e, _ in modeled)
    added = measured_energy_joules if measured_energy_joules is not None else model_energy
    model_before = totals.energy_joules if totals.model_energy_joules is None else totals.model_energy_joules
    out = replace(totals, model_energy_joules=model_before + (model_energy if model_energy > 0 else added))
    base_remaining = max(0.0, model.work_gpu_hours - totals.baseline_work_gpu_hours)
    base_rate = throughput(model.max_replicas, model.scaling_efficiency)
    work_left = max(0.0, model.work_gpu_hours - totals.work_done_gpu_hours)
    for (seconds, _, intensity), (energy, work) in zip(pieces, modeled, strict=True):
        if measured_energy_joules is not None:
            share = energy / model_energy if model_energy > 0 else seconds / total_seconds
            energy = measured_energy_joules * share
        if measured_work_gpu_hours is not None:
            work = measured_work_gpu_hours * seconds / total_seconds
        work = max(0.0, min(work, work_left))
        work_left -= work
        base_hours = min(seconds / 3600.0, base_remaining / base_rate) if base_rate > 0 else 0.0
        base_remaining = max(0.0, base_remaining - base_rate * base_hours)
        base_energy = model.max_replicas * model.power_per_replica_watts * base_hours * 3600.0
        out = replace(
            out,
            energy_joules=out.energy_joules + energy,
            work_done_gpu_hours=out.work_done_gpu_hours + work,
            baseline_energy_joules=out.baseline_energy_joules + base_energy,
            baseline_work_gpu_hours=out.baseline_work_gpu_hours + base_rate * base_hours,
        )
        out = _price(out, energy, base_energy, intensity)
    return out


def changes_for(
    start: datetime,
    previous: float | None,
    current: float | None,
    current_from: datetime | None,
) -> list[tuple[datetime, float | None]]:
    """Intensity changes over an interval from `start`: the value booked last tick, then the current one.

    The current reading takes over where its slot starts (or at `start`). While no reading has
    ever arrived both are None, and the energy waits, unpriced, for the first value.
    """
    if current is None:
        return [(start, previous)]
    return [(start, previous), (max(start, current_from or start), current)]
