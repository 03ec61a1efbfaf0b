"""Forecasters that generalise: several simple models, weighted per horizon by their own recent error.

No single model wins on every grid: persistence is best an hour ahead, a daily profile on a solar grid,
a level that drifts for days on a hydro or wind grid. So every member forecasts from the same history,
each is scored out of sample on the last `score_days` (forecasts issued every `issue_every` from the
history before that moment only), and the combination weights each member per lead-time bucket by the
inverse of its squared mean absolute error there. A provider's own forecasts (Electricity Maps,
WattTime, NESO, Carbon Aware SDK) join as one more member once issued forecasts have been recorded,
and are weighted by their measured error the same way.

The same backtest gives the combined forecast's error distribution per lead (signed: actual minus
forecast), which the planner uses to defer work only when the saving beats how wrong the forecast
can be at that horizon. Everything is learned online from the history the signal keeps; nothing is
fitted to a particular zone. Pure numpy, no I/O; a small memo keeps repeated calls cheap.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from gridwise.carbon.forecaster import regular_history
from gridwise.carbon.reading import EPOCH, IntensityPoint

Array = npt.NDArray[np.float64]
# Lead-time bucket edges in hours: errors and weights are kept per bucket (a lead h falls in the
# first bucket whose edge is >= h).
BUCKET_EDGES_HOURS = (1.0, 3.0, 6.0, 12.0, 24.0, 48.0, math.inf)


@dataclass(frozen=True)
class EnsembleSettings:
    """Every knob of the ensemble. Defaults were chosen on Jan-Jun 2022 only (BENCHMARKS.md)."""

    window_days: float = 14.0  # history the members may fit on
    score_days: float = 7.0  # how far back members are scored
    issue_every: timedelta = timedelta(hours=3)  # backtest issue stride
    anomaly_decay_hours: float = 6.0
    level_halflife_hours: float = 6.0
    ridge: float = 1.0
    upper_quantile: float = 0.75  # the error band the planner shades the future with
    weight_power: float = 2.0  # weight = MAE ** -power: 2 is inverse-MSE-like, higher picks the best


@dataclass(frozen=True)
class LeadError:
    """The combined forecast's error at one lead bucket, gCO2/kWh (signed = actual - forecast)."""

    max_lead_hours: float
    mae: float
    upper: float  # the settings' upper quantile of the signed error
    samples: int


@dataclass(frozen=True)
class EnsembleForecast:
    """Predicted values for steps 1..n after the history, the members' weights and the error band."""

    values: tuple[float, ...]
    upper_error: tuple[float, ...]  # per predicted step: how much higher the actual may be
    weights: dict[str, tuple[float, ...]]  # member -> weight per bucket
    errors: tuple[LeadError, ...]  # per bucket, of the combination

    def shaded(self, fraction: float = 1.0) -> tuple[float, ...]:
        """Values raised by `fraction` of the upper error band: what to plan on to be safe."""
        return tuple(v + fraction * max(0.0, e) for v, e in zip(self.values, self.upper_error, strict=True))


Member = Callable[[Array, int, int, float], Array]


def _bucket(lead_hours: float) -> int:
    return next(i for i, edge in enumerate(BUCKET_EDGES_HOURS) if lead_hours <= edge + 1e-9)


def _profile(hist: Array, target: npt.NDArray[np.int_], period: int, days: int) -> Array:
    """Mean of the same phase over the last `days` periods, for absolute target indexes (may be NaN).

    Each target takes its own `days` most recent values, whatever the other targets need, so the value
    at one lead never depends on how far ahead the caller asked.
    """
    total = np.zeros(len(target))
    count = np.zeros(len(target))
    n = len(hist)
    for k in range(1, days + 8):
        index = target - k * period
        ok = (index >= 0) & (index < n) & (count < days)
        if ok.any():
            total[ok] += hist[index[ok]]
            count[ok] += 1
        elif (index < 0).all():
            break
        if (count >= days).all():
            break
    out = np.full(len(target), np.nan)
    has = count > 0
    out[has] = total[has] / count[has]
    return out


def persistence(hist: Array, n: int, period: int, step_hours: float) -> Array:
    return np.full(n, hist[-1])


