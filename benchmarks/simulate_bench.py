"""Savings of each policy over `agnostic` on the shared real traces, with the shipped job mix.

Runs the job mix at several start dates per trace (monthly for the 2022 yearly traces), sums emissions
per policy over all runs, and reports saving vs agnostic and share of the oracle's saving, with the
signal type of every number. Usage:
    python benchmarks/simulate_bench.py --traces /work/shared/traces
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gridwise.carbon.forecaster import SeasonalForecaster, evaluate
from gridwise.carbon.traces import load_forecast_trace, load_trace
from gridwise.planner import POLICIES
from gridwise.simulate.cli import default_jobs_path
from gridwise.simulate.engine import SimResult, SimSettings, simulate
from gridwise.simulate.forecasts import ForecastSource
from gridwise.simulate.jobs import load_jobs


def run_case(
    trace_path: Path,
    mode: str,
    starts: list[datetime],
    forecast_file: Path | None,
    slot: timedelta,
    jobs_path: str,
) -> None:
    trace = load_trace(trace_path)
    provided = load_forecast_trace(forecast_file) if forecast_file else None
    source = ForecastSource(trace, mode, provided)
    totals = dict.fromkeys(POLICIES, 0.0)
    energy = dict.fromkeys(POLICIES, 0.0)
    met = dict.fromkeys(POLICIES, 0)
    feasible = dict.fromkeys(POLICIES, 0)
    shares: list[float] = []
    jobs_total = 0
    began = time.perf_counter()
    for start in starts:
        jobs = load_jobs(jobs_path, start)
        results: dict[str, SimResult] = {}
        for policy in POLICIES:
            result = simulate(trace, jobs, SimSettings(policy=policy, slot=slot), source)
            results[policy] = result
            totals[policy] += result.emissions_g
            energy[policy] += result.energy_kwh
            met[policy] += result.feasible_deadlines_met
            feasible[policy] += result.feasible_jobs
        jobs_total += len(jobs)
        base, best = results["agnostic"].emissions_g, results["oracle"].emissions_g
        if base - best > 1e-9:
            shares.append((base - results["forecast"].emissions_g) / (base - best))
    elapsed = time.perf_counter() - began
    print(
        f"\n### {trace_path.name}: {trace.zone}, {trace.signal_type} signal ({trace.emission_factor}), "
        f"forecast={mode}, {len(starts)} start dates x {jobs_total // len(starts)} jobs, slot {slot}"
    )
    print(
        "| policy | kgCO2 (sum) | kWh | saving vs agnostic | share of oracle saving "
        "| feasible deadlines met |"
    )
    print("|---|---|---|---|---|---|")
    base, best = totals["agnostic"], totals["oracle"]
    for policy in POLICIES:
        saving = 100 * (base - totals[policy]) / base
        share = 100 * (base - totals[policy]) / (base - best) if base - best > 1e-9 else float("nan")
        label = {"agnostic": "-", "oracle": "perfect"}.get(policy, mode)
        print(
            f"| {policy} ({label}) | {totals[policy] / 1000:.1f} | {energy[policy]:.0f} | {saving:+.1f}% | "
            f"{share:.0f}% | {met[policy]}/{feasible[policy]} |"
        )
    if shares:
        print(
            f"per-start share of oracle saving for forecast: min {100 * min(shares):.0f}%, "
            f"median {100 * sorted(shares)[len(shares) // 2]:.0f}%, max {100 * max(shares):.0f}%"
        )
    print(f"(simulated in {elapsed:.1f} s)")


def forecast_errors(traces: Path) -> None:
    """The seasonal forecaster's error, issued every 6 h from past data only, 24 h ahead."""
    print("\n### Seasonal forecaster error (24 h ahead, issued every 6 h, after 7 days of history)")
    print("| trace | signal | MAE g/kWh | MAPE | persistence MAE g/kWh | samples |")
    print("|---|---|---|---|---|---|")
    names = [f"electricitymaps_{z}_2022_hourly.csv" for z in ("ES", "US-CAL-CISO", "NO")]
    for name in [*names, "watttime_caiso-north_2023-06_actual.csv"]:
        trace = load_trace(traces / name)
        error = evaluate(trace, SeasonalForecaster(), horizon=timedelta(hours=24), every=timedelta(hours=6))
        print(
            f"| {name} | {trace.signal_type} ({trace.emission_factor}) | {error.mae:.1f} | "
            f"{error.mape:.1f}% | "
            f"{error.persistence_mae:.1f} | {error.samples} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=Path, default=Path("/work/shared/traces"))
    parser.add_argument("--jobs", default=default_jobs_path())
    parser.add_argument("--months", type=int, default=12, help="monthly start dates for the yearly traces")
    args = parser.parse_args()
    forecast_errors(args.traces)
    monthly = [datetime(2022, month, 3, tzinfo=UTC) for month in range(1, args.months + 1)]
    for zone in ("ES", "US-CAL-CISO", "NO"):
        run_case(
            args.traces / f"electricitymaps_{zone}_2022_hourly.csv",
            "seasonal",
            monthly,
            None,
            timedelta(hours=1),
            args.jobs,
        )
    wt = args.traces / "watttime_caiso-north_2023-06_actual.csv"
    wt_starts = [datetime(2023, 6, day, tzinfo=UTC) for day in (10, 13, 16)]
    run_case(wt, "seasonal", wt_starts, None, timedelta(minutes=15), args.jobs)
    run_case(
        wt,
        "provided",
        wt_starts,
        args.traces / "watttime_caiso-north_2023-06_forecast.csv",
        timedelta(minutes=15),
        args.jobs,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
