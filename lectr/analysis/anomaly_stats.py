"""The baselines of the anomaly detector: per metric, how far a window of recent hours is from normal.

Each baseline class is built for one scope's hourly columns (index = hours since the series'
first hour, the last one ``t``, the last complete hour) and answers ``window(L)`` for the hours
``t-L+1 .. t`` with a ``Deviation``: the window's value, the baseline mean and standard deviation
of that same quantity (so ``(current - mean) / std == sigma``), and the score thresholds apply to.
Nothing reads data after ``t``, and baselines end before the longest window, so an incident is
never part of its own baseline. ``README.md`` → "Understanding" says in words how each is built:

- ``SeasonalSum`` (requests, cost): ``E(s) = w · m(s)``, same hour of day × weekday factor, the
  factor pooled over last week's days of the same kind;
- ``ErrorRate``, ``LatencyP95``, ``ModelMix``: in ``anomaly_rates``.

Cost is also tested with traffic held fixed (``anomaly_unit_cost.UnitCost``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

HOURS_PER_DAY = 24
BASELINE_DAYS = 7
BASELINE_HOURS = BASELINE_DAYS * HOURS_PER_DAY
_MAD_TO_SIGMA = 1.4826
_NORMAL = NormalDist()
_MAX_Z = 37.0  # beyond this a tail probability is below double precision
_UNKNOWN_DAY_FLOOR = 0.25
_CUT_SEARCH = 8  # hours either side of the quietest hour where a day may really start
_TRIM_SIGMA = 4.0  # a past hour this far from its day's level does not set the level


@dataclass(frozen=True, slots=True)
class Deviation:
    current: float
    mean: float
    std: float
    sigma: float
    volume: float  # requests (or expected requests) behind the figure, for minimum volumes
    detail: dict
    # the test statistic thresholds apply to: ``sigma`` itself, or, for small counts, the normal
    # quantile of the exact Poisson tail (a handful of errors is likelier than a normal tail says)
    score: float | None = None

    @property
    def z(self) -> float:
        return self.sigma if self.score is None else self.score


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if not n:
        raise ValueError("median of nothing")
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


def mad_sigma(values: Sequence[float]) -> float:
    """A robust standard deviation: 1.4826 × the median absolute deviation."""
    c = median(values)
    return _MAD_TO_SIGMA * median([abs(v - c) for v in values])


def poisson_upper_z(k: int, lam: float) -> float:
    """The normal quantile of P(X >= k) for X ~ Poisson(lam): a z-score with the exact tail."""
    if lam <= 0:
        return _MAX_Z
    log_term = -lam + k * math.log(lam) - math.lgamma(k + 1)
    term, total, i = math.exp(log_term), 0.0, k
    while term > 0 and (i - k < 10_000):
        total += term
        i += 1
        term *= lam / i
        if term < total * 1e-12:
            break
    if total <= 1e-300:
        return _MAX_Z
    return min(_MAX_Z, -_NORMAL.inv_cdf(min(total, 0.5)))


def same_hour_median(x: Sequence[float], s: int) -> tuple[float, int]:
    """``(m(s), days used)``: median of ``x[s - 24i]`` for i = 1..7 that exist."""
    # only hours that exist: ``x`` ends at the evaluated hour, so nothing later is ever read
    vals = [x[s - HOURS_PER_DAY * i] for i in range(1, BASELINE_DAYS + 1)
            if 0 <= s - HOURS_PER_DAY * i < len(x)]
    return (median(vals), len(vals)) if vals else (0.0, 0)


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    pairs = sorted(zip(values, weights, strict=True))
    half, acc = sum(weights) / 2, 0.0
    for v, w in pairs:
        acc += w
        if acc >= half:
            return v
    return pairs[-1][0]


class SeasonalSum:
    """Baseline of an additive hourly metric (requests, cost) at hour ``t``; ``window(L)`` tests it.

    The weekday factor is taken per *local day*: days are cut near the scope's quietest hour (the
    minimum of the 3-hour smoothed daily profile), then the cut is moved to where last week's
    night switched from one day's level to the next (``cut``), because a weekday/weekend step
    rarely falls exactly on the quietest hour of a flat night. Before a week of history the
    factor is unknown; then any day level already seen (lowest to highest), and anything down to
    a quarter of the typical level (a weekend not seen yet), counts as normal.
    """

    def __init__(self, x: Sequence[float], t: int, baseline_end: int, *, floor_dispersion: float,
                 min_profile: float, skewed: bool = False) -> None:
        self.x, self.t, self.floor, self.min_profile = x, t, floor_dispersion, min_profile
        self.skewed, self.baseline_end = skewed, baseline_end
        self._m: dict[int, tuple[float, int]] = {}
        self._w: dict[int, tuple[float, float, list, bool]] = {}
        self._cuts: dict[int, int] = {}
        profile = [self.m(t - j)[0] for j in range(HOURS_PER_DAY)]
        smooth = [profile[j - 1] + profile[j] + profile[(j + 1) % HOURS_PER_DAY]
                  for j in range(HOURS_PER_DAY)]
        self.quiet = (t - min(range(HOURS_PER_DAY), key=smooth.__getitem__)) % HOURS_PER_DAY
        w, _, pooled, known = self.factor(self.day_start(t))
        # the pooled days' hours against their prediction: how far from Poisson this scope is
        residuals = [(x[start + i] - w * m) / math.sqrt(w * m) for start, hours in pooled
                     for i, m in hours] if w > 0 else []
        self.dispersion = floor_dispersion
        if len(residuals) >= 8:
            self.dispersion = max(floor_dispersion, mad_sigma(residuals) ** 2)
        self.level_range = (1.0, 1.0)
        if not known:
            # Without last week's same day nothing tells a weekend from an outage: any level
            # already seen is normal, and so is anything down to ``_UNKNOWN_DAY_FLOOR`` of typical.
            levels = [1.0, _UNKNOWN_DAY_FLOOR]
            day = self.day_start(baseline_end) - HOURS_PER_DAY
            while day >= 0:
                den = sum(profile[(t - u) % HOURS_PER_DAY] for u in range(day, day + HOURS_PER_DAY))
                if den > 0:
                    levels.append(sum(x[day:day + HOURS_PER_DAY]) / den)
                day -= HOURS_PER_DAY
            self.level_range = (min(levels), max(levels))

    def m(self, s: int) -> tuple[float, int]:
        if s not in self._m:
            self._m[s] = same_hour_median(self.x, s)
        return self._m[s]

    def day_start(self, s: int) -> int:
        return s - (s - self.quiet) % HOURS_PER_DAY

    def factor(self, day: int) -> tuple[float, float, list[tuple[int, list[tuple[int, float]]]], bool]:
        """``(w, relative variance of w at the floor dispersion, pooled days, known)`` for the local
        day starting at ``day``; each pooled day is ``(first hour, [(hour of day, m)])``.

        ``w`` compares the same local day one week earlier with today's profile ``m`` of those
        hours (hours where ``m`` is at least ``min_profile``): a ratio of sums over the hours
        within ``_TRIM_SIGMA`` of the weighted median's prediction — as efficient as a plain ratio
        on normal hours, and one bad hour moves nothing. That day is then pooled with every other
        day of the 7 before ``day`` whose plain ratio agrees with it within 2σ — a weekday's factor
        is learnt from last week's weekdays, a Saturday's from the weekend — never with a day
        that reaches past ``baseline_end``. Without last week's same day: 1, unknown.
        """
        if day in self._w:
            return self._w[day]
        result: tuple[float, float, list, bool] = (1.0, 0.0, [], False)
        past = day - BASELINE_HOURS
        hours = []
        if past >= 0:
            for i in range(HOURS_PER_DAY):
                m, n = self.m(day + i)
                if m >= self.min_profile and n >= 2:
                    hours.append((i, m))
        if len(hours) >= 6:
            x, floor = self.x, self.floor
            day_msum = sum(m for _, m in hours)
            others = []  # (start, plain level) of the other days of the 7, all before baseline_end
            for j in range(1, BASELINE_DAYS):
                start = day - HOURS_PER_DAY * j
                if start + HOURS_PER_DAY <= self.baseline_end:
                    others.append((start, sum(x[start + i] for i, _ in hours) / day_msum))
            pairs = [(x[past + i], m) for i, m in hours]

            def fitting(c: float) -> list[tuple[float, float]]:
                return [(v, m) for v, m in pairs
                        if abs(v - c * m) <= _TRIM_SIGMA * math.sqrt(floor * max(c * m, floor))]

            # Which kind of day last week's same day was: the level most of its hours fit — its
            # own weighted median, or, as often or more, a level another day had (an incident
            # that took half of last Tuesday leaves its other hours fitting Monday's level).
            level = weighted_median([v / m for v, m in pairs], [m for _, m in pairs])
            kept = fitting(level)
            if 4 * len(kept) < 3 * len(pairs):  # most hours fit its own median: nothing to look for
                for _, c in others:
                    k = fitting(c)
                    if len(k) >= len(kept) and len(k) > 0:
                        level, kept = c, k
            if 2 * len(kept) >= len(pairs):
                total, msum = sum(v for v, _ in kept), sum(m for _, m in kept)
            else:  # too spread to trim against a Poisson-like σ: the median stands
                msum = sum(m for _, m in pairs)
                total = level * msum
            w0, pooled = total / msum, [past]
            for start, c in others:
                # a level is a ratio of Poisson-like sums: var(w) = floor · Σv / (Σm)²
                spread = floor * (max(total, 1.0) / msum ** 2 + max(c, 1.0 / day_msum) / day_msum)
                if (c - w0) ** 2 <= 4.0 * spread:
                    total, msum = total + c * day_msum, msum + day_msum
                    pooled.append(start)
            w = total / msum
            rel_var = floor / total if total > 0 else 0.0
            result = (w, rel_var, [(start, hours) for start in pooled], True)
        self._w[day] = result
        return result

    def cut(self, day: int) -> int:
        """The hour the local day starting near ``day`` really starts, learnt from last week.

        Within ``_CUT_SEARCH`` hours of ``day``, the cut that best explains the same night one
        week earlier with the two neighbouring days' factors. Only last week's hours decide it,
        so an anomaly tonight cannot move tonight's cut.
        """
        if day in self._cuts:
            return self._cuts[day]
        best = day
        w_prev, _, _, known_prev = self.factor(day - HOURS_PER_DAY)
        w_this, _, _, known_this = self.factor(day)
        if known_prev and known_this and w_prev != w_this:
            span = range(day - _CUT_SEARCH, day + _CUT_SEARCH)
            terms = []
            for u in span:
                m = self.m(u)[0]
                v = self.x[u - BASELINE_HOURS] if u - BASELINE_HOURS >= 0 else None
                if v is None:
                    continue
                terms.append((u, (v - w_prev * m) ** 2 / max(w_prev * m, 1e-9),
                              (v - w_this * m) ** 2 / max(w_this * m, 1e-9)))
            best_cost = math.inf
            for c in range(day - _CUT_SEARCH, day + _CUT_SEARCH + 1):
                cost = sum(a if u < c else b for u, a, b in terms)
                if cost < best_cost:
                    best, best_cost = c, cost
        self._cuts[day] = best
        return best

    def day_of(self, s: int) -> int:
        """The local day (its nominal start hour) whose weekday factor applies to hour ``s``."""
        day = self.day_start(s)
        if s - day < _CUT_SEARCH:
            return day if s >= self.cut(day) else day - HOURS_PER_DAY
        if day + HOURS_PER_DAY - s <= _CUT_SEARCH:
            return day + HOURS_PER_DAY if s >= self.cut(day + HOURS_PER_DAY) else day
        return day

    def _expected(self, s: int, m: float) -> tuple[float, int]:
        """``(E(s), the day whose factor gave it)``."""
        day = self.day_of(s)
        w, _, _, known = self.factor(day)
        if not known:
            lo, hi = self.level_range
            return min(max(self.x[s], lo * m), hi * m), day
        return w * m, day

    def window(self, L: int) -> Deviation | None:
        """The sum over hours ``t-L+1 .. t`` against ``E(s) = w · m(s)``; ``None`` under 2 days."""
        x, t = self.x, self.t
        observed = expected = variance = 0.0
        days = BASELINE_DAYS
        per_day: dict[int, float] = {}
        for s in range(t - L + 1, t + 1):
            m, n = self.m(s)
            if n < 2:
                return None
            days = min(days, n)
            e, day = self._expected(s, m)
            observed += x[s]
            expected += e
            per_day[day] = per_day.get(day, 0.0) + e
            # the median of n days is itself noisy: its variance is about π/2n of one day's
            variance += self.dispersion * max(e, self.floor) * (1.0 + math.pi / (2 * n))
        # one weekday factor serves all of a day's hours: its error does not average out
        for day, e_sum in per_day.items():
            variance += e_sum * e_sum * self.factor(day)[1] * self.dispersion / self.floor
        std = math.sqrt(variance)
        score = None
        if not self.skewed and observed > expected > 0 and expected < 200:
            # Small counts have a longer upper tail than a normal: use the Poisson tail of a
            # count rescaled so its mean and variance match ours.
            c = expected / variance
            score = poisson_upper_z(round(observed * c), expected * c)
        elif self.skewed and observed > 0 and expected > 0:
            # A sum of skewed per-request costs has a long right tail: test it as a lognormal
            # with the same mean and variance (Fenton-Wilkinson), not as a normal.
            s2 = math.log1p(variance / (expected * expected))
            score = (math.log(observed) - math.log(expected) + s2 / 2) / math.sqrt(s2)
        w_now, _, _, known = self.factor(self.day_start(t))
        return Deviation(current=observed / L, mean=expected / L, std=std / L,
                         sigma=(observed - expected) / std if std > 0 else 0.0, volume=expected,
                         detail={"window_hours": L, "weekday_factor": round(w_now, 3) if known else None,
                                 "dispersion": round(self.dispersion, 6), "baseline_days": days,
                                 "baseline": "same hour of day over the previous 7 days"
                                             " x weekday factor"},
                         score=score)
