"""One reconcile tick of a CarbonAwareJob: observe, account, decide, act, report.

Knows no kopf: handlers pass the object in and write the returned status patch and
Events back. Everything that must survive a restart is in the returned status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from gridwise.accounting import Totals, advance, throughput
from gridwise.actuator import Actuator, job_replicas
from gridwise.api import KUEUE_QUEUE_LABEL, JobSpec, SpecError, format_time, parse_job_spec, parse_time
from gridwise.carbon import SignalReading
from gridwise.clock import Clock
from gridwise.decide import REASON_DEADLINE, Decision, decide
from gridwise.k8s.builders import METRICS_PORT, build_headless_service, build_job, is_elastic, job_name
from gridwise.k8s.kube import Kube
from gridwise.metrics import JobView, OperatorMetrics
from gridwise.progress import scrape, throughput_table
from gridwise.signal_hub import SignalHub

log = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"


@dataclass
class OperatorContext:
    """What every tick needs; built once per operator process (or per test)."""

    clock: Clock
    kube: Kube
    signals: SignalHub
    metrics: OperatorMetrics
    scraper: httpx.AsyncClient
    scrape_port: int = METRICS_PORT


@dataclass(frozen=True)
class Observed:
    """What a watch already knows (kopf's indexes), so a tick need not ask the API server."""

    job: Mapping[str, Any] | None
    pod_ips: list[str]


@dataclass
class TickResult:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    action: str = "none"


def _condition(type_: str, status: bool, reason: str, message: str, now: datetime) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
    }


