"""One reconcile of a CarbonAwareJob, pure: (spec, status, observed, now) -> (status, Job change, Events).

The Kubernetes side (gridwise.k8s.reconciler) observes the Job, its pods, the trainer and the carbon
signal, calls `step`, applies the Job change and writes the status. Everything that can go wrong in
a tick is an input here (a missing Secret is a stale reading, a failed Job read is an observation
error, a rejected patch comes back through `act_failed`), so every outcome is a status a test can
check: a condition names the cause, a Warning Event is posted when the cause first appears, and the
job keeps (or starts) running when its deadline needs it.

Status follows the Kubernetes API conventions: conditions carry observedGeneration, `Complete` and
`Failed` summarize the outcome (`kubectl wait --for=condition=Complete`), `phase` is a convenience.
`status.observedGeneration` is the generation whose spec the Job now reflects (or that was refused
with a condition), not merely the last one read. An invalid edit to a job whose Job exists is
refused (`SpecApplied=False`/`InvalidSpec`) and the job keeps running by the last accepted spec,
kept in `status.acceptedSpec`: the Job is never left running unguarded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from gridwise.accounting import Model, Totals, Usage, advance, changes_for
from gridwise.api import JobSpec, SpecError, format_time, parse_job_spec, parse_time
from gridwise.carbon import SignalReading
from gridwise.decide import (
    REASON_DEADLINE,
    SIGNAL_FOLLOWING_FORECAST,
    SIGNAL_FRESH,
    SIGNAL_OWN_FORECAST,
    Decision,
    deadline_width,
    decide,
    must_run_now,
    signal_step,
)
from gridwise.progress import TrainerSample, throughput_table

NORMAL, WARNING = "Normal", "Warning"

# Condition types, in the order status lists them.
COMPLETE = "Complete"
FAILED = "Failed"
SUSPENDED = "Suspended"
DEADLINE_AT_RISK = "DeadlineAtRisk"
SIGNAL_STALE = "CarbonSignalStale"
SPEC_APPLIED = "SpecApplied"
RECONCILED = "Reconciled"
KUEUE_MANAGED = "KueueManaged"
CONDITION_TYPES = (
    COMPLETE,
    FAILED,
    SUSPENDED,
    DEADLINE_AT_RISK,
    SIGNAL_STALE,
    SPEC_APPLIED,
    RECONCILED,
    KUEUE_MANAGED,
)

OWNER_US, OWNER_NONE, OWNER_OTHER = "us", "none", "other"

# Action kinds the actuator executes, in the order given.
CREATE, DELETE, ADOPT, SCALE, ANNOTATE = "create", "delete", "adopt", "scale", "annotate"

# Status fields that move every tick; the rest changing is a material change (see `material`).
VOLATILE = frozenset(
    {
        "accounting",
        "energyJoules",
        "emissionsGrams",
        "baselineEmissionsGrams",
        "avoidedEmissionsGrams",
        "avoidedEmissions",
        "avoidedEmissionsDisplay",
        "progress",
        "progressDisplay",
        "measuredThroughput",
        "carbonIntensity",
    }
)


@dataclass(frozen=True)
class Resource:
    """The CarbonAwareJob as the step sees it."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Resource:
        meta = body["metadata"]
        return cls(
            name=str(meta["name"]),
            namespace=str(meta.get("namespace") or ""),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            spec=body.get("spec") or {},
            labels=dict(meta.get("labels") or {}),
        )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class JobState:
    """The Job named after the CarbonAwareJob, as observed."""

    uid: str
    owner: str  # OWNER_US, OWNER_NONE (our labels, no controller reference) or OWNER_OTHER
    suspended: bool
    parallelism: int
    indexed: bool
    finished: str | None = None  # "Succeeded" | "Failed" once the Job is
    kueue: bool = False
    deleting: bool = False
    generation: int | None = None  # the CarbonAwareJob generation the Job was built or last stamped for
    shape: str | None = None  # fingerprint of the pod template it was built with

    @property
    def replicas(self) -> int:
        return 0 if self.suspended else self.parallelism


@dataclass(frozen=True)
class ObserveError:
    reason: str  # CamelCase, the Reconciled condition's reason
    message: str
    transient: bool = True


