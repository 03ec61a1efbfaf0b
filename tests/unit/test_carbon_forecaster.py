"""The seasonal forecaster's error on real traces is bounded and beats persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conftest import FIXTURES
from gridwise.carbon.forecaster import SeasonalForecaster, evaluate
from gridwise.carbon.reading import IntensityPoint
from gridwise.carbon.traces import TraceError, load_forecast_trace, load_trace


def test_error_bounded_on_real_caiso_average_trace() -> None:
    trace = load_trace(FIXTURES / "em_us-cal-ciso_2022-04_hourly.csv")
    error = evaluate(trace, SeasonalForecaster(), horizon=timedelta(hours=24), warmup=timedelta(days=2))
    # Measured on this slice: MAE ~18 g/kWh, MAPE ~12.5% (persistence ~66 g/kWh); full year in BENCHMARKS.md.
    assert error.samples > 3000
    assert error.mape < 15
    assert error.mae < 0.6 * error.persistence_mae


def test_error_bounded_on_real_watttime_marginal_trace() -> None:
    trace = load_trace(FIXTURES / "wt_caiso-north_2023-06-08_actual.csv")
    error = evaluate(trace, SeasonalForecaster(), horizon=timedelta(hours=12), warmup=timedelta(days=1))
    assert error.mae < error.persistence_mae


def test_forecast_continues_a_daily_pattern() -> None:
    start = datetime(2022, 1, 1, tzinfo=UTC)
    values = [100 + (200 if 10 <= h % 24 < 16 else 0) for h in range(72)]
    history = [
        IntensityPoint(start + timedelta(hours=i), start + timedelta(hours=i + 1), v)
        for i, v in enumerate(values)
    ]
    out = SeasonalForecaster().forecast(history, start + timedelta(hours=72), start + timedelta(hours=96))
    assert len(out) == 24
    assert out[12].grams_per_kwh == pytest.approx(300, abs=1) and out[20].grams_per_kwh == pytest.approx(
        100, abs=1
    )


def test_persistence_without_a_day_of_history() -> None:
    assert SeasonalForecaster().predict([50.0, 60.0], timedelta(hours=1), 3) == [60.0, 60.0, 60.0]


def test_trace_loader_rejects_bad_files(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "x.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    with pytest.raises(TraceError, match="unknown trace format"):
        load_trace(folder / "x.csv")
    (folder / "gap.csv").write_text(
        "time,R\n2023-01-01 00:00:00,1\n2023-01-01 00:05:00,2\n2023-01-01 00:15:00,3\n"
    )
    filled = load_trace(folder / "gap.csv")  # a short hole is filled, and said (test_trace_loading.py)
    assert filled.values == (1.0, 2.0, 2.5, 3.0) and filled.notes
    (folder / "gap.csv").write_text(
        "time,R\n2023-01-01 00:00:00,1\n2023-01-01 00:05:00,2\n2023-01-01 07:00:00,3\n"
    )
    with pytest.raises(TraceError, match="missing"):
        load_trace(folder / "gap.csv")
    (folder / "neg.csv").write_text("time,R\n2023-01-01 00:00:00,1\n2023-01-01 00:05:00,-2\n")
    with pytest.raises(TraceError, match="out of range"):
        load_trace(folder / "neg.csv")
    with pytest.raises(TraceError, match="forecast file"):
        load_trace(FIXTURES / "wt_caiso-north_2023-06-08_forecast.csv")
    forecasts = load_forecast_trace(FIXTURES / "wt_caiso-north_2023-06-08_forecast.csv")
    assert forecasts.step == timedelta(minutes=5) and len(forecasts.issued) == 5 * 288
