"""Loaders for recorded carbon-intensity CSVs (the formats in shared/traces), shared by replay and simulation.

Formats, told apart by the header:
- Electricity Maps export: `Datetime (UTC),...,Carbon Intensity gCO₂eq/kWh (direct),... (LCA),...` as
  2022's exports spell it, or `...,Zone id,Carbon intensity gCO₂eq/kWh (direct),... (Life cycle),...` as
  the data portal has since 2024 (average signal; pick the direct or life-cycle column).
- WattTime actual: `time,<region>`, 5-min marginal (MOER) values already in gCO2/kWh.
- WattTime historical forecasts: `request_time,forecast_time,<region>`, each row one point of a forecast
  issued at request_time for the step starting at forecast_time.

Real exports are not always clean, and a user should not have to edit one by hand: a UTF-8 byte-order
mark, header rows repeated where yearly files were concatenated, rows out of time order, exact
duplicate rows, and short holes (missing rows or empty values, up to MAX_FILLED_GAP) are repaired, and
each repair is reported in `Trace.notes` so the caller can warn. Anything else (a longer hole, an
irregular step, two different values for one time, a value out of range) is an error naming the line.
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

TRACE_COLUMNS = ("direct", "lca")
# Header names as compared: lower case, CO₂ spelt CO2. Both Electricity Maps spellings per column.
_EM_INTENSITY = {
    "direct": ("carbon intensity gco2eq/kwh (direct)",),
    "lca": ("carbon intensity gco2eq/kwh (lca)", "carbon intensity gco2eq/kwh (life cycle)"),
}
_EM_ZONE = "zone id"
# The longest hole (missing rows or empty values) filled by linear interpolation. A few hours is a
# feed outage that interpolation bridges well; a longer hole would be made-up data in a result.
MAX_FILLED_GAP = timedelta(hours=6)
_MISSING = ("", "nan", "null", "none", "na", "n/a")  # how spreadsheets and pandas write "no value"


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
    notes: tuple[str, ...] = field(default=(), compare=False)  # repairs made while loading (warnings)

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
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except FileNotFoundError:
        raise TraceError(f"trace file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from None
    if len(rows) < 3:
        raise TraceError(f"{path}: a trace needs a header and at least two rows")
    return [cell.strip() for cell in rows[0]], rows[1:]


def read_header(path: str | Path) -> list[str]:
    """The first row's cells (a byte-order mark dropped), to tell a file's kind without loading it."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        try:
            return next(csv.reader([handle.readline(4096)]), [])
        except csv.Error as exc:
            raise TraceError(f"cannot read trace {path}: {exc}") from None


def _norm(name: str) -> str:
    return name.strip().lower().replace("₂", "2")


def trace_kind(header: list[str]) -> str:
    if header and _norm(header[0]) == "datetime (utc)":
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
        names = [_norm(cell) for cell in header]
        wanted = _EM_INTENSITY[column]
        found = [i for i, name in enumerate(names) if name in wanted]
        if not found or _EM_ZONE not in names:
            missing = wanted[0] if not found else _EM_ZONE
            raise TraceError(f"{path}: Electricity Maps export lacks the column {missing!r} (any case)")
        col, zone_col = found[0], names.index(_EM_ZONE)
        signal, factor, zone = "average", ("direct" if column == "direct" else "lifecycle"), ""
    elif kind == "watttime":
        col, zone_col, signal, factor, zone = 1, -1, "marginal", "direct", header[1]
    elif kind == "watttime-forecast":
        raise TraceError(
            f"{path}: this is a forecast file (request_time,forecast_time,...), not actual values"
        )
    else:
        raise TraceError(f"{path}: unknown trace format (header starts {','.join(header[:3])!r})")
    notes: list[str] = []
    samples: dict[datetime, tuple[float | None, int]] = {}  # time -> (value or None if empty, line)
    repeated_headers = duplicates = 0
    ordered = True
    last: datetime | None = None
    for line, row in enumerate(rows, start=2):
        if [cell.strip() for cell in row] == header:
            repeated_headers += 1  # yearly exports concatenated, each with its header
            continue
        if len(row) <= col:
            raise TraceError(f"{path}:{line}: row has too few columns")
        when = _utc(row[0], path, line)
        value = None if row[col].strip().lower() in _MISSING else _number(row[col], path, line)
        if zone_col >= 0 and not zone:
            zone = row[zone_col].strip()
        if when in samples:
            seen, first_line = samples[when]
            if seen is not None and value is not None and seen != value:
                raise TraceError(
                    f"{path}:{line}: {_fmt(when)} UTC appears again with another value "
                    f"({value:g}; line {first_line} has {seen:g})"
                )
            duplicates += 1
            if seen is None:
                samples[when] = (value, first_line)
            continue
        ordered = ordered and (last is None or when > last)
        last = when
        samples[when] = (value, line)
    if repeated_headers:
        notes.append(f"skipped {repeated_headers} repeated header row(s)")
    if duplicates:
        notes.append(f"dropped {duplicates} duplicate row(s)")
    if not ordered:
        notes.append("rows were not in time order; sorted them")
    rows_in_order = [(t, *samples[t]) for t in sorted(samples)]
    with_value = [i for i, (_, value, _) in enumerate(rows_in_order) if value is not None]
    known = rows_in_order[with_value[0] : with_value[-1] + 1] if with_value else []
    trimmed = len(rows_in_order) - len(known)
    if trimmed:
        notes.append(f"dropped {trimmed} row(s) with no value at the start or end")
    if len(known) < 2:
        raise TraceError(f"{path}: a trace needs at least two rows with a value")
    step = _common_step([t for t, _, _ in known])
    values, filled = _regular(known, step, path)
    if filled:
        holes, longest = len(filled), max(filled)
        notes.append(
            f"filled {sum(filled)} missing step(s) in {holes} hole(s) (longest {step * longest}) by "
            f"linear interpolation between their neighbours"
        )
    return Trace(zone, signal, factor, known[0][0], step, tuple(values), str(path), tuple(notes))


def _fmt(when: datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M}"


def _common_step(times: list[datetime]) -> timedelta:
    """The most common spacing: one hole or stray row must not set the step."""
    counts: dict[timedelta, int] = {}
    for before, after in itertools.pairwise(times):
        counts[after - before] = counts.get(after - before, 0) + 1
    return max(counts, key=lambda step: (counts[step], -step.total_seconds()))


def _regular(
    known: list[tuple[datetime, float | None, int]], step: timedelta, path: Path
) -> tuple[list[float], list[int]]:
    """Values on the regular grid from the first time, holes filled; and the length of each hole."""
    values: list[float] = []
    holes: list[int] = []
    run = 0  # missing steps since the last value
    prev_time = known[0][0]
    for when, value, line in known:
        gap = when - prev_time
        if gap % step:
            raise TraceError(
                f"{path}:{line}: irregular step ({gap} after {_fmt(prev_time)} UTC; "
                f"the trace's step is {step})"
            )
        run += max(0, gap // step - 1)
        prev_time = when
        if value is None:
            run += 1
            continue
        if run:
            if step * run > MAX_FILLED_GAP:
                raise TraceError(
                    f"{path}:{line}: {step * run} of data missing before {_fmt(when)} UTC, more than "
                    f"the {MAX_FILLED_GAP} gridwise fills; use a trace without the hole, or split it there"
                )
            before = values[-1]
            values += [before + (value - before) * k / (run + 1) for k in range(1, run + 1)]
            holes.append(run)
            run = 0
        values.append(value)
    return values, holes


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