@dataclass(frozen=True)
class Observed:
    """What one tick saw. `job_known` False means the Job could not be read: nothing is created."""

    job: JobState | None
    reading: SignalReading
    desired_shape: str = ""
    pods: Usage = field(default_factory=Usage)
    pods_present: int = 0  # pods of the Job that exist and have not finished (any phase)
    pods_known: bool = True
    # When each working pod began running (the operator's clock), where its status says: accounting
    # books a pod that started during a long gap from its start, not from the gap's midpoint.
    started: tuple[datetime, ...] = ()
    ended: datetime | None = None  # when the Job finished (its pods had stopped), where it says
    trainer: TrainerSample | None = None
    job_known: bool = True
    error: ObserveError | None = None


@dataclass(frozen=True)
class Action:
    kind: str
    replicas: int = 0
    suspend: bool = True
    indexed: bool = False  # the observed Job's completion mode (a scale sets completions only if Indexed)


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class StepResult:
    status: dict[str, Any]
    change: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    spec: JobSpec | None = None
    decision: str = "none"  # pause, resume, scale or none
    decision_reason: str = ""
    # For act_failed: what the status says if the change is not applied.
    prior: Mapping[str, Any] = field(default_factory=dict)
    observed_replicas: int | None = None


# -- conditions ------------------------------------------------------------------------------------


def condition(type_: str, status: str | bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    if isinstance(status, bool):
        status = "True" if status else "False"
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "observedGeneration": generation,
    }


