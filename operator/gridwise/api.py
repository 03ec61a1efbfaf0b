"""The CarbonAwareJob API as typed Python: names, defaults and the checks CEL cannot make.

The CRD (crds/gridwise.dev_carbonawarejobs.yaml) validates shape; this module turns a
validated spec into a `JobSpec` and makes the time-dependent checks (a deadline in the
past) that an admission-time CEL rule cannot, because CEL has no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gridwise.clock import parse_utc

GROUP = "gridwise.dev"
VERSION = "v1alpha1"
KIND = "CarbonAwareJob"
PLURAL = "carbonawarejobs"
SHORT_NAME = "caj"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_JOB = f"{GROUP}/job"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "gridwise"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

PHASES = ("Pending", "Running", "Paused", "Succeeded", "Failed")
LIVE_POLICIES = ("agnostic", "threshold", "forecast")

_DURATION = re.compile(r"(\d{1,5}(?:\.\d{1,3})?)([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# The horizon: no deadline lies further than this after the operator accepts a job (the CRD's CEL
# rules say the same). It bounds every per-job structure that grows with time until the deadline.
MAX_HORIZON = timedelta(days=90)
# How far ahead the forecast policy plans on the forecast by default (the CRD's maximum): one week, the
# period of the ensemble's longest seasonal member, so a job with days of slack plans on the forecast's
# daily and weekly shape instead of its flat mean past the second day. Chosen on Jan-Jun 2022 of ES,
# US-CAL-CISO and NO against the former 48 h (lower summed emissions on both job mixes; BENCHMARKS.md).
DEFAULT_FORECAST_HORIZON_HOURS = 168
# A DNS-1035 label: the job's name also names its headless Service.
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_NAME_LENGTH = 52


class SpecError(ValueError):
    """A CarbonAwareJob the operator cannot run; the message is shown in status and Events."""


def parse_duration(text: str) -> timedelta:
    """Parses Go-style durations such as 36h, 90m or 2d12h (d = 24h), at most MAX_HORIZON long.

    Bounded digits and a bounded total: `99999999h` is refused, not an OverflowError in every tick.
    """
    shown = text if len(text) <= 40 else text[:40] + "..."
    pos, total = 0, 0.0
    if len(text) <= 32:
        for m in _DURATION.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
    if pos != len(text) or not text:
        raise SpecError(f"completeWithin {shown!r} is not a duration like 36h, 90m or 2d12h")
    if total > MAX_HORIZON.total_seconds():
        raise SpecError(f"completeWithin {shown!r} is longer than the {_horizon_text()} horizon")
    return timedelta(seconds=total)


def _horizon_text() -> str:
    return f"{MAX_HORIZON.days} days ({MAX_HORIZON.days * 24}h)"


def check_name(name: str) -> None:
    """The names the Job, its pods and its headless Service accept (the CRD's CEL rule, again)."""
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise SpecError(
            f"metadata.name {name[:70]!r} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
            "(lower-case letters, digits and '-', starting with a letter, no dots): "
            "it names the Job's Service"
        )


def parse_time(text: str) -> datetime:
    if len(text) > 64:
        raise SpecError(f"{text[:64]!r}... is not an RFC 3339 time")
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise SpecError(f"{text!r} is not an RFC 3339 time") from exc
    except OverflowError:
        raise SpecError(f"{text!r} is outside the times gridwise handles") from None


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PolicySpec:
    type: str = "forecast"
    threshold_grams_per_kwh: float | None = None
    forecast_horizon_hours: int = DEFAULT_FORECAST_HORIZON_HOURS
    max_pauses_per_day: int = 6
    switching_cost_minutes: float = 5.0


@dataclass(frozen=True)
class JobSpec:
    """What the operator needs from a CarbonAwareJob, with defaults applied."""

    name: str
    namespace: str
    min_replicas: int
    max_replicas: int
    deadline: datetime
    work_gpu_hours: float
    total_steps: int
    scaling_efficiency: float
    power_per_replica_watts: float
    carbon: Mapping[str, Any]
    policy: PolicySpec
    grace_period_seconds: int
    checkpoint_path: str
    checkpoint_claim: str | None
    template: Mapping[str, Any]
    compression: Mapping[str, Any] = field(default_factory=dict)
    objective: Mapping[str, Any] = field(default_factory=dict)


def resolve_deadline(spec: Mapping[str, Any], created: datetime) -> datetime:
    """The deadline, at most MAX_HORIZON after `created` (when the operator accepted the job)."""
    if spec.get("deadline") and spec.get("completeWithin"):
        raise SpecError("set exactly one of deadline or completeWithin")
    if spec.get("deadline"):
        deadline = parse_time(str(spec["deadline"]))
        if deadline - created > MAX_HORIZON:
            raise SpecError(
                f"deadline {format_time(deadline)} is more than {_horizon_text()} after the job was accepted "
                f"({format_time(created)}): beyond the horizon"
            )
        return deadline
    if spec.get("completeWithin"):
        return created + parse_duration(str(spec["completeWithin"]))
    raise SpecError("set exactly one of deadline or completeWithin")


def _signal_type(carbon: Mapping[str, Any]) -> None:
    """WattTime serves only marginal, the average-only APIs only average: a mismatch could never work."""
    fixed = {"uk-neso": "average", "electricitymaps": "average", "watttime": "marginal"}.get(
        str(carbon.get("provider"))
    )
    wanted = carbon.get("signalType")
    if fixed is not None and wanted not in (None, fixed):
        raise SpecError(
            f"carbon.signalType {wanted!r} does not match provider {carbon.get('provider')}, which serves "
            f"{fixed} intensity (leave signalType unset to use the provider's)"
        )


def _total_steps(work: Mapping[str, Any]) -> int:
    steps = work.get("totalSteps")
    if not isinstance(steps, int) or steps < 1:
        raise SpecError(f"work.totalSteps must be a positive whole number, got {steps!r}")
    return steps


def _carbon(spec: Mapping[str, Any]) -> dict[str, Any]:
    carbon = dict(spec.get("carbon") or {})
    _signal_type(carbon)
    return carbon


def parse_job_spec(name: str, namespace: str, spec: Mapping[str, Any], created: datetime) -> JobSpec:
    """Builds a JobSpec; raises SpecError with a readable message for what the schema let through."""
    check_name(name)
    replicas = spec.get("replicas") or {}
    work = spec.get("work") or {}
    policy = spec.get("policy") or {}
    checkpoint = spec.get("checkpoint") or {}
    min_r, max_r = int(replicas.get("min", 1)), int(replicas.get("max", 1))
    if not 1 <= min_r <= max_r:
        raise SpecError(f"replicas.min ({min_r}) must be between 1 and replicas.max ({max_r})")
    gpu_hours = float(work.get("gpuHours", 0))
    if gpu_hours <= 0:
        raise SpecError(f"work.gpuHours must be positive, got {gpu_hours}")
    ptype = str(policy.get("type", "forecast"))
    if ptype not in LIVE_POLICIES:
        raise SpecError(f"policy.type {ptype!r} is not one of {', '.join(LIVE_POLICIES)}")
    threshold = policy.get("thresholdGramsPerKWh")
    if ptype == "threshold" and threshold is None:
        raise SpecError("policy.thresholdGramsPerKWh is required when policy.type is threshold")
    return JobSpec(
        name=name,
        namespace=namespace,
        min_replicas=min_r,
        max_replicas=max_r,
        deadline=resolve_deadline(spec, created),
        work_gpu_hours=gpu_hours,
        total_steps=_total_steps(work),
        scaling_efficiency=float(work.get("scalingEfficiency", 0.9)),
        power_per_replica_watts=float(work.get("powerPerReplicaWatts", 400.0)),
        carbon=_carbon(spec),
        policy=PolicySpec(
            type=ptype,
            threshold_grams_per_kwh=float(threshold) if threshold is not None else None,
            forecast_horizon_hours=int(policy.get("forecastHorizonHours", DEFAULT_FORECAST_HORIZON_HOURS)),
            max_pauses_per_day=int(policy.get("maxPausesPerDay", 6)),
            switching_cost_minutes=float(policy.get("switchingCostMinutes", 5.0)),
        ),
        grace_period_seconds=int(checkpoint.get("gracePeriodSeconds", 120)),
        checkpoint_path=str(checkpoint.get("path", "/checkpoints")),
        checkpoint_claim=checkpoint.get("volumeClaimName"),
        template=dict(spec.get("template") or {}),
        compression=dict(spec.get("compression") or {}),
        objective=dict(spec.get("objective") or {}),
    )
