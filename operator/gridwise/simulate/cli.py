"""`gridwise simulate`: replay a real carbon trace through the planner and report emissions and deadlines."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from gridwise.carbon.traces import (
    TRACE_COLUMNS,
    ForecastTrace,
    Trace,
    TraceError,
    load_forecast_trace,
    load_trace,
)
from gridwise.clock import parse_utc
from gridwise.planner.model import DEFAULT_SWITCHING_COST_GPU_HOURS
from gridwise.planner.risk import DEFAULT_RISK_FRACTION, DEFAULT_RISK_RAMP_HOURS
from gridwise.simulate.engine import (
    SIM_POLICIES,
    SimResult,
    SimSettings,
    default_slot,
    simulate,
)
from gridwise.simulate.forecasts import FORECASTS, ForecastSource
from gridwise.simulate.jobs import JobsError, SimJob, load_jobs
from gridwise.simulate.operator_path import DEFAULT_MAX_PAUSES_PER_DAY
from gridwise.simulate.report import compare_table, savings, to_json

EPILOG = """\
examples:
  # the shipped job mix on Spain 2022, forecast policy with a forecaster that sees only the past
  gridwise simulate --trace traces/electricitymaps_ES_2022_hourly.csv --jobs mix.yaml --policy forecast

  # every policy and baseline side by side, starting on 1 March (relative job times count from --start)
  gridwise simulate --trace ES.csv --jobs mix.yaml --compare --start 2022-03-01T00:00Z

  # WattTime marginal signal with WattTime's own historical forecasts, JSON out, a plot
  gridwise simulate --trace watttime_caiso-north_2023-06_actual.csv --jobs mix.yaml \\
      --forecast provided --forecast-file watttime_caiso-north_2023-06_forecast.csv --json --plot run.png

