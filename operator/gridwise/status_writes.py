"""When a new status is worth writing to the API server.

Pure: the live operator and the tests call it with the status last written and the one just
computed. A status write costs the API server (and every watcher of CarbonAwareJobs) one
event, so the operator writes only what a user or a controller reads has changed, and
otherwise at most every `max_interval`, while accounting keeps integrating in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Fields whose any change is worth a write: what `kubectl get/describe`, `kubectl wait`,
# dashboards and other controllers read.
EXACT_FIELDS = (
    "phase",
    "replicas",
    "desiredReplicas",
    "observedGeneration",
    "jobName",
    "deadline",
    "acceptedTime",
    "pauseTimes",
    "progressSource",
)
TOTAL_FIELDS = ("energyJoules", "emissionsGrams", "avoidedEmissionsGrams")


@dataclass(frozen=True)
class WritePolicy:
    """Thresholds below which a change is not worth a write on its own."""

    max_interval: timedelta = timedelta(minutes=5)
    progress_step: float = 0.01  # one percentage point
    totals_fraction: float = 0.05  # a total that moved by 5% of itself...
    # ...and by at least this much: a young job's totals double every few minutes, and a paused job's
    # avoided emissions start near zero, so a fraction alone would write on almost every tick.
    energy_floor_joules: float = 360_000.0  # 0.1 kWh
    grams_floor: float = 50.0
    intensity_fraction: float = 0.05  # the displayed intensity moved by 5%


def _conditions(status: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """Conditions as users and `kubectl wait` see them; messages alone (numbers in text) don't count."""
    return {
        (str(c.get("type")), str(c.get("status")), str(c.get("reason")))
        for c in status.get("conditions") or []
    }


def _intensity(status: Mapping[str, Any]) -> tuple[Any, ...]:
    ci = status.get("carbonIntensity") or {}
    return (ci.get("stale"), ci.get("provider"), ci.get("zone"), ci.get("signalType"))


def _moved(old: Any, new: Any, fraction: float, floor: float = 0.0) -> bool:
    """True when `new` differs from `old` by at least `fraction` of the larger magnitude and by `floor`."""
    a, b = float(old or 0.0), float(new or 0.0)
    scale = max(abs(a), abs(b))
    return scale > 0 and abs(a - b) >= max(fraction * scale, floor)


def material_change(
    written: Mapping[str, Any] | None, new: Mapping[str, Any], policy: WritePolicy
) -> str | None:
    """Why `new` must be written now (a short reason for logs and metrics), or None if it need not."""
    if written is None:
        return "first status"
    for key in EXACT_FIELDS:
        if key in new and new.get(key) != written.get(key):
            return key
    if _conditions(new) != _conditions(written):
        return "conditions"
    old_next, new_next = written.get("nextChange") or {}, new.get("nextChange") or {}
    if (old_next.get("time"), old_next.get("replicas")) != (new_next.get("time"), new_next.get("replicas")):
        return "nextChange"
    if _intensity(new) != _intensity(written):
        return "carbonIntensity"
    old_g = (written.get("carbonIntensity") or {}).get("gramsPerKWh")
    new_g = (new.get("carbonIntensity") or {}).get("gramsPerKWh")
    if (old_g is None) != (new_g is None) or _moved(old_g, new_g, policy.intensity_fraction):
        return "carbonIntensity"
    progressed = abs(float(new.get("progress") or 0.0) - float(written.get("progress") or 0.0))
    if progressed >= policy.progress_step - 1e-9:  # 0.41 - 0.40 is a hair under 0.01 in floats
        return "progress"
    if sorted((new.get("measuredThroughput") or {}).keys()) != sorted(
        (written.get("measuredThroughput") or {}).keys()
    ):
        return "measuredThroughput"
    for key in TOTAL_FIELDS:
        floor = policy.energy_floor_joules if key == "energyJoules" else policy.grams_floor
        if _moved(written.get(key), new.get(key), policy.totals_fraction, floor):
            return key
    return None


def write_reason(
    written: Mapping[str, Any] | None,
    written_at: datetime | None,
    new: Mapping[str, Any],
    now: datetime,
    policy: WritePolicy,
) -> str | None:
    """`material_change`, or "interval" once `max_interval` passed and anything but the clock moved.

    A paused job whose totals stand still is never rewritten just because time passed: after a
    restart the accounting integrates from the written `lastTime` at zero replicas and loses nothing.
    """
    reason = material_change(written, new, policy)
    if reason is not None:
        return reason
    if written_at is not None and now - written_at < policy.max_interval:
        return None
    if written is not None and _without_clock(written) == _without_clock(new):
        return None
    return "interval"


def _without_clock(status: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(status)
    acc = dict(out.get("accounting") or {})
    acc.pop("lastTime", None)
    out["accounting"] = acc
    return out


def status_patch(written: Mapping[str, Any] | None, status: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from what was written to `status`: changed fields whole, dropped ones removed.

    Top-level fields equal to what was written are left out: the bytes every write sends (and every
    watcher of CarbonAwareJobs receives as the patch's cause) stay proportional to what changed, so
    the copy of the accepted spec (`acceptedSpec`) rides along only when it changes.
    """
    if written is None:
        return dict(status)
    patch: dict[str, Any] = {k: v for k, v in status.items() if written.get(k, _ABSENT) != v}
    for key in written:
        if key not in status:
            patch[key] = None
    return patch


_ABSENT = object()
