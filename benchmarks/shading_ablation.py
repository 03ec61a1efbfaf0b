"""Ablation of how the forecast policy shades its forecast with the error band (issue 13), H1 only.

Runs run-now (`agnostic`) and the `forecast` policy under alternative shading rules, each swapped into
the live operator's `decide()` in place of `_planning_forecast` (everything else as shipped), and prints
per trace and mix the summed kgCO2 and the worst run against run-now, plus the sum over traces.

    python benchmarks/shading_ablation.py --half h1 --starts 6 --variants uniform:0.5 relative:0.5 \\
        --mixes operator/gridwise/data/jobs-mix.yaml operator/gridwise/data/jobs-mix-slack.yaml

A variant is `rule:fraction[:parameter]`:
- uniform:f        every predicted point raised by f x its upper band (the rule shipped before the ramp)
- relative:f       raised by f x band x min(1, band / spread), spread = p90 - p10 of the forecast to the
                   deadline: a band small against the forecast's own variation barely moves a value
- lead:f:H         raised by f x band x min(1, lead / H hours): near slots (re-planned soon) unshaded;
                   lead:0.5:24 is the default since it was chosen here (planner/risk.py)
- recourse:f       raised by f x band x lead / (deadline - now): the later a slot, the less time is left
                   to recover if it turns out dirty
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulate_bench import EM_TUNED, starts_for

from gridwise import decide as decide_module
from gridwise.api import JobSpec
from gridwise.carbon.reading import IntensityPoint, SignalReading
from gridwise.carbon.traces import load_trace
from gridwise.simulate.engine import SimSettings, default_slot, simulate
from gridwise.simulate.forecasts import ForecastSource
from gridwise.simulate.jobs import load_jobs

Weight = Callable[[float, float, float, float], float]  # (band, lead h, window h, spread) -> share of band

ORIGINAL = decide_module._planning_forecast


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def weight_for(rule: str, fraction: float, parameter: float | None) -> Weight:
    if rule == "uniform":
        return lambda band, lead, window, spread: fraction
    if rule == "relative":
        return lambda band, lead, window, spread: (
            fraction * min(1.0, band / spread) if spread > 0 else fraction
        )
    if rule == "lead":
        hours = parameter if parameter is not None else 24.0
        return lambda band, lead, window, spread: fraction * min(1.0, lead / hours)
    if rule == "recourse":
        return lambda band, lead, window, spread: (
            fraction * min(1.0, lead / window) if window > 0 else fraction
        )
    raise ValueError(f"unknown rule {rule!r}")


def planning_forecast(weight: Weight) -> Callable[..., list[IntensityPoint]]:
    def shaded(
        spec: JobSpec,
        reading: SignalReading,
        current: IntensityPoint,
        now: datetime,
        risk_fraction: float,
        risk_ramp_hours: float = 0.0,
    ) -> list[IntensityPoint]:
        ordered = ORIGINAL(spec, reading, current, now, 0.0)
        if spec.policy.type != "forecast" or not reading.forecast_upper:
            return ordered
        band = {p.start: e for p, e in zip(reading.forecast, reading.upper_error(), strict=True)}
        window = max(0.0, (spec.deadline - now).total_seconds() / 3600)
        inside = [p.grams_per_kwh for p in ordered if p.start < spec.deadline]
        spread = _quantile(inside, 0.9) - _quantile(inside, 0.1)
        out = []
        for p in ordered:
            e = max(0.0, band.get(p.start, 0.0)) if p is not current else 0.0
            lead = (p.start - now).total_seconds() / 3600
            out.append(IntensityPoint(p.start, p.end, p.grams_per_kwh + weight(e, lead, window, spread) * e))
        return out

    return shaded


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=Path, default=Path("/work/shared/traces"))
    parser.add_argument("--half", choices=("h1",), default="h1", help="tuning data only")
    parser.add_argument("--starts", type=int, default=6)
    parser.add_argument("--variants", nargs="+", default=["uniform:0.5"])
    parser.add_argument("--mixes", nargs="+", required=True)
    parser.add_argument("--reference", action="store_true", help="also CarbonScaler and the oracle")
    args = parser.parse_args()
    variants = []
    for text in args.variants:
        rule, fraction, *rest = text.split(":")
        variants.append((text, weight_for(rule, float(fraction), float(rest[0]) if rest else None)))
    for mix in args.mixes:
        totals: dict[str, float] = {}
        per_zone: dict[tuple[str, str], float] = {}
        worst: dict[str, tuple[float, str]] = {}
        for zone in EM_TUNED:
            began = time.perf_counter()
            trace = load_trace(args.traces / f"electricitymaps_{zone}_2022_hourly.csv")
            source = ForecastSource(trace, "ensemble")
            slot = default_slot(trace.step)
            for start in starts_for(args.half, args.starts):
                jobs = load_jobs(mix, start)
                base = simulate(trace, jobs, SimSettings(policy="agnostic", slot=slot), source).emissions_g
                totals["agnostic"] = totals.get("agnostic", 0.0) + base
                per_zone[zone, "agnostic"] = per_zone.get((zone, "agnostic"), 0.0) + base
                for ref in ("carbonscaler", "oracle") if args.reference else ():
                    got = simulate(trace, jobs, SimSettings(policy=ref, slot=slot), source).emissions_g
                    totals[ref] = totals.get(ref, 0.0) + got
                    per_zone[zone, ref] = per_zone.get((zone, ref), 0.0) + got
                    if (got - base) / base > worst.get(ref, (-1.0, ""))[0]:
                        worst[ref] = ((got - base) / base, f"{zone} {start:%m-%d}")
                for name, weight in variants:
                    decide_module._planning_forecast = planning_forecast(weight)
                    try:
                        got = simulate(
                            trace, jobs, SimSettings(policy="forecast", slot=slot), source
                        ).emissions_g
                    finally:
                        decide_module._planning_forecast = ORIGINAL
                    totals[name] = totals.get(name, 0.0) + got
                    per_zone[zone, name] = per_zone.get((zone, name), 0.0) + got
                    rel = (got - base) / base
                    if name not in worst or rel > worst[name][0]:
                        worst[name] = (rel, f"{zone} {start:%m-%d}")
            print(f"({Path(mix).name} {zone} simulated in {time.perf_counter() - began:.0f} s)", flush=True)
        print(f"\n### {Path(mix).name}, {args.half}, {args.starts} starts x {', '.join(EM_TUNED)}")
        print(f"| variant | kgCO2 (sum) | {' | '.join(EM_TUNED)} | worst run vs run-now |")
        print("|---|---|" + "---|" * len(EM_TUNED) + "---|")
        names = [*(("carbonscaler", "oracle") if args.reference else ()), *(n for n, _ in variants)]
        for name in ["agnostic", *names]:
            cells = []
            for zone in EM_TUNED:
                kg = per_zone[zone, name] / 1000
                if args.reference and name != "agnostic":
                    saved = per_zone[zone, "agnostic"] - per_zone[zone, name]
                    best = per_zone[zone, "agnostic"] - per_zone[zone, "oracle"]
                    cells.append(f"{kg:.2f} ({100 * saved / best:.1f}%)" if best > 0 else f"{kg:.2f}")
                else:
                    cells.append(f"{kg:.2f}")
            rel_text = "-"
            if name in worst:
                rel, where = worst[name]
                rel_text = f"{100 * rel:+.1f}% ({where})"
            print(f"| {name} | {totals[name] / 1000:.2f} | {' | '.join(cells)} | {rel_text} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
