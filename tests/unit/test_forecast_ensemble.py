"""The ensemble forecaster: members weighted by their own out-of-sample error, a provider that joins
them by its measured error, and an error band that holds on data it was not computed on."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import FIXTURES
from gridwise.carbon.ensemble import EnsembleForecaster
from gridwise.carbon.reading import IntensityPoint
from gridwise.carbon.traces import load_trace

START = datetime(2022, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def daily(hours: int, noise: float = 0.0, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [200 + 100 * math.sin(2 * math.pi * h / 24) + rng.gauss(0, noise) for h in range(hours)]


def walk(hours: int, seed: int = 0) -> list[float]:
    """A level that drifts for days with no daily shape (a hydro or wind grid)."""
    rng = random.Random(seed)
    out, level = [], 200.0
    for _ in range(hours):
        level = max(10.0, level + rng.gauss(0, 8))
        out.append(level)
    return out


def test_daily_pattern_is_learned() -> None:
    values = daily(24 * 21)
    ens = EnsembleForecaster()
    result = ens.predict(values[:-24], HOUR, 24, START + HOUR * (len(values) - 24))
    assert np.abs(np.array(result.values) - np.array(values[-24:])).max() < 5
    assert len(result.upper_error) == 24


def test_drifting_level_prefers_persistence_like_members() -> None:
    values = walk(24 * 30, seed=3)
    ens = EnsembleForecaster()
    errors, persistence = [], []
    for issue in range(24 * 22, 24 * 30 - 6, 5):
        got = ens.predict(values[:issue], HOUR, 6, START + HOUR * issue).values
        errors += [abs(g - t) for g, t in zip(got, values[issue : issue + 6], strict=True)]
        persistence += [abs(values[issue - 1] - t) for t in values[issue : issue + 6]]
    # No daily shape to exploit: the ensemble must not do worse than persistence by much.
    assert np.mean(errors) <= 1.1 * np.mean(persistence)
    weights = ens.predict(values, HOUR, 6, START + HOUR * len(values)).weights
    assert weights["persistence"][0] + weights["level-shape"][0] > weights["seasonal-1d"][0]


def test_a_good_provider_gets_the_weight_and_a_bad_one_does_not() -> None:
    values = daily(24 * 20, noise=15, seed=1)
    end = START + HOUR * len(values)

    def run(noise: float) -> dict[str, tuple[float, ...]]:
        rng = random.Random(7)
        ens = EnsembleForecaster()
        for issue in range(24 * 8, len(values)):
            at = START + HOUR * issue
            points = [
                IntensityPoint(at + HOUR * k, at + HOUR * (k + 1), values[issue + k] + rng.gauss(0, noise))
                for k in range(min(6, len(values) - issue))
            ]
            ens.record_provider(at, points)
        return ens.predict(values, HOUR, 6, end).weights

    assert run(noise=1.0)["provider"][0] > 0.8
    assert run(noise=200.0)["provider"][0] < 0.05


def test_error_band_covers_about_its_quantile_on_unseen_data() -> None:
    values = daily(24 * 40, noise=20, seed=5)
    ens = EnsembleForecaster()
    hits = total = 0
    for issue in range(24 * 22, 24 * 40 - 12, 7):
        result = ens.predict(values[:issue], HOUR, 12, START + HOUR * issue)
        for v, e, t in zip(result.values, result.upper_error, values[issue : issue + 12], strict=True):
            hits += t <= v + e
            total += 1
    assert 0.6 <= hits / total <= 0.9  # the band is the 75th percentile of the signed error


def test_real_traces_not_worse_than_persistence_beyond_three_hours() -> None:
    for name in ("em_us-cal-ciso_2022-04_hourly.csv", "wt_caiso-north_2023-06-08_actual.csv"):
        trace = load_trace(FIXTURES / name)
        per_hour = round(HOUR / trace.step)
        ens = EnsembleForecaster()
        ahead = 12 * per_hour
        errors, persistence = [], []
        for issue in range(len(trace.values) // 2, len(trace.values) - ahead, 6 * per_hour):
            got = ens.predict(trace.values[:issue], trace.step, ahead, trace.time_at(issue)).values
            truth = trace.values[issue : issue + ahead]
            errors += [abs(g - t) for g, t in zip(got[3 * per_hour :], truth[3 * per_hour :], strict=True)]
            persistence += [abs(trace.values[issue - 1] - t) for t in truth[3 * per_hour :]]
        assert np.mean(errors) < np.mean(persistence), name


def test_bad_input_is_refused() -> None:
    ens = EnsembleForecaster()
    with pytest.raises(ValueError, match="at least one past value"):
        ens.predict([], HOUR, 3, START)
    with pytest.raises(ValueError, match="must divide a day"):
        ens.predict([1.0, 2.0], timedelta(minutes=7), 3, START)


def test_drop_in_forecast_interface() -> None:
    values = daily(24 * 10)
    history = [IntensityPoint(START + HOUR * i, START + HOUR * (i + 1), v) for i, v in enumerate(values)]
    begin = START + HOUR * len(values)
    out = EnsembleForecaster().forecast(history, begin, begin + HOUR * 24)
    assert len(out) == 24 and out[0].start == begin and all(p.grams_per_kwh >= 0 for p in out)
    assert EnsembleForecaster().forecast([], begin, begin + HOUR) == ()


def test_live_blend_learns_which_provider_to_trust() -> None:
    """Live: each call records the provider's forecast; a provider that is right wins its leads."""
    values = daily(24 * 16, noise=25, seed=9)
    ens = EnsembleForecaster()
    history = [IntensityPoint(START + HOUR * i, START + HOUR * (i + 1), v) for i, v in enumerate(values)]
    points: tuple[IntensityPoint, ...] = ()
    for issue in range(24 * 9, len(values) - 3):
        at = START + HOUR * issue
        truth = [IntensityPoint(at + HOUR * k, at + HOUR * (k + 1), values[issue + k]) for k in range(3)]
        points, upper = ens.live(history[:issue], truth, at, at + HOUR * 12)
        assert len(points) == len(upper) == 12 and points[0].start == at
    # The last provider forecast was exact: the ensemble follows it at the leads it covers.
    issue = len(values) - 4
    assert points[0].grams_per_kwh == pytest.approx(values[issue], abs=3)