def _seasonal(days: int, decay_hours: float) -> Member:
    def member(hist: Array, n: int, period: int, step_hours: float) -> Array:
        last = len(hist) - 1
        base = _profile(hist, np.array([last]), period, days)[0]
        anomaly = 0.0 if math.isnan(base) else hist[-1] - base
        target = np.arange(last + 1, last + 1 + n)
        seasonal = _profile(hist, target, period, days)
        weight = np.exp(-np.arange(1, n + 1) * step_hours / decay_hours)
        out = seasonal + anomaly * weight
        return np.asarray(np.where(np.isnan(out), hist[-1], out), dtype=np.float64)

    return member


def _level_shape(days: int, halflife_hours: float) -> Member:
    """A daily shape (profile minus its mean) on top of a smoothed current level that persists.

    Unlike the seasonal members the anomaly does not decay: on hydro- and wind-driven grids the level
    drifts for days, and yesterday's level is a worse guess than today's.
    """

    def member(hist: Array, n: int, period: int, step_hours: float) -> Array:
        span = min(len(hist), days * period)
        recent = hist[-span:]
        if span < period:
            return np.full(n, hist[-1])
        phase = (np.arange(len(hist) - span, len(hist))) % period
        sums = np.bincount(phase, weights=recent, minlength=period)
        counts = np.bincount(phase, minlength=period)
        shape = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        shape = shape - np.nanmean(shape)
        shape = np.nan_to_num(shape)
        alpha = 1 - 0.5 ** (step_hours / halflife_hours)
        tail = min(len(hist), period)
        residual = hist[-tail:] - shape[np.arange(len(hist) - tail, len(hist)) % period]
        level = residual[0]
        for value in residual[1:]:
            level += alpha * (value - level)
        target = np.arange(len(hist), len(hist) + n) % period
        return np.asarray(np.maximum(0.0, level + shape[target]), dtype=np.float64)

    return member


