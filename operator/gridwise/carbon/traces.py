"""Loaders for recorded carbon-intensity CSVs (the formats in shared/traces), shared by replay and simulation.

Formats, told apart by the header:
- Electricity Maps hourly export: `Datetime (UTC),...,Carbon Intensity gCO₂eq/kWh (direct),... (LCA),...`
  (average signal; pick the direct or life-cycle column).
- WattTime actual: `time,<region>`, 5-min marginal (MOER) values already in gCO2/kWh.
- WattTime historical forecasts: `request_time,forecast_time,<region>`, each row one point of a forecast
  issued at request_time for the step starting at forecast_time.
"""

from __future__ import annotations

import bisect
import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from gridwise.carbon.reading import IntensityPoint
from gridwise.carbon.validate import MAX_GRAMS_PER_KWH
from gridwise.clock import parse_utc

EM_DIRECT = "Carbon Intensity gCO₂eq/kWh (direct)"
EM_LCA = "Carbon Intensity gCO₂eq/kWh (LCA)"
TRACE_COLUMNS = ("direct", "lca")


class TraceError(ValueError):
    """A trace file that cannot be used; the message is one line, fit for a CLI error."""


@dataclass(frozen=True)
class Trace:
    """A regular series of actual intensities: value i holds over [start + i*step, start + (i+1)*step)."""

    zone: str
    signal_type: str
    emission_factor: str
    start: datetime
    step: timedelta
    values: tuple[float, ...]
    source: str

    @property
    def end(self) -> datetime:
        return self.start + self.step * len(self.values)

    def time_at(self, index: int) -> datetime:
        return self.start + self.step * index

    def index_of(self, when: datetime) -> int:
        """Index of the step holding `when` (may be out of range: callers check)."""
        return int((when - self.start) // self.step)

    def value_at(self, when: datetime) -> float:
        index = self.index_of(when)
        if not 0 <= index < len(self.values):
            raise IndexError(f"{when.isoformat()} is outside the trace {self.start} .. {self.end}")
        return self.values[index]

    def points(self, begin: int = 0, end: int | None = None) -> Iterator[IntensityPoint]:
        stop = len(self.values) if end is None else min(end, len(self.values))
        for index in range(max(0, begin), stop):
            start = self.time_at(index)
            yield IntensityPoint(start, start + self.step, self.values[index])


@dataclass(frozen=True)
class ForecastTrace:
    """Historical forecasts as issued: for each issue time, the points it predicted."""

    zone: str
    signal_type: str
    step: timedelta
    issued: tuple[datetime, ...]
    forecasts: tuple[tuple[IntensityPoint, ...], ...] = field(repr=False)
    source: str = ""

    def latest_before(self, when: datetime) -> tuple[IntensityPoint, ...]:
        """The newest forecast issued at or before `when` (what a live system would have had)."""
        index = bisect.bisect_right(self.issued, when) - 1
        return () if index < 0 else self.forecasts[index]


def _utc(text: str, path: Path, line: int) -> datetime:
    try:
        return parse_utc(text.strip())
    except (ValueError, OverflowError):
        raise TraceError(f"{path}:{line}: bad timestamp {text!r}") from None


def _number(text: str, path: Path, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{path}:{line}: bad intensity value {text!r}") from None
    if not 0 <= value <= MAX_GRAMS_PER_KWH:
        raise TraceError(f"{path}:{line}: intensity {value:g} g/kWh is out of range 0..{MAX_GRAMS_PER_KWH:g}")
    return value


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except FileNotFoundError:
        raise TraceError(f"trace file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from None
    if len(rows) < 3:
        raise TraceError(f"{path}: a trace needs a header and at least two rows")
    return [cell.strip() for cell in rows[0]], rows[1:]


def trace_kind(header: list[str]) -> str:
    if header and header[0] == "Datetime (UTC)":
        return "electricitymaps"
    if header[:2] == ["request_time", "forecast_time"] and len(header) == 3:
        return "watttime-forecast"
    if len(header) == 2 and header[0] == "time":
        return "watttime"
    return "unknown"


def load_trace(path: str | Path, column: str = "direct") -> Trace:
    """Load an actual-intensity trace (Electricity Maps export or WattTime actual)."""
    path = Path(path)
    if column not in TRACE_COLUMNS:
        raise TraceError(f"trace column must be one of {', '.join(TRACE_COLUMNS)}, got {column!r}")
    header, rows = _rows(path)
    kind = trace_kind(header)
    if kind == "electricitymaps":
        name = EM_DIRECT if column == "direct" else EM_LCA
        if name not in header or "Zone Id" not in header:
            raise TraceError(f"{path}: Electricity Maps export lacks the column {name!r}")
        col, zone_col = header.index(name), header.index("Zone Id")
        signal, factor, zone = "average", ("direct" if column == "direct" else "lifecycle"), rows[0][zone_col]
    elif kind == "watttime":
        col, signal, factor, zone = 1, "marginal", "direct", header[1]
    elif kind == "watttime-forecast":
        raise TraceError(
            f"{path}: this is a forecast file (request_time,forecast_time,...), not actual values"
        )
    else:
        raise TraceError(f"{path}: unknown trace format (header starts {','.join(header[:3])!r})")
    times: list[datetime] = []
    values: list[float] = []
    for line, row in enumerate(rows, start=2):
        if len(row) <= col:
            raise TraceError(f"{path}:{line}: row has too few columns")
        times.append(_utc(row[0], path, line))
        values.append(_number(row[col], path, line))
    step = times[1] - times[0]
    if step <= timedelta(0):
        raise TraceError(f"{path}: timestamps must increase")
    for line, (before, after) in enumerate(itertools.pairwise(times), start=3):
        if after - before != step:
            raise TraceError(f"{path}:{line}: irregular step or gap ({after - before} instead of {step})")
    return Trace(zone, signal, factor, times[0], step, tuple(values), str(path))


def load_forecast_trace(path: str | Path) -> ForecastTrace:
    """Load WattTime historical forecasts (`request_time,forecast_time,<region>`)."""
    path = Path(path)
    header, rows = _rows(path)
    if trace_kind(header) != "watttime-forecast":
        raise TraceError(f"{path}: not a forecast file (expected header request_time,forecast_time,<region>)")
    by_issue: dict[datetime, list[tuple[datetime, float]]] = {}
    for line, row in enumerate(rows, start=2):
        if len(row) < 3:
            raise TraceError(f"{path}:{line}: row has too few columns")
        issued = _utc(row[0], path, line)
        by_issue.setdefault(issued, []).append((_utc(row[1], path, line), _number(row[2], path, line)))
    issued_times = sorted(by_issue)
    first = sorted(by_issue[issued_times[0]])
    if len(first) < 2:
        raise TraceError(f"{path}: each forecast needs at least two points")
    step = first[1][0] - first[0][0]
    forecasts = tuple(
        tuple(IntensityPoint(t, t + step, v) for t, v in sorted(by_issue[issued])) for issued in issued_times
    )
    return ForecastTrace(header[2], "marginal", step, tuple(issued_times), forecasts, str(path))