def test_a_lead_does_not_depend_on_how_far_ahead_was_asked() -> None:
    """A live signal asks 48 h, the simulator to the end of its run: they must agree where they overlap,
    and the memo must not make the answer depend on the order of calls."""
    values = daily(24 * 24, noise=20, seed=4)
    end = START + HOUR * len(values)
    long = EnsembleForecaster().predict(values, HOUR, 80, end)
    for n in (6, 30, 48):
        short = EnsembleForecaster().predict(values, HOUR, n, end)
        assert short.values == pytest.approx(long.values[:n], abs=1e-9)
        assert short.upper_error == pytest.approx(long.upper_error[:n], abs=1e-9)
    shared = EnsembleForecaster()
    shared.predict(values, HOUR, 80, end)
    again = shared.predict(values, HOUR, 30, end)  # sliced from the memo
    assert again.values == pytest.approx(long.values[:30], abs=1e-9)


def test_the_provider_log_stays_bounded() -> None:
    """A live signal records a provider forecast every few minutes, for months: only what the backtest
    can ask for is kept (the last before each issue time, over the scored days)."""
    ens = EnsembleForecaster()
    at = START
    for _ in range(12 * 24 * 30):  # every 5 minutes for 30 days
        ens.record_provider(at, [IntensityPoint(at, at + HOUR, 100.0)])
        at += timedelta(minutes=5)
    days = ens.settings.score_days + 1 + 6 / 24
    assert ens.provider_forecasts() <= days * 24 / 3 + 2


def test_before_anything_is_scored_the_providers_forecast_is_used() -> None:
    """A signal that just started has one value: persistence would flatten a good provider forecast."""
    ens = EnsembleForecaster()
    now = START + HOUR * 10
    current = IntensityPoint(now, now + HOUR, 300.0)
    provided = [IntensityPoint(now + HOUR * k, now + HOUR * (k + 1), 300.0 - 10 * k) for k in range(1, 7)]
    points, upper = ens.live([current], provided, now + HOUR, now + HOUR * 7)
    assert [p.grams_per_kwh for p in points] == pytest.approx([p.grams_per_kwh for p in provided])
    assert upper == (0.0,) * 6
