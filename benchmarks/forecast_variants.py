"""Ensemble variants against the shipped ensemble: mean absolute error per lead on one half of 2022.

Tuning aid for issue 13, run on the first half only (`--half h1`): sharper member weights
(`weight_power=P`) and short-term trend features for the regression member (`trend=1,3`: the change
over the last 1 and 3 hours). Forecasts are issued every 18 h, 48 h ahead, from the past only, as in
`simulate_bench.py --forecast-errors`.

    python benchmarks/forecast_variants.py --half h1 weight_power=4 weight_power=8 trend=1 trend=1,3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulate_bench import EM_TUNED, LEADS_H  # the tuning traces (Brazil stays unseen), the leads

import gridwise.carbon.ensemble as ensemble
from gridwise.carbon.traces import Trace, load_trace

Features = Callable[..., npt.NDArray[np.float64]]


def with_trend(hours: tuple[int, ...], base: Features) -> Features:
    """The regression's features plus the change over each of the last `hours`."""

    def features(
        hist: npt.NDArray[np.float64], origins: npt.NDArray[np.int_], lead: object, period: int
    ) -> npt.NDArray[np.float64]:
        per_hour = max(1, period // 24)
        last = hist[origins - 1]
        extra = [last - hist[np.maximum(origins - 1 - h * per_hour, 0)] for h in hours]
        return np.column_stack([base(hist, origins, lead, period), *extra])

    return features


@contextmanager
def variant(spec: str) -> Iterator[ensemble.EnsembleSettings]:
    """Settings for `spec` ('' = shipped, 'weight_power=P', 'trend=1,3'), patched in for the block."""
    key, _, value = spec.partition("=")
    if key == "trend":
        shipped = ensemble._lag_features
        ensemble._lag_features = with_trend(tuple(int(h) for h in value.split(",")), shipped)
        try:
            yield ensemble.EnsembleSettings()
        finally:
            ensemble._lag_features = shipped
    elif key == "weight_power":
        yield ensemble.EnsembleSettings(weight_power=float(value))
    elif key:
        raise SystemExit(f"unknown variant {spec!r}: use weight_power=P or trend=H[,H...]")
    else:
        yield ensemble.EnsembleSettings()


def errors(trace: Trace, half: str, settings: ensemble.EnsembleSettings) -> str:
    values = np.array(trace.values)
    n, ahead, per_day = len(values), 48, 24
    lo, hi = (0, n // 2) if half == "h1" else (n // 2, n)
    forecaster = ensemble.EnsembleForecaster(settings)
    need = forecaster.history_needed(trace.step)
    rows = []
    for issue in range(max(lo, 8 * per_day), hi - ahead, 18):
        got = forecaster.predict(
            values[max(0, issue - need) : issue], trace.step, ahead, trace.time_at(issue)
        )
        rows.append(np.abs(np.array(got.values) - values[issue : issue + ahead]))
    table = np.array(rows)
    return " / ".join(f"{table[:, a:b].mean():.2f}" for a, b in LEADS_H)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=Path, default=Path("/work/shared/traces"))
    parser.add_argument("--half", choices=("h1", "h2"), default="h1")
    parser.add_argument(
        "variants", nargs="*", help="weight_power=P or trend=H[,H...] (the shipped one always)"
    )
    args = parser.parse_args()
    specs = ["", *args.variants]
    print(f"MAE g/kWh at leads {', '.join(f'{a}-{b} h' for a, b in LEADS_H)}, {args.half}, hourly traces")
    for zone in EM_TUNED:
        trace = load_trace(args.traces / f"electricitymaps_{zone}_2022_hourly.csv")
        cells = []
        for spec in specs:
            with variant(spec) as settings:
                cells.append(f"{spec or 'shipped'}: {errors(trace, args.half, settings)}")
        print(f"{zone}: " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