The shipped job mix is at: {mix}
Traces: Electricity Maps exports (average signal; --trace-column direct|lca) or WattTime 5-min
actuals (marginal). Holes of up to 6 h are filled by interpolation, with a warning. Average and
marginal results are different quantities: the output always names one.
Policies: agnostic (run now at max), stretch (no signal: fewest replicas that meet the deadline),
threshold, waitawhile (Wiesner et al. 2021: cheapest slots at fixed size), carbonscaler (Hanafy et al.
2024: marginal carbon efficiency), forecast (gridwise: the operator's decide() on the ensemble forecast
shaded by its error band), oracle (the exact optimum with the actual future: a MILP, evaluation only).
agnostic, threshold and forecast run through the live operator's decide() and accounting.
Savings are split into width (energy saved, priced at run-now's intensity) and timing (the rest).
Exit codes: 0 ok, 2 bad input (a one-line message on stderr)."""


def default_jobs_path() -> str:
    return str(resources.files("gridwise") / "data" / "jobs-mix.yaml")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "simulate",
        help="replay a carbon-intensity trace through the planner",
        description="Replay a real grid trace through the operator's own decisions, re-deciding every "
        "slot with the forecast known at that time, and report emissions, energy and deadlines.",
        epilog=EPILOG.format(mix=default_jobs_path()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", required=True, help="actual-intensity CSV (Electricity Maps or WattTime)")
    parser.add_argument("--jobs", default=None, help="job mix YAML (default: the shipped mix)")
    parser.add_argument("--policy", choices=SIM_POLICIES, default="forecast", help="scheduling policy")
    parser.add_argument(
        "--forecast",
        choices=FORECASTS,
        default="ensemble",
        help="what the planner may know (default: %(default)s, learned from the past only)",
    )
    parser.add_argument("--forecast-file", help="WattTime historical forecast CSV; needs --forecast provided")
    parser.add_argument(
        "--trace-column", choices=TRACE_COLUMNS, default="direct", help="Electricity Maps column"
    )
    parser.add_argument(
        "--start", help="origin of relative job times, ISO 8601 UTC (default: trace start + 2 days)"
    )
    parser.add_argument(
        "--slot-minutes",
        type=int,
        default=None,
        help="re-planning slot, a multiple of the trace step (default: the step, at least 15 min)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="g/kWh for the threshold policy (default: median of the past 7 days)",
    )
    parser.add_argument(
        "--switching-cost",
        type=float,
        default=DEFAULT_SWITCHING_COST_GPU_HOURS,
        help="GPU-hours of work lost per resume (default %(default)s)",
    )
    parser.add_argument(
        "--max-pauses-per-day",
        type=int,
        default=DEFAULT_MAX_PAUSES_PER_DAY,
        help="cap on pauses per job per day, as the operator's policy.maxPausesPerDay (default %(default)s)",
    )
    parser.add_argument(
        "--risk",
        type=float,
        default=DEFAULT_RISK_FRACTION,
        help="forecast policy: plan on forecast + this share of its upper error band, ramped in over "
        f"the first {DEFAULT_RISK_RAMP_HOURS:g} h of lead (0 = trust the forecast; default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", help="write a PNG of intensity, run windows and replicas")
    parser.add_argument(
        "--compare", action="store_true", help="run every policy and baseline on the same input"
    )


def _fail(message: str) -> int:
    print(f"gridwise simulate: error: {message}", file=sys.stderr)
    return 2


def _fmt(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M")


def check_provided(provided: ForecastTrace, trace: Trace, jobs: list[SimJob]) -> list[str]:
    """Errors for a forecast file that cannot apply; warnings for one that covers only part of the run."""
    if provided.zone.strip().lower() != trace.zone.strip().lower():
        raise ValueError(
            f"the forecast file {provided.source} is for region {provided.zone!r} but the trace is "
            f"{trace.zone!r}: use a forecast for the same region"
        )
    if provided.signal_type != trace.signal_type:
        raise ValueError(
            f"the forecast file is a {provided.signal_type} signal but the trace is {trace.signal_type}"
        )
    begin, end = min(j.submit for j in jobs), max(j.deadline for j in jobs)
    first, last = provided.issued[0], provided.forecasts[-1][-1].end
    if last <= begin or first >= end:
        raise ValueError(
            f"the forecast file covers {_fmt(first)} .. {_fmt(last)} UTC, none of the run "
            f"{_fmt(begin)} .. {_fmt(end)} UTC"
        )
    if first > begin or last < end:
        return [
            f"the forecast file covers {_fmt(first)} .. {_fmt(last)} UTC, only part of the run "
            f"{_fmt(begin)} .. {_fmt(end)} UTC; outside it the ensemble forecasts without the provider "
            "(its members learned from the trace's past)"
        ]
    return []


def run(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    try:
        if args.forecast_file and args.forecast != "provided":
            raise ValueError(
                f"--forecast-file is used only with --forecast provided (got --forecast {args.forecast})"
            )
        trace = load_trace(args.trace, args.trace_column)
        warnings += [f"{args.trace}: {note}" for note in trace.notes]
        provided = load_forecast_trace(args.forecast_file) if args.forecast_file else None
        if args.start:
            try:
                start = parse_utc(args.start)
            except (ValueError, OverflowError):
                raise ValueError(
                    f"--start {args.start!r} is not an ISO 8601 time like 2022-06-01T00:00:00Z"
                ) from None
        else:
            start = trace.start + timedelta(days=2)
        jobs = load_jobs(args.jobs or default_jobs_path(), start)
        if provided is not None:
            warnings += check_provided(provided, trace, jobs)
        slot = timedelta(minutes=args.slot_minutes) if args.slot_minutes else default_slot(trace.step)
        if not timedelta(minutes=1) <= slot <= timedelta(days=1):
            raise ValueError("--slot-minutes must be in 1..1440")
        forecasts = ForecastSource(trace, args.forecast, provided)
        policies = list(SIM_POLICIES) if args.compare else [args.policy]
        results: list[SimResult] = []
        for policy in policies:
            settings = SimSettings(
                policy=policy,
                slot=slot,
                threshold_grams_per_kwh=args.threshold,
                switching_cost_gpu_hours=args.switching_cost,
                max_pauses_per_day=args.max_pauses_per_day,
                risk_fraction=args.risk,
            )
            results.append(simulate(trace, jobs, settings, forecasts))
        if args.plot:
            from gridwise.simulate.plot import plot

            plot(
                next(r for r in results if r.policy == (args.policy if not args.compare else "forecast")),
                args.plot,
            )
    except (TraceError, JobsError) as exc:
        return _fail(str(exc))
    except (ValueError, OSError) as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    for warning in warnings:
        print(f"gridwise simulate: warning: {warning}", file=sys.stderr)
    if args.json:
        payload: dict[str, Any]
        if args.compare:
            payload = {
                "signal_type": trace.signal_type,
                "results": [to_json(r) for r in results],
                "savings": savings(results),
            }
        else:
            payload = to_json(results[0])
        payload["warnings"] = warnings
        print(json.dumps(payload, indent=2))
    elif args.compare:
        print(compare_table(results))
    else:
        r = results[0]
        print(
            f"{r.policy} ({r.forecast} forecast) on {trace.zone}, {trace.signal_type} signal: "
            f"{r.emissions_g / 1000:.2f} kgCO2, {r.energy_kwh:.1f} kWh, deadlines met {r.deadlines_met}/"
            f"{len(r.jobs)} (feasible {r.feasible_deadlines_met}/{r.feasible_jobs}), pauses {r.pauses}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (the lead mounts add_parser/run under `gridwise`)."""
    parser = argparse.ArgumentParser(prog="gridwise")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_parser(subparsers)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
