"""Reads a job-mix YAML file into validated job specs, with errors fit for a one-line CLI message."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from gridwise.clock import as_utc, parse_utc

FIELDS = (
    "name",
    "submit",
    "submit_after_hours",
    "deadline",
    "deadline_hours",
    "work_gpu_hours",
    "min_replicas",
    "max_replicas",
    "power_per_replica_watts",
    "scaling_efficiency",
)


class JobsError(ValueError):
    """A job file that cannot be used: one line naming the file, the job and the field."""


@dataclass(frozen=True)
class SimJob:
    name: str
    submit: datetime
    deadline: datetime
    work_gpu_hours: float
    min_replicas: int
    max_replicas: int
    power_per_replica_watts: float
    scaling_efficiency: float = 1.0


def _time(value: object, where: str) -> datetime:
    if isinstance(value, datetime):
        return as_utc(value)
    if not isinstance(value, str):
        raise JobsError(f"{where}: expected an ISO 8601 time")
    try:
        return parse_utc(value)
    except (ValueError, OverflowError):
        raise JobsError(f"{where}: {value!r} is not an ISO 8601 time") from None


def _number(job: dict[str, Any], key: str, where: str, *, default: float | None = None) -> float:
    value = job.get(key, default)
    if value is None:
        raise JobsError(f"{where}: missing {key}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JobsError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _integer(job: dict[str, Any], key: str, where: str) -> int:
    value = job.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobsError(f"{where}: {key} must be an integer, got {value!r}")
    return value


def parse_jobs(data: object, origin: datetime, source: str = "jobs") -> list[SimJob]:
    """`data` is a list of jobs, or {jobs: [...]}. Relative times count from `origin`."""
    if isinstance(data, dict):
        extra = sorted(str(k) for k in data if k != "jobs")
        if extra or "jobs" not in data:
            raise JobsError(
                f"{source}: unknown top-level key {extra[0]!r}; expected only 'jobs:'"
                if extra
                else f"{source}: expected a list of jobs or a mapping with 'jobs:'"
            )
        data = data["jobs"]
    if not isinstance(data, list) or not data:
        raise JobsError(f"{source}: expected a non-empty list of jobs (or a mapping with 'jobs:')")
    jobs: list[SimJob] = []
    names: set[str] = set()
    for index, job in enumerate(data):
        where = f"{source}: job {index + 1}"
        if not isinstance(job, dict):
            raise JobsError(f"{where}: each job must be a mapping")
        name = job.get("name")
        if not isinstance(name, str) or not name:
            raise JobsError(f"{where}: missing name")
        where = f"{source}: job {name!r}"
        for key in job:
            if key not in FIELDS:
                close = difflib.get_close_matches(str(key), FIELDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known fields: {', '.join(FIELDS)}"
                raise JobsError(f"{where}: unknown field {key!r}{hint}")
        for first, second in (("submit", "submit_after_hours"), ("deadline", "deadline_hours")):
            if first in job and second in job:
                raise JobsError(f"{where}: set {first} or {second}, not both")
        if name in names:
            raise JobsError(f"{where}: duplicate name")
        names.add(name)
        if "submit" in job:
            submit = _time(job["submit"], f"{where}: submit")
        else:
            submit = origin + timedelta(hours=_number(job, "submit_after_hours", where, default=0.0))
        if "deadline" in job:
            deadline = _time(job["deadline"], f"{where}: deadline")
        else:
            deadline = submit + timedelta(hours=_number(job, "deadline_hours", where))
        work = _number(job, "work_gpu_hours", where)
        low, high = _integer(job, "min_replicas", where), _integer(job, "max_replicas", where)
        power = _number(job, "power_per_replica_watts", where)
        efficiency = _number(job, "scaling_efficiency", where, default=1.0)
        if deadline <= submit:
            raise JobsError(f"{where}: deadline must be after submit")
        if work <= 0:
            raise JobsError(f"{where}: work_gpu_hours must be > 0")
        if not 1 <= low <= high:
            raise JobsError(f"{where}: need 1 <= min_replicas <= max_replicas, got {low} and {high}")
        if power <= 0:
            raise JobsError(f"{where}: power_per_replica_watts must be > 0")
        if not 0 < efficiency <= 1:
            raise JobsError(f"{where}: scaling_efficiency must be in (0, 1]")
        jobs.append(SimJob(name, submit, deadline, work, low, high, power, efficiency))
    return jobs


def load_jobs(path: str | Path, origin: datetime) -> list[SimJob]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobsError(f"jobs file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobsError(f"cannot read jobs file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise JobsError(f"{path}: not valid YAML{at}") from None
    return parse_jobs(data, origin, str(path))
