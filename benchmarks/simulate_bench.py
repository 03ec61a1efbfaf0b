"""Carbon savings of every policy on real traces, per trace, on data the settings were not tuned on.

Protocol: every setting (ensemble knobs, the forecast policy's risk fraction) was chosen on the first
half of 2022 (`--half h1`) of ES, US-CAL-CISO and NO; the reported numbers are the second half of
2022 (`--half h2`, 12 start dates per yearly trace) and traces never used for tuning at all (Brazil
2022, WattTime CAISO North 2023). Per trace and job mix: emissions summed over runs, saving vs
agnostic (run now at max replicas), its width and timing parts, the share of the exact optimum's
(MILP oracle) saving, the worst single run against run-now, and feasible deadlines met.

    python benchmarks/simulate_bench.py --half h2            # the reported table
    python benchmarks/simulate_bench.py --half h1 --starts 6 --risk 0 0.5 1.5 --no-watttime \\
        --mixes operator/gridwise/data/jobs-mix.yaml              # the tuning runs
    python benchmarks/simulate_bench.py --half h2 --foresight 24 72 --zones NO ES \\
        --mixes operator/gridwise/data/jobs-mix.yaml              # how much a better forecast is worth
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gridwise.carbon.traces import Trace, load_forecast_trace, load_trace
from gridwise.planner.risk import DEFAULT_RISK_FRACTION
from gridwise.simulate.cli import default_jobs_path
from gridwise.simulate.engine import SIM_POLICIES, SimSettings, default_slot, simulate
from gridwise.simulate.forecasts import ForecastSource, Live
from gridwise.simulate.jobs import load_jobs

EM_TUNED = ("ES", "US-CAL-CISO", "NO")
EM_UNSEEN = ("BR",)
LEADS_H = ((0, 3), (3, 12), (12, 24), (24, 48))  # forecast lead bands the error tables report


@dataclass
class Tally:
    emissions: dict[str, float] = field(default_factory=dict)
    energy: dict[str, float] = field(default_factory=dict)
    met: dict[str, int] = field(default_factory=dict)
    feasible: dict[str, int] = field(default_factory=dict)
    worst: dict[str, float] = field(default_factory=dict)  # max over runs of (policy - agnostic) / agnostic
    runs: int = 0
    jobs: int = 0


def starts_for(half: str, count: int) -> list[datetime]:
    first = datetime(2022, 1, 12, tzinfo=UTC) if half == "h1" else datetime(2022, 7, 3, tzinfo=UTC)
    span = timedelta(days=165)
    return [first + span * i / count for i in range(count)]


class Foresight(ForecastSource):
    """The ensemble, except that its first `hours` are the actual future with no error band.

    Diagnosis only: how much of the gap to the optimum a perfect forecast to that lead would close,
    i.e. whether the shortfall is in the first day's forecast or in the days after it.
    """

    def __init__(self, trace: Trace, hours: float) -> None:
        super().__init__(trace, "ensemble")
        self.steps = round(timedelta(hours=hours) / trace.step)

    def _make(self, now: datetime, horizon: timedelta) -> Live:
        made = super()._make(now, horizon)
        first = self.trace.index_of(now)
        actual = tuple(self.trace.points(first + 1, first + 1 + self.steps))[: len(made.forecast)]
        known = len(actual)
        return Live(
            made.current,
            actual + made.forecast[known:],
            (0.0,) * known + made.upper_error[known:],
            made.note,
        )


def run_case(
    label: str,
    trace_path: Path,
    mode: str,
    starts: list[datetime],
    jobs_path: str,
    policies: tuple[str, ...],
    risk: float,
    forecast_file: Path | None = None,
    foresight_hours: float | None = None,
) -> Tally:
    trace = load_trace(trace_path)
    provided = load_forecast_trace(forecast_file) if forecast_file else None
    source = (
        Foresight(trace, foresight_hours)
        if foresight_hours is not None
        else ForecastSource(trace, mode, provided)
    )
    tally = Tally()
    slot = default_slot(trace.step)
    for start in starts:
        jobs = load_jobs(jobs_path, start)
        base = 0.0
        for policy in policies:
            name, _, risk_text = policy.partition("@")
            settings = SimSettings(
                policy=name, slot=slot, risk_fraction=float(risk_text) if risk_text else risk
            )
            result = simulate(trace, jobs, settings, source)
            tally.emissions[policy] = tally.emissions.get(policy, 0.0) + result.emissions_g
            tally.energy[policy] = tally.energy.get(policy, 0.0) + result.energy_kwh
            tally.met[policy] = tally.met.get(policy, 0) + result.feasible_deadlines_met
            tally.feasible[policy] = tally.feasible.get(policy, 0) + result.feasible_jobs
            if policy == "agnostic":
                base = result.emissions_g
            elif base > 0:
                tally.worst[policy] = max(tally.worst.get(policy, -1.0), (result.emissions_g - base) / base)
        tally.runs += 1
        tally.jobs += len(jobs)
    return tally


def report(label: str, tally: Tally, policies: tuple[str, ...]) -> str:
    base, best = tally.emissions["agnostic"], tally.emissions.get("oracle")
    base_intensity = base / tally.energy["agnostic"]
    lines = [
        f"\n### {label}: {tally.runs} runs, {tally.jobs} jobs",
        "| policy | kgCO2 (sum) | kWh | saving vs agnostic | width | timing | share of optimum "
        "| worst run vs run-now | feasible deadlines met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for policy in policies:
        saved = base - tally.emissions[policy]
        width = (tally.energy["agnostic"] - tally.energy[policy]) * base_intensity
        share = "-" if best is None or base - best <= 0 else f"{100 * saved / (base - best):.0f}%"
        worst = tally.worst.get(policy)
        timing = saved - width
        lines.append(
            f"| {policy} | {tally.emissions[policy] / 1000:.1f} | {tally.energy[policy]:.0f} | "
            f"{100 * saved / base:+.1f}% | {100 * width / base:+.1f}% | {100 * timing / base:+.1f}% | "
            f"{share} | {'-' if worst is None else f'{100 * worst:+.1f}%'} | "
            f"{tally.met[policy]}/{tally.feasible[policy]} |"
        )
    return "\n".join(lines)


def forecast_errors(traces: Path, half: str) -> None:
    """MAE per lead of the ensemble, the original seasonal forecaster and persistence, past data only."""
    import numpy as np

    from gridwise.carbon.ensemble import EnsembleForecaster
    from gridwise.carbon.forecaster import SeasonalForecaster

    print(f"\n### Forecast error, {half}: MAE g/kWh (ensemble / seasonal / persistence), issued every 18 h")
    print("| trace | signal | 1-3 h | 3-12 h | 12-24 h | 24-48 h | upper band covers | issues |")
    print("|---|---|---|---|---|---|---|---|")
    names = [f"electricitymaps_{z}_2022_hourly.csv" for z in (*EM_TUNED, *EM_UNSEEN)]
    for name in [*names, "watttime_caiso-north_2023-06_actual.csv"]:
        trace = load_trace(traces / name)
        values = np.array(trace.values)
        per_hour = round(timedelta(hours=1) / trace.step)
        ahead = 48 * per_hour
        ens, seasonal = EnsembleForecaster(), SeasonalForecaster()
        need = ens.history_needed(trace.step)
        n = len(values)
        lo, hi = (0, n // 2) if half == "h1" else (n // 2, n)
        if name.startswith("watttime"):
            lo, hi, ahead = 7 * 24 * per_hour, n, 24 * per_hour
        errors: dict[str, list[np.ndarray]] = {"ensemble": [], "seasonal": [], "persistence": []}
        covered: list[np.ndarray] = []
        for issue in range(max(lo, 8 * 24 * per_hour), hi - ahead, 18 * per_hour):
            truth = values[issue : issue + ahead]
            got = ens.predict(values[max(0, issue - need) : issue], trace.step, ahead, trace.time_at(issue))
            guess = np.array(got.values)
            errors["ensemble"].append(np.abs(guess - truth))
            covered.append(truth <= guess + np.array(got.upper_error))
            old = seasonal.predict(list(values[max(0, issue - 200 * per_hour) : issue]), trace.step, ahead)
            errors["seasonal"].append(np.abs(np.array(old) - truth))
            errors["persistence"].append(np.abs(values[issue - 1] - truth))
        cells = []
        for a, b in LEADS_H:
            if b * per_hour > ahead:
                cells.append("-")
                continue
            parts = [np.array(errors[k])[:, a * per_hour : b * per_hour].mean() for k in errors]
            cells.append(" / ".join(f"{x:.1f}" for x in parts))
        print(
            f"| {name} | {trace.signal_type} | {' | '.join(cells)} | {100 * np.array(covered).mean():.0f}% "
            f"| {len(covered)} |",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=Path, default=Path("/work/shared/traces"))
    parser.add_argument("--half", choices=("h1", "h2"), default="h2")
    parser.add_argument("--starts", type=int, default=12, help="start dates per yearly trace")
    parser.add_argument("--wt-starts", type=int, default=4, help="start dates on the 2-week WattTime trace")
    parser.add_argument(
        "--risk", type=float, nargs="*", default=[], help="extra forecast-policy rows at these risk fractions"
    )
    parser.add_argument(
        "--mixes",
        nargs="+",
        default=[default_jobs_path(), default_jobs_path().replace("jobs-mix.yaml", "jobs-mix-slack.yaml")],
    )
    parser.add_argument("--no-watttime", action="store_true")
    parser.add_argument("--zones", nargs="+", help="Electricity Maps zones (default: all of the half's)")
    parser.add_argument(
        "--foresight",
        type=float,
        nargs="+",
        help="diagnosis: also run forecast and carbonscaler with the actual future for this many hours "
        "ahead (the ensemble after), one table per value",
    )
    parser.add_argument("--forecast-errors", action="store_true", help="only the forecast error table")
    args = parser.parse_args()
    if args.forecast_errors:
        forecast_errors(args.traces, args.half)
        return 0
    zones = args.zones or (EM_TUNED if args.half == "h1" else EM_TUNED + EM_UNSEEN)
    policies = SIM_POLICIES + tuple(f"forecast@{r:g}" for r in args.risk)
    print(
        f"default risk fraction {DEFAULT_RISK_FRACTION:g}; half {args.half}; {args.starts} starts per trace"
    )
    for mix in args.mixes:
        name = Path(mix).name
        for zone in zones:
            began = time.perf_counter()
            path = args.traces / f"electricitymaps_{zone}_2022_hourly.csv"
            tally = run_case(
                zone,
                path,
                "ensemble",
                starts_for(args.half, args.starts),
                mix,
                policies,
                DEFAULT_RISK_FRACTION,
            )
            print(
                report(
                    f"{zone} 2022 {args.half}, average (direct), {name}, ensemble forecast", tally, policies
                )
            )
            print(f"(simulated in {time.perf_counter() - began:.0f} s)", flush=True)
            for hours in args.foresight or ():
                seen = ("agnostic", "forecast", "carbonscaler", "oracle")
                tally = run_case(
                    zone, path, "ensemble", starts_for(args.half, args.starts), mix, seen,
                    DEFAULT_RISK_FRACTION, foresight_hours=hours,
                )  # fmt: skip
                label = f"{zone} 2022 {args.half}, {name}, actual future for {hours:g} h, ensemble after"
                print(report(label, tally, seen), flush=True)
        if not args.no_watttime:
            wt = args.traces / "watttime_caiso-north_2023-06_actual.csv"
            fc = args.traces / "watttime_caiso-north_2023-06_forecast.csv"
            wt_starts = [
                datetime(2023, 6, 11, tzinfo=UTC) + timedelta(hours=24 * i) for i in range(args.wt_starts)
            ]
            for mode, file in (("ensemble", None), ("provided", fc)):
                began = time.perf_counter()
                tally = run_case("WT", wt, mode, wt_starts, mix, policies, DEFAULT_RISK_FRACTION, file)
                print(report(f"CAISO North 2023-06, marginal, {name}, {mode} forecast", tally, policies))
                print(f"(simulated in {time.perf_counter() - began:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