def _lag_features(
    hist: Array, origins: npt.NDArray[np.int_], lead: int | npt.NDArray[np.int_], period: int
) -> Array:
    """Rows [1, last, 7-period profile of the target's phase, same phase one period back, last-period mean].

    Only values before each origin are used. Vectorised over origins (and over leads, one per origin):
    this runs on every re-plan.
    """
    cums = np.concatenate(([0.0], np.cumsum(hist)))
    leads = np.asarray(lead)
    target = origins - 1 + leads
    k0 = np.reshape(-(-leads // period), (-1, 1))
    idx = target[:, None] - (k0 + np.arange(7)[None, :]) * period
    ok = idx >= 0
    vals = np.where(ok, hist[np.clip(idx, 0, None)], 0.0)
    count = ok.sum(axis=1)
    prof = np.where(count > 0, vals.sum(axis=1) / np.maximum(count, 1), hist[origins - 1])
    lag = np.where(ok[:, 0], vals[:, 0], hist[origins - 1])
    lo = np.maximum(origins - period, 0)
    mean = (cums[origins] - cums[lo]) / (origins - lo)
    return np.column_stack([np.ones(len(origins)), hist[origins - 1], prof, lag, mean])


def _bucket_leads(bucket: int, step_hours: float) -> tuple[int, int]:
    """First and last lead (in steps) of a bucket; the open last bucket is taken as one day long."""
    lo = 0.0 if bucket == 0 else BUCKET_EDGES_HOURS[bucket - 1]
    hi = BUCKET_EDGES_HOURS[bucket]
    if math.isinf(hi):
        hi = lo + 24.0
    first = math.floor(lo / step_hours + 1e-9) + 1
    last = math.floor(hi / step_hours + 1e-9)
    return first, last


def _regression(ridge: float, window_days: float) -> Member:
    """Ridge regression per lead bucket on lags and a daily profile (see `_lag_features`).

    Each bucket is fitted at the middle lead of the whole bucket, not of the leads asked for, so a
    longer request never changes the shorter leads.
    """

    def member(hist: Array, n: int, period: int, step_hours: float) -> Array:
        if len(hist) < 3 * period:
            return np.full(n, hist[-1])
        stride = max(1, period // 24)
        start = max(period, len(hist) - int(window_days * period))
        out = np.full(n, hist[-1])
        leads = np.arange(1, n + 1)
        buckets = np.array([_bucket(lead * step_hours) for lead in leads])
        for bucket in np.unique(buckets):
            in_bucket = leads[buckets == bucket]
            first, last = _bucket_leads(int(bucket), step_hours)
            mid = first + (last - first + 1) // 2
            origins = np.arange(start, len(hist) - mid + 1, stride)
            if len(origins) < 12:
                continue
            x = _lag_features(hist, origins, mid, period)
            y = hist[origins - 1 + mid]
            scale = np.maximum(np.abs(x).max(axis=0), 1e-9)
            xs = x / scale
            beta = np.linalg.solve(xs.T @ xs + ridge * np.eye(xs.shape[1]), xs.T @ y) / scale
            here = np.full(len(in_bucket), len(hist))
            out[in_bucket - 1] = _lag_features(hist, here, in_bucket, period) @ beta
        return np.asarray(np.maximum(0.0, out), dtype=np.float64)

    return member


def members(settings: EnsembleSettings) -> dict[str, Member]:
    return {
        "persistence": persistence,
        "seasonal-1d": _seasonal(1, settings.anomaly_decay_hours),
        "seasonal-7d": _seasonal(7, settings.anomaly_decay_hours),
        "weekly": _weekly(settings.anomaly_decay_hours),
        "level-shape": _level_shape(7, settings.level_halflife_hours),
        "regression": _regression(settings.ridge, settings.window_days),
    }


def _weekly(decay_hours: float) -> Member:
    daily = _seasonal(1, decay_hours)

    def member(hist: Array, n: int, period: int, step_hours: float) -> Array:
        return (
            daily(hist, n, 7 * period, step_hours)
            if len(hist) > 7 * period
            else daily(hist, n, period, step_hours)
        )

    return member


PROVIDER_MAX_AGE = timedelta(hours=6)  # an older provider forecast is not used or scored


@dataclass
class _ProviderLog:
    """Forecasts a provider issued, by issue time, so they can be scored like any member.

    Bounded: the backtest only asks for the latest forecast at or before each issue time (multiples of
    `grid` since the epoch) and for the newest one, so a forecast superseded before the next issue time
    is dropped, and so is everything older than `keep`. A live signal records one every few minutes.
    """

    grid: timedelta
    keep: timedelta
    issued: list[datetime] = field(default_factory=list)
    points: list[tuple[IntensityPoint, ...]] = field(default_factory=list)

    def add(self, at: datetime, points: Sequence[IntensityPoint]) -> None:
        if self.issued and at == self.issued[-1]:
            self.points[-1] = tuple(points)  # a fresher fetch for the same issue time
            return
        if self.issued and at < self.issued[-1]:
            return
        if self.issued:
            prev = self.issued[-1]
            next_issue = EPOCH + self.grid * math.ceil((prev - EPOCH) / self.grid)
            if next_issue >= at:  # no issue time falls in [prev, at): nobody can ask for prev any more
                self.issued.pop()
                self.points.pop()
        self.issued.append(at)
        self.points.append(tuple(points))
        drop = bisect.bisect_left(self.issued, at - self.keep)
        if drop:
            del self.issued[:drop], self.points[:drop]

    def at(self, when: datetime, max_age: timedelta) -> tuple[IntensityPoint, ...]:
        index = bisect.bisect_right(self.issued, when) - 1
        if index < 0 or when - self.issued[index] > max_age:
            return ()
        return self.points[index]


class EnsembleForecaster:
    """Combines the members (and a provider's forecasts, if recorded) by their rolling error per lead.

    Call `predict(values, step, n, end_time)` with a regular history ending at `end_time`; the memo is
    keyed by absolute issue time, so replaying a trace or a live signal re-scores only new issue times.
    """

    def __init__(self, settings: EnsembleSettings | None = None, memo_size: int = 4096) -> None:
        self.settings = settings or EnsembleSettings()
        self._members = members(self.settings)
        self._memo: OrderedDict[tuple[str, datetime], Array] = OrderedDict()
        self._memo_size = memo_size
        keep = timedelta(days=self.settings.score_days + 1) + PROVIDER_MAX_AGE
        self._provider = _ProviderLog(grid=self.settings.issue_every, keep=keep)

    @property
    def member_names(self) -> tuple[str, ...]:
        return (*self._members, "provider")

    def history_needed(self, step: timedelta) -> int:
        """Past steps `predict` uses: the scored span plus a full member window before its first issue.

        With less, the oldest issue times would see a shorter window than they saw in earlier calls, and
        the memo (keyed by issue time) would hand out values that depend on the order of calls.
        """
        period = max(1, round(timedelta(days=1) / step))
        return int(timedelta(days=self.settings.window_days + self.settings.score_days) / step) + period + 1

    def memo_footprint(self) -> tuple[int, float]:
        """(entries, KiB) the memo holds: what one signal's forecaster costs in memory."""
        return len(self._memo), sum(a.nbytes for a in self._memo.values()) / 1024

    def provider_forecasts(self) -> int:
        """How many provider forecasts are kept for scoring (bounded; see _ProviderLog)."""
        return len(self._provider.issued)

    def record_provider(self, issued_at: datetime, points: Sequence[IntensityPoint]) -> None:
        """Remember a provider forecast as issued, to use and score it from now on."""
        if points:
            self._provider.add(issued_at, points)

    def _member(self, name: str, hist: Array, n: int, period: int, step: timedelta, end: datetime) -> Array:
        key = (name, end)
        cached = self._memo.get(key)
        if cached is None or len(cached) < n:
            window = min(len(hist), int(timedelta(days=self.settings.window_days) / step) + period)
            cached = self._members[name](hist[-window:], n, period, step.total_seconds() / 3600)
            self._memo[key] = cached
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        else:
            self._memo.move_to_end(key)
        return cached

    def _provider_values(self, end: datetime, step: timedelta, n: int) -> Array:
        """The provider's latest forecast issued at or before `end`, on the step grid (NaN where silent)."""
        out = np.full(n, np.nan)
        points = self._provider.at(end, max_age=PROVIDER_MAX_AGE)
        for point in points:
            first = math.floor((point.start - end) / step)
            last = math.ceil((point.end - end) / step)
            for index in range(max(0, first), min(n, last)):
                out[index] = point.grams_per_kwh
        return out

    def predict(
        self, values: Sequence[float] | Array, step: timedelta, n: int, end: datetime
    ) -> EnsembleForecast:
        """Forecast the n steps after `values` (a regular history whose last step ends at `end`)."""
        hist = np.asarray(values, dtype=np.float64)
        if len(hist) == 0:
            raise ValueError("the forecaster needs at least one past value")
        if n < 1:
            raise ValueError("n must be >= 1")
        period_f = timedelta(days=1) / step
        if period_f < 1 or abs(period_f - round(period_f)) > 1e-9:
            raise ValueError(f"the step {step} must divide a day")
        period = round(period_f)
        step_hours = step.total_seconds() / 3600
        # Members are scored up to the last finite bucket edge whatever n is (longer leads borrow that
        # bucket's error): the forecast at a lead never depends on how far ahead the caller asked, so a
        # live signal's 48 h and a simulator's longer request agree on every lead they share.
        scored = max(1, math.floor(BUCKET_EDGES_HOURS[-2] / step_hours + 1e-9))
        width = max(n, scored)  # the "now" prediction is memoised at least as long as a backtest one
        buckets_all = np.array([_bucket((i + 1) * step_hours) for i in range(width)])
        n_buckets = len(BUCKET_EDGES_HOURS)
        names = list(self._members)
        sq = {name: np.zeros(n_buckets) for name in [*names, "provider"]}
        cnt = {name: np.zeros(n_buckets) for name in [*names, "provider"]}
        # Backtest: issue times in the last score_days, each from the history before it only.
        # Issue times sit on multiples of issue_every since the epoch, so successive calls share them.
        stride = max(1, int(self.settings.issue_every / step))
        span = int(timedelta(days=self.settings.score_days) / step)
        offset = round((end - EPOCH) / step) - len(hist)  # absolute step index of hist[0]
        first = max(1, len(hist) - span, min(len(hist) - 1, period))
        first += (-(offset + first)) % stride
        origins = list(range(first, len(hist), stride))
        back: list[tuple[int, dict[str, Array]]] = []
        for origin in origins:
            horizon = min(scored, len(hist) - origin)
            if horizon < 1:
                continue
            issue_end = end - step * (len(hist) - origin)
            preds = {
                name: self._member(name, hist[:origin], scored, period, step, issue_end)[:horizon]
                for name in names
            }
            preds["provider"] = self._provider_values(issue_end, step, horizon)
            truth = hist[origin : origin + horizon]
            for name, pred in preds.items():
                ok = ~np.isnan(pred)
                err = np.abs(pred[ok] - truth[ok])
                np.add.at(sq[name], buckets_all[:horizon][ok], err)
                np.add.at(cnt[name], buckets_all[:horizon][ok], 1)
            back.append((origin, preds))
        mae = {name: _fill_buckets(sq[name], cnt[name]) for name in sq}
        weights = {name: np.maximum(mae[name], 1e-3) ** -self.settings.weight_power for name in mae}
        for name in mae:
            weights[name] = np.where(np.isnan(weights[name]), 0.0, weights[name])
        buckets = buckets_all[:n]
        now_preds = {name: self._member(name, hist, width, period, step, end)[:n] for name in names}
        now_preds["provider"] = self._provider_values(end, step, n)
        combined = _combine(now_preds, weights, buckets)
        # The combination's own signed errors, from the same backtest, per bucket.
        signed: list[list[float]] = [[] for _ in range(n_buckets)]
        for origin, preds in back:
            horizon = min(scored, len(hist) - origin)
            guess = _combine(preds, weights, buckets_all[:horizon])
            for lead, (g, t) in enumerate(zip(guess, hist[origin : origin + horizon], strict=True)):
                signed[buckets_all[lead]].append(float(t - g))
        errors = []
        upper_by_bucket = np.zeros(n_buckets)
        last_upper = last_mae = 0.0
        for b in range(n_buckets):
            if signed[b]:
                arr = np.array(signed[b])
                last_upper = float(np.quantile(arr, self.settings.upper_quantile))
                last_mae = float(np.mean(np.abs(arr)))
            upper_by_bucket[b] = last_upper
            errors.append(LeadError(BUCKET_EDGES_HOURS[b], last_mae, last_upper, len(signed[b])))
        total = sum(weights.values())
        norm = {
            name: tuple(float(x) for x in np.where(total > 0, w / np.where(total > 0, total, 1), 0.0))
            for name, w in weights.items()
        }
        return EnsembleForecast(
            values=tuple(max(0.0, float(v)) for v in combined),
            upper_error=tuple(float(upper_by_bucket[b]) for b in buckets),
            weights=norm,
            errors=tuple(errors),
        )

    def _regular(
        self, history: Sequence[IntensityPoint], start: datetime
    ) -> tuple[list[float], timedelta, datetime]:
        """History before `start` on a regular grid ending at its last point; values carry over gaps."""
        return regular_history(history, start, self.history_needed)

    def forecast(
        self, history: Sequence[IntensityPoint], start: datetime, end: datetime
    ) -> tuple[IntensityPoint, ...]:
        """Drop-in for SeasonalForecaster.forecast: points from `start` to `end` on the history's grid."""
        return self.live(history, (), start, end)[0]

    def live(
        self,
        history: Sequence[IntensityPoint],
        provider_forecast: Sequence[IntensityPoint],
        start: datetime,
        end: datetime,
    ) -> tuple[tuple[IntensityPoint, ...], tuple[float, ...]]:
        """For a live signal: record the provider's forecast issued now, return the ensemble's points from
        `start` to `end` and each point's upper error (g/kWh) for the planner.

        The provider's forecast becomes one member, weighted by the error its earlier forecasts made. It
        is recorded at `start`, the end of the history it goes with, so the backtest scores it at the
        leads it is used at (a later fetch for the same `start` replaces it).
        """
        values, step, grid_end = self._regular(history, start)
        if not values:
            return (), ()
        self.record_provider(start, provider_forecast)
        lead_steps = max(1, math.ceil((end - grid_end) / step))
        result = self.predict(values, step, lead_steps, grid_end)
        points, upper = [], []
        for index, value in enumerate(result.values):
            begin = grid_end + step * index
            if begin + step > start:
                points.append(IntensityPoint(begin, begin + step, value))
                upper.append(result.upper_error[index])
        return tuple(points), tuple(upper)


def _fill_buckets(total: Array, count: Array) -> Array:
    """Mean absolute error per bucket; a bucket never scored borrows the nearest shorter one (NaN if none)."""
    out = np.full(len(total), np.nan)
    last = np.nan
    for b in range(len(total)):
        if count[b] > 0:
            last = total[b] / count[b]
        out[b] = last
    return out


def _combine(preds: dict[str, Array], weights: dict[str, Array], buckets: npt.NDArray[np.int_]) -> Array:
    n = len(buckets)
    num = np.zeros(n)
    den = np.zeros(n)
    for name, pred in preds.items():
        p = pred[:n]
        w = weights[name][buckets]
        ok = ~np.isnan(p) & (w > 0)
        num[ok] += w[ok] * p[ok]
        den[ok] += w[ok]
    # No member scored yet at this lead (a signal just started): the provider's own forecast where it
    # has one, else persistence.
    fallback = preds["persistence"][:n]
    provider = preds.get("provider")
    if provider is not None:
        fallback = np.where(np.isnan(provider[:n]), fallback, provider[:n])
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), fallback)