def merge_conditions(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """Keeps lastTransitionTime while a condition's status holds; orders by CONDITION_TYPES."""
    previous = {c.get("type"): c for c in old}
    merged: dict[Any, dict[str, Any]] = {
        c.get("type"): dict(c) for c in old if c.get("type") in CONDITION_TYPES
    }
    for cond in new:
        out = dict(cond)
        prev = previous.get(cond["type"])
        if prev is not None and prev.get("status") == cond["status"] and prev.get("lastTransitionTime"):
            out["lastTransitionTime"] = prev["lastTransitionTime"]
        else:
            out["lastTransitionTime"] = format_time(now)
        merged[cond["type"]] = out
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(merged.values(), key=lambda c: order.get(str(c.get("type")), 99))


def _find(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def _is_new(old: Sequence[Mapping[str, Any]], cond: Mapping[str, Any]) -> bool:
    """True when `cond` differs from the previous one in status or reason: the moment to post an Event."""
    prev = _find(old, cond["type"])
    return prev is None or prev.get("status") != cond["status"] or prev.get("reason") != cond["reason"]


def material(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when a status differs in more than the counters that move every tick."""

    def strip(s: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in s.items() if k not in VOLATILE}

    return strip(old) != strip(new)


# -- status pieces ---------------------------------------------------------------------------------


def _display_grams(grams: float) -> str:
    if abs(grams) >= 1000:
        return f"{grams / 1000:.2f}kg"
    return f"{round(grams)}g"  # an int: a float residue of nothing avoided reads 0g, not -0g


def totals_from(status: Mapping[str, Any]) -> Totals:
    acc = status.get("accounting") or {}
    return Totals(
        energy_joules=float(status.get("energyJoules", 0.0)),
        emissions_grams=float(status.get("emissionsGrams", 0.0)),
        work_done_gpu_hours=float(acc.get("workDoneGPUHours", 0.0)),
        baseline_energy_joules=float(acc.get("baselineEnergyJoules", 0.0)),
        baseline_emissions_grams=float(status.get("baselineEmissionsGrams", 0.0)),
        baseline_work_gpu_hours=float(acc.get("baselineWorkGPUHours", 0.0)),
        unpriced_energy_joules=float(acc.get("unpricedEnergyJoules", 0.0)),
        unpriced_baseline_energy_joules=float(acc.get("unpricedBaselineEnergyJoules", 0.0)),
        model_energy_joules=(
            float(acc["modelEnergyJoules"]) if acc.get("modelEnergyJoules") is not None else None
        ),
    )


@dataclass(frozen=True)
class Accounted:
    totals: Totals
    trainer_energy: float | None
    source: str
    usage: Usage
    intensity: float | None
    rates: dict[int, float]


def account(spec: JobSpec, status: Mapping[str, Any], observed: Observed, now: datetime) -> Accounted:
    """Adds the time since the last tick at the pods that ran and the intensity in force."""
    totals = totals_from(status)
    acc = status.get("accounting") or {}
    last = parse_time(acc["lastTime"]) if acc.get("lastTime") else now
    before = Usage(int(acc.get("workingPods", 0)), int(acc.get("drawingPods", 0)))
    after = observed.pods if observed.pods_known else before
    previous_intensity = acc.get("gramsPerKWh")
    previous = float(previous_intensity) if previous_intensity is not None else None
    reading = observed.reading
    current = None
    current_from = None
    if signal_step(reading, now) != "NoUsableSignal":
        point = _point_now(reading, now)
        if point is not None:
            current, current_from = point.grams_per_kwh, point.start
    measured_energy: float | None = None
    measured_work: float | None = None
    trainer_energy: float | None = None
    source = "estimate"
    rates: dict[int, float] = {}
    sample = observed.trainer
    if sample is not None:
        source = "trainer"
        prev = acc.get("trainerEnergyJoules")
        if prev is not None and sample.energy_joules >= float(prev):
            measured_energy = sample.energy_joules - float(prev)
        trainer_energy = sample.energy_joules
        measured_work = max(0.0, sample.progress * spec.work_gpu_hours - totals.work_done_gpu_hours)
        rates = dict(sample.throughput)
    totals = advance(
        totals,
        start=last,
        end=now,
        before=before,
        after=after,
        intensities=changes_for(last, previous, current, current_from),
        model=Model(
            power_per_replica_watts=spec.power_per_replica_watts,
            scaling_efficiency=spec.scaling_efficiency,
            max_replicas=spec.max_replicas,
            work_gpu_hours=spec.work_gpu_hours,
        ),
        measured_energy_joules=measured_energy,
        measured_work_gpu_hours=measured_work,
        started=observed.started,
        ended=observed.ended,
    )
    booked = current if current is not None else previous
    return Accounted(totals, trainer_energy, source, after, booked, rates)


def _point_now(reading: SignalReading, now: datetime) -> Any:
    for point in (reading.current, *reading.forecast):
        if point is not None and point.start <= now < point.end:
            return point
    return reading.current if not reading.stale else None


def _recent_pauses(status: Mapping[str, Any], now: datetime) -> list[str]:
    return [t for t in status.get("pauseTimes") or [] if now - parse_time(t) < timedelta(days=1)][-200:]


def _signal_condition(reading: SignalReading, now: datetime, gen: int) -> dict[str, Any]:
    step_ = signal_step(reading, now)
    if step_ == SIGNAL_FRESH:
        return condition(SIGNAL_STALE, False, SIGNAL_FRESH, f"{reading.provider} answered", gen)
    if step_ == SIGNAL_OWN_FORECAST:
        # Not stale: the current value is fresh; only the provider's forecast is missing (its tier).
        return condition(SIGNAL_STALE, False, step_, _own_forecast_message(reading), gen)
    if step_ == SIGNAL_FOLLOWING_FORECAST:
        return condition(
            SIGNAL_STALE, True, step_, f"{reading.reason}; following the last good forecast", gen
        )
    return condition(
        SIGNAL_STALE, True, step_, f"{reading.reason}; running at the width the deadline requires", gen
    )


def _own_forecast_message(reading: SignalReading) -> str:
    detail = reading.reason.removeprefix("ok; ")
    return f"{detail}; planning on the current value and gridwise's own forecast"


def _signal_event(reading: SignalReading, cond: Mapping[str, Any]) -> Event:
    if cond["reason"] == SIGNAL_OWN_FORECAST:
        return Event(WARNING, SIGNAL_OWN_FORECAST, _own_forecast_message(reading))
    if cond["reason"] == SIGNAL_FOLLOWING_FORECAST:
        return Event(WARNING, SIGNAL_STALE, f"{reading.reason}; following the last good forecast")
    return Event(WARNING, SIGNAL_STALE, f"{reading.reason}; the job runs as its deadline requires")


def _carbon_status(reading: SignalReading, now: datetime) -> dict[str, Any] | None:
    point = _point_now(reading, now) or reading.current
    if point is None:
        return None
    g = point.grams_per_kwh
    return {
        "gramsPerKWh": round(g, 2),
        "signalType": reading.signal_type,
        "provider": reading.provider,
        "zone": reading.zone,
        "stale": reading.stale,
        "display": f"{g:.0f}g/kWh {reading.signal_type}{' (stale)' if reading.stale else ''}",
    }


def build_status(
    spec: JobSpec,
    *,
    now: datetime,
    phase: str,
    replicas: int,
    desired: int,
    accounted: Accounted,
    reading: SignalReading | None,
    pause_times: list[str],
    decision: Decision | None,
    conditions: list[dict[str, Any]],
    previous: Mapping[str, Any],
    measured: Mapping[int, float],
) -> dict[str, Any]:
    """The full status: pure, so its shape is unit-tested and every field has one writer."""
    totals = accounted.totals
    progress = min(1.0, totals.work_done_gpu_hours / spec.work_gpu_hours)
    if phase == "Succeeded":
        # The Job completes only when the trainer exited 0, i.e. ran its last step (the contract);
        # the last scrape before the pods went may have seen less.
        progress = 1.0
    avoided = totals.avoided()
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": previous.get("observedGeneration"),
        "acceptedTime": previous.get("acceptedTime") or format_time(now),
        "jobName": spec.name,
        "jobUID": previous.get("jobUID"),
        "replicas": replicas,
        "desiredReplicas": desired,
        "runningPods": accounted.usage.working,
        "deadline": format_time(spec.deadline),
        "progress": round(progress, 6),
        "progressDisplay": f"{progress * 100:.0f}%",
        "progressSource": accounted.source,
        # Unrounded: the next tick (and a restarted operator) continues from these, and a rounding
        # per tick would walk the totals away from what was drawn (0.004 g in 300 ticks).
        "energyJoules": totals.energy_joules,
        "emissionsGrams": totals.emissions_grams,
        # Modelled, as read back next tick: scaled only where it is compared (avoided), so a CRD
        # that prunes accounting.modelEnergyJoules degrades to the model instead of compounding.
        "baselineEmissionsGrams": totals.baseline_emissions_grams,
        "avoidedEmissionsGrams": round(avoided.total_grams, 3),
        "avoidedEmissions": {
            "timingGrams": round(avoided.timing_grams, 3),
            "widthGrams": round(avoided.width_grams, 3),
        },
        "avoidedEmissionsDisplay": _display_grams(avoided.total_grams),
        "pauseTimes": pause_times,
        "pausesToday": len(pause_times),
        "measuredThroughput": {str(n): round(r, 3) for n, r in sorted(measured.items())},
        "accounting": {
            "lastTime": format_time(now),
            "workDoneGPUHours": totals.work_done_gpu_hours,
            "baselineWorkGPUHours": totals.baseline_work_gpu_hours,
            "baselineEnergyJoules": totals.baseline_energy_joules,
            "modelEnergyJoules": totals.model_energy_joules,
            "unpricedEnergyJoules": totals.unpriced_energy_joules,
            "unpricedBaselineEnergyJoules": totals.unpriced_baseline_energy_joules,
            "trainerEnergyJoules": accounted.trainer_energy,
            "workingPods": accounted.usage.working,
            "drawingPods": accounted.usage.drawing,
            "gramsPerKWh": accounted.intensity,
        },
        "conditions": merge_conditions(previous.get("conditions") or [], conditions, now),
        "recreate": previous.get("recreate"),
        "acceptedSpec": previous.get("acceptedSpec"),
        "lastTransitionTime": previous.get("lastTransitionTime"),
        "carbonIntensity": _carbon_status(reading, now) if reading is not None else None,
        "nextChange": None,
    }
    if status["carbonIntensity"] is None:
        status["carbonIntensity"] = previous.get("carbonIntensity")
    if decision is not None and decision.next_change_time is not None:
        status["nextChange"] = {
            "time": format_time(decision.next_change_time),
            "replicas": decision.next_change_replicas,
            "reason": "Plan",
            "display": f"{decision.next_change_replicas}@{decision.next_change_time:%m-%d %H:%M}Z",
        }
    if replicas != int(previous.get("replicas", -1)):
        status["lastTransitionTime"] = format_time(now)
    return status


# -- which spec to act on ---------------------------------------------------------------------------


def _as_json(value: Any) -> Any:
    """json's fallback for the mapping views kopf hands out (and tuples' kin); the rest is json's own."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def spec_json(spec: Mapping[str, Any]) -> str:
    """The spec as status.acceptedSpec keeps it. Plain dicts and lists go through json's C encoder; only
    views are converted (copying the whole spec in Python first was 3% of a 1000-job zone wake)."""
    return json.dumps(spec, default=_as_json, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class EffectiveSpec:
    """The spec a tick acts on; `refused` says why the current one is not it ("" when it is)."""

    spec: JobSpec
    raw_json: str  # what status.acceptedSpec keeps
    refused: str = ""


def effective_spec(res: Resource, status: Mapping[str, Any], now: datetime) -> EffectiveSpec:
    """The current spec if it is valid; else, once a Job exists, the last accepted one.

    CEL cannot catch every invalid edit (a deadline past the horizon counts from acceptedTime,
    which CEL does not see). A running Job must not be left unguarded for it: the edit is refused
    and the job runs by the spec it had. Raises SpecError when there is nothing to fall back on.
    """
    accepted = parse_time(status["acceptedTime"]) if status.get("acceptedTime") else now
    try:
        return EffectiveSpec(parse_job_spec(res.name, res.namespace, res.spec, accepted), spec_json(res.spec))
    except SpecError as exc:
        stored = status.get("acceptedSpec")
        if not status.get("jobUID") or not isinstance(stored, str):
            raise
        try:
            last = json.loads(stored)
            spec = parse_job_spec(res.name, res.namespace, last, accepted)
        except (ValueError, TypeError, AttributeError):  # SpecError is a ValueError
            raise exc from None
        return EffectiveSpec(spec, stored, str(exc))


# -- the step --------------------------------------------------------------------------------------


def step(res: Resource, status: Mapping[str, Any], observed: Observed, now: datetime) -> StepResult:
    """One reconcile, decided. Raises nothing for any input a cluster can produce."""
    prior = dict(status)
    old_conds: list[Mapping[str, Any]] = list(prior.get("conditions") or [])
    gen = res.generation
    try:
        effective = effective_spec(res, prior, now)
    except SpecError as exc:
        return _refused(prior, now, gen, str(exc))
    spec = effective.spec
    if _terminal(prior):
        return StepResult(status=prior, spec=spec, prior=prior)
    if not prior.get("acceptedTime") and spec.deadline <= now:
        return _refused(prior, now, gen, f"deadline {format_time(spec.deadline)} is already past")

    if observed.error is not None and not observed.job_known:
        # The Job could not be read: create nothing (it may exist), change nothing, say why.
        cond = condition(RECONCILED, False, observed.error.reason, observed.error.message, gen)
        warn = (Event(WARNING, cond["reason"], cond["message"]),) if _is_new(old_conds, cond) else ()
        out = dict(prior)
        out["conditions"] = merge_conditions(old_conds, [cond], now)
        return StepResult(out, (), warn, spec, prior=prior)

    reading = observed.reading
    accounted = account(spec, prior, observed, now)
    measured = {int(n): float(r) for n, r in (prior.get("measuredThroughput") or {}).items()}
    measured.update(accounted.rates)
    sig = _signal_condition(reading, now, gen)
    conds: list[dict[str, Any]] = [
        condition(COMPLETE, False, "InProgress", "training has not finished", gen),
        condition(FAILED, False, "InProgress", "training has not failed", gen),
        sig,
    ]
    events: list[Event] = []
    degraded = sig["status"] == "True" or sig["reason"] == SIGNAL_OWN_FORECAST
    if degraded and _is_new(old_conds, sig):
        events.append(_signal_event(reading, sig))
    pauses = _recent_pauses(prior, now)
    job = observed.job

    def finish(
        phase: str,
        replicas: int,
        desired: int,
        change: tuple[Action, ...] = (),
        decision: Decision | None = None,
        kind: str = "none",
        applied: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> StepResult:
        own = [c for c in conds if c["type"] == RECONCILED]
        if own:
            rc = own[0]
        elif observed.error is not None:
            rc = condition(RECONCILED, False, observed.error.reason, observed.error.message, gen)
        else:
            rc = condition(RECONCILED, True, "Reconciled", "the Job matches the plan", gen)
        if not own:
            conds.append(rc)
        if rc["status"] == "False" and _is_new(old_conds, rc):
            events.append(Event(WARNING, rc["reason"], rc["message"]))
        if effective.refused:
            conds[:] = [c for c in conds if c["type"] != SPEC_APPLIED]
            conds.append(_invalid_edit(old_conds, events, effective.refused, gen))
        base = dict(prior)
        base["acceptedSpec"] = effective.raw_json
        if applied:
            base["observedGeneration"] = gen
        out = build_status(
            spec,
            now=now,
            phase=phase,
            replicas=replicas,
            desired=desired,
            accounted=accounted,
            reading=reading,
            pause_times=pauses,
            decision=decision,
            conditions=conds,
            previous=base,
            measured=measured,
        )
        out.update(extra or {})
        return StepResult(
            out,
            change,
            tuple(events),
            spec,
            decision=kind,
            decision_reason=decision.reason if decision is not None else "",
            prior=prior,
            observed_replicas=job.replicas if job is not None else 0,
        )

    # -- no Job: create it (first time, after our own delete, or after someone deleted it) ---------
    if job is None:
        recreate = prior.get("recreate")
        create = Action(CREATE, replicas=spec.max_replicas, suspend=True)
        conds.append(
            condition(SUSPENDED, True, "Created", "the Job starts suspended until the first plan", gen)
        )
        if recreate:
            events.append(
                Event(NORMAL, "JobRecreated", f"recreated Job {spec.name}: {recreate.get('reason')}")
            )
            conds.append(condition(SPEC_APPLIED, True, "Applied", "the Job was rebuilt from this spec", gen))
        elif prior.get("jobUID"):
            msg = f"Job {spec.name} was deleted outside gridwise; recreating it from the last checkpoint"
            conds.append(condition(RECONCILED, False, "JobMissing", msg, gen))
        else:
            events.append(
                Event(NORMAL, "JobCreated", f"created Job {spec.name} (suspended until the first plan)")
            )
        conds.append(condition(DEADLINE_AT_RISK, "Unknown", "NoPlan", "no plan until the Job exists", gen))
        # jobUID stays: if this create fails, the next tick still knows a Job existed (JobMissing).
        return finish("Pending", 0, 0, (create,), extra={"recreate": None})

    # -- a Job with our name that is not ours -------------------------------------------------------
    if job.owner == OWNER_OTHER:
        msg = (
            f"Job {spec.name} exists but is not owned by this CarbonAwareJob; left alone until it is removed"
        )
        conds.append(condition(RECONCILED, False, "JobConflict", msg, gen))
        conds.append(
            condition(DEADLINE_AT_RISK, "Unknown", "NoPlan", "gridwise does not control the Job", gen)
        )
        return finish("Pending", 0, 0, applied=False)

    change: list[Action] = []
    if job.owner == OWNER_NONE:
        msg = (
            f"Job {spec.name} lost its owner reference; adopted it again so it is not left running unobserved"
        )
        change.append(Action(ADOPT))
        conds.append(condition(RECONCILED, False, "JobOrphaned", msg, gen))

    extra: dict[str, Any] = {"jobUID": job.uid}

    if job.deleting:
        conds.append(
            condition(SPEC_APPLIED, False, "Recreating", "waiting for the old Job to be deleted", gen)
        )
        return finish("Pending", 0, 0, tuple(change), applied=False, extra=extra)

    # -- finished ----------------------------------------------------------------------------------
    if job.finished is not None:
        ok = job.finished == "Succeeded"
        phase = "Succeeded" if ok else "Failed"
        conds += [
            condition(COMPLETE, ok, "JobComplete" if ok else "JobFailed", f"training {phase.lower()}", gen),
            condition(
                FAILED, not ok, "JobFailed" if not ok else "JobComplete", f"training {phase.lower()}", gen
            ),
            condition(SUSPENDED, False, "Finished", "the Job has finished", gen),
            condition(DEADLINE_AT_RISK, False, "Finished", "the Job has finished", gen),
        ]
        avoided = accounted.totals.avoided_grams()
        events.append(
            Event(
                NORMAL if ok else WARNING,
                f"Job{phase}",
                f"training {phase.lower()}; avoided {_display_grams(avoided)} CO2",
            )
        )
        return finish(phase, 0, 0, tuple(change), extra=extra)

    replicas = job.replicas

    # -- Kueue owns spec.suspend: observe and report, never toggle ---------------------------------
    if job.kueue:
        conds.append(
            condition(
                KUEUE_MANAGED, True, "KueueManaged", "Kueue admits this Job; gridwise only reports", gen
            )
        )
        conds.append(condition(SUSPENDED, job.suspended, "KueueManaged", "Kueue decides", gen))
        conds.append(condition(DEADLINE_AT_RISK, "Unknown", "NoPlan", "Kueue decides when the Job runs", gen))
        if _shape_changed(job, observed, gen):
            conds.append(
                condition(
                    SPEC_APPLIED,
                    False,
                    "Refused",
                    "the pod template of a Kueue-managed Job cannot be rebuilt by gridwise; "
                    "delete and recreate the CarbonAwareJob to apply this edit",
                    gen,
                )
            )
        else:
            conds.append(
                condition(SPEC_APPLIED, True, "Applied", "nothing in the Job depends on this edit", gen)
            )
        phase = "Paused" if job.suspended else "Running"
        return finish(phase, replicas, replicas, tuple(change), extra=extra)

    # -- the pod template changed: drain, delete, recreate from the last checkpoint ---------------
    if _shape_changed(job, observed, gen):
        recreate = {"reason": f"spec generation {gen} changed the pod template", "generation": gen}
        extra["recreate"] = recreate
        conds.append(condition(DEADLINE_AT_RISK, "Unknown", "NoPlan", "the Job is being rebuilt", gen))
        if not job.suspended:
            change.append(Action(SCALE, replicas=0, suspend=True, indexed=job.indexed))
            msg = "pausing so the trainers checkpoint; the Job is then rebuilt with the new pod template"
            conds.append(condition(SPEC_APPLIED, False, "Recreating", msg, gen))
            conds.append(condition(SUSPENDED, True, "SpecChange", msg, gen))
            events.append(Event(NORMAL, "SpecChanged", msg))
            return finish("Paused", 0, 0, tuple(change), applied=False, extra=extra)
        if observed.pods_present > 0 or not observed.pods_known:
            msg = f"waiting for {observed.pods_present} pod(s) to finish checkpointing before the rebuild"
            conds.append(condition(SPEC_APPLIED, False, "Recreating", msg, gen))
            conds.append(condition(SUSPENDED, True, "SpecChange", msg, gen))
            return finish("Paused", 0, 0, tuple(change), applied=False, extra=extra)
        change.append(Action(DELETE))
        msg = "deleting the suspended Job to rebuild it with the new pod template"
        conds.append(condition(SPEC_APPLIED, False, "Recreating", msg, gen))
        conds.append(condition(SUSPENDED, True, "SpecChange", msg, gen))
        return finish("Pending", 0, 0, tuple(change), applied=False, extra=extra)

    extra["recreate"] = None  # an edit reverted mid-rebuild needs no rebuild
    if (job.generation != gen or job.shape is None) and not effective.refused:
        change.append(Action(ANNOTATE))  # while an edit is refused, the Job does not reflect `gen`
    conds.append(condition(SPEC_APPLIED, True, "Applied", "the Job reflects this generation", gen))

    # -- decide ------------------------------------------------------------------------------------
    remaining = max(0.0, spec.work_gpu_hours - accounted.totals.work_done_gpu_hours)
    decision = decide(
        spec,
        reading,
        now=now,
        remaining_work_gpu_hours=remaining,
        current_replicas=replicas,
        pauses_in_last_day=len(pauses),
        throughput_table=throughput_table(measured, spec.max_replicas, spec.scaling_efficiency),
    )
    kind = decision.kind(replicas)
    if kind != "none":
        change.append(
            Action(SCALE, replicas=decision.replicas, suspend=decision.replicas == 0, indexed=job.indexed)
        )
        events.append(Event(NORMAL, decision.reason, f"{kind} to {decision.replicas}: {decision.message}"))
        if kind == "pause":
            pauses.append(format_time(now))
    elif decision.replicas == 0 and prior.get("phase") != "Paused":
        events.append(Event(NORMAL, decision.reason, f"waiting: {decision.message}"))
    status_, reason_, message_ = decision.deadline_condition()
    conds.append(condition(DEADLINE_AT_RISK, status_, reason_, message_, gen))
    if decision.replicas == 0:
        conds.append(condition(SUSPENDED, True, decision.reason, decision.message, gen))
    else:
        conds.append(condition(SUSPENDED, False, decision.reason, decision.message, gen))
    phase = "Paused" if decision.replicas == 0 else "Running"
    return finish(phase, decision.replicas, decision.replicas, tuple(change), decision, kind, extra=extra)


def _terminal(status: Mapping[str, Any]) -> bool:
    """Finished for good: the Job completed or failed (an invalid spec is re-checked each tick)."""
    conds = status.get("conditions") or []
    done = _find(conds, COMPLETE)
    failed = _find(conds, FAILED)
    if done is not None and done.get("status") == "True":
        return True
    return failed is not None and failed.get("status") == "True" and failed.get("reason") == "JobFailed"


def _shape_changed(job: JobState, observed: Observed, gen: int) -> bool:
    """A pod-template edit: the fingerprint differs and the Job was built for an older generation.

    An operator upgrade that renders templates differently changes the fingerprint without a new
    generation: such Jobs are left as they are.
    """
    return (
        job.shape is not None
        and bool(observed.desired_shape)
        and job.shape != observed.desired_shape
        and job.generation != gen
    )


def _invalid_edit(
    old_conds: Sequence[Mapping[str, Any]], events: list[Event], why: str, gen: int
) -> dict[str, Any]:
    """SpecApplied=False/InvalidSpec for an edit refused on a job whose Job runs; a Warning once."""
    message = f"generation {gen} refused, the Job keeps running by the last accepted spec: {why}"
    cond = condition(SPEC_APPLIED, False, "InvalidSpec", message, gen)
    prev = _find(old_conds, SPEC_APPLIED)
    if _is_new(old_conds, cond) or (prev is not None and prev.get("message") != cond["message"]):
        events.append(Event(WARNING, "InvalidSpec", message))
    return cond


def _refused(prior: Mapping[str, Any], now: datetime, gen: int, message: str) -> StepResult:
    conds = list(prior.get("conditions") or [])
    failed = condition(FAILED, True, "InvalidSpec", message, gen)
    new = [failed, condition(COMPLETE, False, "InvalidSpec", "the spec cannot run", gen)]
    prev = _find(conds, FAILED)
    new_cause = _is_new(conds, failed) or (prev is not None and prev.get("message") != message)
    events = (Event(WARNING, "InvalidSpec", message),) if new_cause else ()
    out = dict(prior)
    out.update(
        {"phase": "Failed", "observedGeneration": gen, "conditions": merge_conditions(conds, new, now)}
    )
    return StepResult(out, (), events, None, prior=prior)


def act_failed(result: StepResult, reason: str, message: str, now: datetime, generation: int) -> StepResult:
    """The status when the Job change could not be applied: nothing recorded that did not happen.

    The replicas, phase and pause record stay what the Job really is; accounting (the past
    interval) stays; Reconciled=False names the cause; a Warning is posted when the cause is new.
    """
    prior = result.prior
    out = dict(result.status)
    observed = result.observed_replicas or 0
    creating = any(a.kind == CREATE for a in result.change)
    out["replicas"] = observed
    out["phase"] = "Pending" if creating else ("Paused" if observed == 0 else "Running")
    out["pauseTimes"] = list(prior.get("pauseTimes") or [])[-200:]
    out["pausesToday"] = len(out["pauseTimes"])
    out["observedGeneration"] = prior.get("observedGeneration")
    out["recreate"] = prior.get("recreate")
    if "lastTransitionTime" in prior:
        out["lastTransitionTime"] = prior["lastTransitionTime"]
    cond = condition(RECONCILED, False, reason, message, generation)
    out["conditions"] = merge_conditions(out.get("conditions") or [], [cond], now)
    events = [e for e in result.events if e.type == WARNING and e.reason != reason]
    if _is_new(prior.get("conditions") or [], cond):
        events.append(Event(WARNING, reason, message))
    return replace(result, status=out, change=(), events=tuple(events), decision="none")


def fail_safe(
    res: Resource, status: Mapping[str, Any], job: JobState | None, now: datetime, reason: str, message: str
) -> StepResult:
    """When the step itself could not run: keep the Job as it is, unless the deadline needs it running.

    Uses only the last written status (progress) and the spec, so it works whatever broke.
    """
    prior = dict(status)
    gen = res.generation
    change: tuple[Action, ...] = ()
    try:
        spec: JobSpec | None = effective_spec(res, prior, now).spec
    except SpecError:
        spec = None
    if (
        spec is not None
        and job is not None
        and job.owner == OWNER_US
        and not job.kueue
        and job.finished is None
    ):
        remaining = spec.work_gpu_hours * (1.0 - float(prior.get("progress", 0.0)))
        need = deadline_width(spec, now, remaining)
        if job.replicas < need and must_run_now(spec, now, remaining):
            change = (Action(SCALE, replicas=need, suspend=False, indexed=job.indexed),)
            message = f"{message}; running {need} replicas so the deadline holds"
    out = dict(prior)
    cond = condition(RECONCILED, False, reason, message, gen)
    out["conditions"] = merge_conditions(prior.get("conditions") or [], [cond], now)
    if change:
        out["replicas"] = change[0].replicas
        out["phase"] = "Running"
    events = (Event(WARNING, reason, message),) if _is_new(prior.get("conditions") or [], cond) else ()
    return StepResult(
        out, change, events, spec, decision="resume" if change else "none",
        decision_reason=REASON_DEADLINE if change else "", prior=prior,
        observed_replicas=job.replicas if job is not None else 0,
    )  # fmt: skip