def _merge_conditions(old: list[Mapping[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keeps lastTransitionTime when a condition's status did not change."""
    previous = {c.get("type"): c for c in old}
    merged = {c.get("type"): dict(c) for c in old}
    for cond in new:
        prev = previous.get(cond["type"])
        if prev is not None and prev.get("status") == cond["status"]:
            cond["lastTransitionTime"] = prev.get("lastTransitionTime", cond["lastTransitionTime"])
        merged[cond["type"]] = cond
    return list(merged.values())


def _job_finished(job: Mapping[str, Any]) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return "Succeeded" if cond["type"] == "Complete" else "Failed"
    return None


def _owned_by(job: Mapping[str, Any], uid: str) -> bool:
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in job["metadata"].get("ownerReferences") or []
    )


def _totals(status: Mapping[str, Any]) -> Totals:
    acc = status.get("accounting") or {}
    return Totals(
        energy_joules=float(status.get("energyJoules", 0.0)),
        emissions_grams=float(status.get("emissionsGrams", 0.0)),
        work_done_gpu_hours=float(acc.get("workDoneGPUHours", 0.0)),
        baseline_emissions_grams=float(status.get("baselineEmissionsGrams", 0.0)),
        baseline_work_gpu_hours=float(acc.get("baselineWorkGPUHours", 0.0)),
    )


def _recent_pauses(status: Mapping[str, Any], now: datetime) -> list[str]:
    return [t for t in status.get("pauseTimes") or [] if now - parse_time(t) < timedelta(days=1)]


def _display_grams(grams: float) -> str:
    return f"{grams / 1000:.2f}kg" if abs(grams) >= 1000 else f"{grams:.0f}g"


def build_status(
    spec: JobSpec,
    *,
    now: datetime,
    phase: str,
    replicas: int,
    desired: int,
    totals: Totals,
    reading: SignalReading | None,
    progress_source: str,
    trainer_energy: float | None,
    pause_times: list[str],
    decision: Decision | None,
    conditions: list[dict[str, Any]],
    previous: Mapping[str, Any],
) -> dict[str, Any]:
    """The status patch: pure, so its shape is unit-tested and every field has one writer."""
    progress = min(1.0, totals.work_done_gpu_hours / spec.work_gpu_hours)
    status: dict[str, Any] = {
        "phase": phase,
        "jobName": job_name(spec.name),
        "replicas": replicas,
        "desiredReplicas": desired,
        "deadline": format_time(spec.deadline),
        "progress": round(progress, 6),
        "progressDisplay": f"{progress * 100:.0f}%",
        "progressSource": progress_source,
        "energyJoules": round(totals.energy_joules, 3),
        "emissionsGrams": round(totals.emissions_grams, 3),
        "baselineEmissionsGrams": round(totals.baseline_emissions_grams, 3),
        "avoidedEmissionsGrams": round(totals.avoided_grams(), 3),
        "avoidedEmissionsDisplay": _display_grams(totals.avoided_grams()),
        "pauseTimes": pause_times,
        "pausesToday": len(pause_times),
        "accounting": {
            "lastTime": format_time(now),
            "workDoneGPUHours": totals.work_done_gpu_hours,
            "baselineWorkGPUHours": totals.baseline_work_gpu_hours,
            "trainerEnergyJoules": trainer_energy,
        },
        "conditions": _merge_conditions(previous.get("conditions") or [], conditions),
    }
    if reading is not None and reading.current is not None:
        g = reading.current.grams_per_kwh
        status["carbonIntensity"] = {
            "gramsPerKWh": round(g, 2),
            "signalType": reading.signal_type,
            "provider": reading.provider,
            "zone": reading.zone,
            "stale": reading.stale,
            "display": f"{g:.0f}g/kWh {reading.signal_type}{' (stale)' if reading.stale else ''}",
        }
    if decision is not None and decision.next_change_time is not None:
        status["nextChange"] = {
            "time": format_time(decision.next_change_time),
            "replicas": decision.next_change_replicas,
            "reason": "plan",
            "display": f"{decision.next_change_replicas}@{decision.next_change_time:%m-%d %H:%M}Z",
        }
    else:
        status["nextChange"] = None
    if replicas != int(previous.get("replicas", -1)):
        status["lastTransitionTime"] = format_time(now)
    return status


class Reconciler:
    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self.actuator = Actuator(ctx.kube)

    async def tick(self, body: Mapping[str, Any], observed: Observed | None = None) -> TickResult:
        """One reconcile; without `observed` (or on an index miss) it reads the Job from the API."""
        started = time.perf_counter()
        try:
            return await self._tick(body, observed)
        finally:
            self.ctx.metrics.reconcile_seconds.observe(time.perf_counter() - started)

    async def _tick(self, body: Mapping[str, Any], observed: Observed | None) -> TickResult:
        meta, status = body["metadata"], dict(body.get("status") or {})
        now = self.ctx.clock.now()
        # completeWithin counts from when the operator accepted the job, on the operator's clock,
        # so a replayed trace and the live grid give the same deadlines.
        accepted = parse_time(status["acceptedTime"]) if status.get("acceptedTime") else now
        try:
            spec = parse_job_spec(meta["name"], meta["namespace"], body.get("spec") or {}, accepted)
        except SpecError as exc:
            return self._invalid(status, now, str(exc))
        if status.get("phase") in ("Succeeded", "Failed"):
            return TickResult(status={})
        if not status.get("acceptedTime") and spec.deadline <= now:
            return self._invalid(status, now, f"deadline {format_time(spec.deadline)} is already past")

        job = observed.job if observed is not None else None
        if job is None:  # not indexed (yet, or not labelled as ours): ask the API server
            job = await self.ctx.kube.get_job(spec.namespace, job_name(spec.name))
            observed = None
        if job is None:
            return await self._create(body, spec, status, now)
        if not _owned_by(job, meta["uid"]):
            msg = f"Job {job_name(spec.name)} exists but is not owned by this CarbonAwareJob; left alone"
            cond = _condition("JobConflict", True, "JobNotOwned", msg, now)
            return TickResult(
                {"phase": "Failed", "conditions": _merge_conditions(status.get("conditions") or [], [cond])},
                [(WARNING, "JobConflict", msg)],
            )

        replicas = job_replicas(job)
        finished = _job_finished(job)
        reading = await self._read_signal(spec, body)
        intensity = reading.current.grams_per_kwh if reading.current is not None else None
        totals, trainer_energy, source, rates = await self._account(
            spec, status, now, replicas, intensity, observed.pod_ips if observed is not None else None
        )
        # Each trainer reports the rate at its current size; keep every size seen so far.
        measured = {int(n): float(r) for n, r in (status.get("measuredThroughput") or {}).items()}
        measured.update(rates)
        conditions = [
            _condition(
                "CarbonSignalStale",
                reading.stale,
                "ProviderUnavailable" if reading.stale else "Fresh",
                reading.reason if reading.stale else f"{reading.provider} answered",
                now,
            )
        ]
        events: list[tuple[str, str, str]] = []
        if reading.stale and not any(
            c.get("type") == "CarbonSignalStale" and c.get("status") == "True"
            for c in status.get("conditions") or []
        ):
            events.append((WARNING, "CarbonSignalStale", f"{reading.reason}; jobs keep running"))
        pauses = _recent_pauses(status, now)

        if finished is not None:
            phase = finished
            decision: Decision | None = None
            desired = 0
            events.append(
                (
                    NORMAL,
                    f"Job{phase}",
                    f"training {phase.lower()}; avoided {_display_grams(totals.avoided_grams())} CO2",
                )
            )
            replicas_now = 0
        elif KUEUE_QUEUE_LABEL in (job["metadata"].get("labels") or {}):
            # Kueue owns spec.suspend on this Job: observe and report, never toggle it.
            phase = "Paused" if job["spec"].get("suspend") else "Running"
            decision, desired, replicas_now = None, replicas, replicas
            conditions.append(
                _condition(
                    "KueueManaged", True, "KueueManaged", "Kueue admits this Job; gridwise only reports", now
                )
            )
        else:
            remaining = max(0.0, spec.work_gpu_hours - totals.work_done_gpu_hours)
            decision = decide(
                spec,
                reading,
                now=now,
                remaining_work_gpu_hours=remaining,
                current_replicas=replicas,
                pauses_in_last_day=len(pauses),
                throughput_table=throughput_table(measured, spec.max_replicas, spec.scaling_efficiency),
            )
            desired = decision.replicas
            kind = decision.kind(replicas)
            if kind != "none":
                await self.actuator.apply(spec, job, decision.replicas)
                self.ctx.metrics.decisions.labels(kind=kind, reason=decision.reason).inc()
                events.append((NORMAL, decision.reason, f"{kind} to {decision.replicas}: {decision.message}"))
                if kind == "pause":
                    pauses.append(format_time(now))
            replicas_now = decision.replicas
            phase = "Paused" if replicas_now == 0 else "Running"
            if kind == "none" and phase == "Paused" and status.get("phase") != "Paused":
                events.append((NORMAL, decision.reason, f"waiting: {decision.message}"))
            at_risk = (
                decision.reason == REASON_DEADLINE
                and decision.plan is not None
                and not decision.plan.feasible
            )
            conditions.append(
                _condition(
                    "DeadlineAtRisk",
                    at_risk,
                    "Infeasible" if at_risk else "OnTrack",
                    decision.message if at_risk else "the plan meets the deadline",
                    now,
                )
            )

        new_status = build_status(
            spec,
            now=now,
            phase=phase,
            replicas=replicas_now,
            desired=desired,
            totals=totals,
            reading=reading,
            progress_source=source,
            trainer_energy=trainer_energy,
            pause_times=pauses,
            decision=decision,
            conditions=conditions,
            previous=status,
        )
        new_status["observedGeneration"] = meta.get("generation")
        new_status["measuredThroughput"] = {str(n): round(r, 3) for n, r in sorted(measured.items())}
        self._export(spec, new_status, reading, now)
        return TickResult(new_status, events, decision.kind(replicas) if decision else "none")

    # -- steps -------------------------------------------------------------------------
    async def _create(
        self, body: Mapping[str, Any], spec: JobSpec, status: Mapping[str, Any], now: datetime
    ) -> TickResult:
        """Creates the suspended Job (and Service for elastic jobs); the next tick decides when it runs."""
        if is_elastic(spec):
            await self.ctx.kube.create(build_headless_service(body, spec))
        created = await self.ctx.kube.create(build_job(body, spec, replicas=spec.max_replicas, suspend=True))
        events = []
        if created is not None:
            events.append(
                (NORMAL, "JobCreated", f"created Job {job_name(spec.name)} (suspended until the first plan)")
            )
        patch: dict[str, Any] = {
            "acceptedTime": status.get("acceptedTime") or format_time(now),
            "phase": status.get("phase") or "Pending",
            "jobName": job_name(spec.name),
            "replicas": 0,
            "deadline": format_time(spec.deadline),
        }
        if "accounting" not in status:
            patch["accounting"] = {
                "lastTime": format_time(now),
                "workDoneGPUHours": 0.0,
                "baselineWorkGPUHours": 0.0,
            }
        return TickResult(patch, events, "create")

    def _invalid(self, status: Mapping[str, Any], now: datetime, message: str) -> TickResult:
        cond = _condition("InvalidSpec", True, "InvalidSpec", message, now)
        already = any(
            c.get("type") == "InvalidSpec" and c.get("message") == message
            for c in status.get("conditions") or []
        )
        events = [] if already else [(WARNING, "InvalidSpec", message)]
        return TickResult(
            {"phase": "Failed", "conditions": _merge_conditions(status.get("conditions") or [], [cond])},
            events,
        )

    async def _read_signal(self, spec: JobSpec, body: Mapping[str, Any]) -> SignalReading:
        secret: dict[str, str] = {}
        ref = (spec.carbon.get("secretRef") or {}).get("name")
        if ref:
            secret = await self.ctx.kube.read_secret(spec.namespace, ref)
        try:
            signal = await self.ctx.signals.get(spec.carbon, secret)
        except ValueError as exc:
            # A misconfigured provider (missing key, unreadable trace) is an outage for this job:
            # it keeps running and the condition says why.
            return SignalReading(
                zone=str(spec.carbon.get("zone", "")),
                provider=str(spec.carbon.get("provider", "")),
                signal_type=str(spec.carbon.get("signalType", "average")),
                current=None,
                forecast=(),
                stale=True,
                reason=f"carbon provider misconfigured: {exc}",
                fetched_at=self.ctx.clock.now(),
            )
        return await signal.read()

    async def _account(
        self,
        spec: JobSpec,
        status: Mapping[str, Any],
        now: datetime,
        replicas: int,
        intensity: float | None,
        pod_ips: list[str] | None,
    ) -> tuple[Totals, float | None, str, dict[int, float]]:
        """Adds the time since the last tick, at the replicas that ran and the intensity seen."""
        totals = _totals(status)
        acc = status.get("accounting") or {}
        last = parse_time(acc["lastTime"]) if acc.get("lastTime") else now
        measured_energy: float | None = None
        measured_work: float | None = None
        trainer_energy = acc.get("trainerEnergyJoules")
        source = "estimate"
        rates: dict[int, float] = {}
        if replicas > 0:
            ips = pod_ips
            if ips is None:
                ips = await self.ctx.kube.job_pod_ips(spec.namespace, job_name(spec.name))
            sample = await scrape(self.ctx.scraper, ips, self.ctx.scrape_port)
            if sample is not None:
                source = "trainer"
                prev = float(trainer_energy) if trainer_energy is not None else None
                measured_energy = (
                    sample.energy_joules - prev if prev is not None and sample.energy_joules >= prev else None
                )
                trainer_energy = sample.energy_joules
                measured_work = max(0.0, sample.progress * spec.work_gpu_hours - totals.work_done_gpu_hours)
                rates = dict(sample.throughput)
        if intensity is None:
            # No reading at all yet: account time and work, and emissions once a value arrives.
            intensity = float((status.get("carbonIntensity") or {}).get("gramsPerKWh", 0.0))
        totals = advance(
            totals,
            start=last,
            end=now,
            replicas=replicas,
            intensity_grams_per_kwh=intensity,
            power_per_replica_watts=spec.power_per_replica_watts,
            scaling_efficiency=spec.scaling_efficiency,
            max_replicas=spec.max_replicas,
            work_gpu_hours=spec.work_gpu_hours,
            measured_energy_joules=measured_energy,
            measured_work_gpu_hours=measured_work,
        )
        return totals, trainer_energy, source, rates

    def _export(
        self, spec: JobSpec, status: Mapping[str, Any], reading: SignalReading, now: datetime
    ) -> None:
        m = self.ctx.metrics
        remaining = max(0.0, spec.work_gpu_hours * (1 - float(status["progress"])))
        rate = throughput(spec.max_replicas, spec.scaling_efficiency)
        slack = (spec.deadline - now).total_seconds() - remaining / rate * 3600
        m.jobs.update(
            JobView(
                namespace=spec.namespace,
                name=spec.name,
                phase=status["phase"],
                replicas=int(status["replicas"]),
                energy_joules=float(status["energyJoules"]),
                emissions_grams=float(status["emissionsGrams"]),
                avoided_grams=float(status["avoidedEmissionsGrams"]),
                progress=float(status["progress"]),
                deadline_slack_seconds=slack,
                signal_type=reading.signal_type,
            )
        )
        zone = reading.zone
        m.signal_stale.labels(zone=zone, provider=reading.provider).set(1 if reading.stale else 0)
        if reading.current is not None:
            m.intensity.labels(zone=zone, provider=reading.provider, signal_type=reading.signal_type).set(
                reading.current.grams_per_kwh
            )
        for hours in (1, 6, 12, 24):
            when = now + timedelta(hours=hours)
            point = next((p for p in reading.forecast if p.start <= when < p.end), None)
            if point is not None:
                m.forecast.labels(
                    zone=zone,
                    provider=reading.provider,
                    signal_type=reading.signal_type,
                    hours_ahead=str(hours),
                ).set(point.grams_per_kwh)


def apply_result(result: TickResult, patch_status: MutableMapping[str, Any]) -> None:
    """Copies a tick's status into kopf's patch (None deletes a field in a merge patch)."""
    for key, value in result.status.items():
        patch_status[key] = value
