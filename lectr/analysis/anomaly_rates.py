"""The anomaly detector's baselines of rates and shares: error rate, p95 latency, model mix.

Beside ``anomaly_stats`` (the counted sums, requests and cost, and the helpers both use); the same
contract: built for one scope's hourly columns, ``window(L)`` answers a ``Deviation`` for the
hours ``t-L+1 .. t`` from a baseline that ends before the longest window.

- ``ErrorRate``: the pooled error rate of the 7 days, binomial σ;
- ``LatencyP95``: the median hourly p95 of the 7 days in log space, σ = κ/√n per hour;
- ``ModelMix``: the 7 days' model shares; the model that gained most, binomial σ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lectr.analysis.anomaly_stats import BASELINE_HOURS, HOURS_PER_DAY, Deviation, mad_sigma, median, poisson_upper_z


def _baseline_range(baseline_end: int) -> range:
    return range(max(0, baseline_end - BASELINE_HOURS), baseline_end)


class ErrorRate:
    """Pooled error rate of the 7 days before ``baseline_end``; ``window(L)`` tests hours up to ``t``."""

    def __init__(self, requests: Sequence[float], errors: Sequence[float], t: int, baseline_end: int,
                 *, min_rate: float) -> None:
        self.requests, self.errors, self.t = requests, errors, t
        r = _baseline_range(baseline_end)
        self.base_n = sum(requests[r.start:r.stop])
        self.p0 = (max(sum(errors[r.start:r.stop]) / self.base_n, min_rate, 0.5 / self.base_n)
                   if self.base_n > 0 else None)

    def window(self, L: int) -> Deviation | None:
        t, p0 = self.t, self.p0
        n = sum(self.requests[t - L + 1:t + 1])
        if p0 is None or n <= 0:
            return None
        e = sum(self.errors[t - L + 1:t + 1])
        std = math.sqrt(p0 * (1 - p0) / n)
        rate = e / n
        expected = n * p0
        score = poisson_upper_z(int(e), expected) if e > expected and expected < 100 else None
        return Deviation(current=rate, mean=p0, std=std, sigma=(rate - p0) / std, volume=n,
                         detail={"window_hours": L, "errors": int(e), "baseline_requests": int(self.base_n),
                                 "baseline": "pooled error rate of the previous 7 days"},
                         score=score)


class LatencyP95:
    """Median hourly p95 of the 7 days before ``baseline_end``, σ per hour κ/√n, in log space.

    Logs, because an hour's p95 from few requests is skewed upwards. Hours are not independent
    (a slow provider afternoon, a shifting mix of features), so a window's σ is widened by how
    much more the baseline's own L-hour averages vary than independent hours would (``spread``,
    at least 1). The decision uses the log-space score; the reported mean and σ are in ms.
    """

    def __init__(self, p95: Sequence[float | None], counts: Sequence[float], t: int, baseline_end: int,
                 *, min_hour_requests: int, relative_floor: float) -> None:
        self.p95, self.counts, self.t = p95, counts, t
        self.min_n = min_hour_requests
        self.floor = math.log1p(relative_floor)
        base = [(math.log(p95[h]), counts[h]) for h in _baseline_range(baseline_end)
                if p95[h] is not None and p95[h] > 0 and counts[h] >= min_hour_requests]
        self.hours = len(base)
        self.b = median([v for v, _ in base]) if len(base) >= HOURS_PER_DAY else None
        self._spread: dict[int, float] = {}
        if self.b is not None:
            self.kappa = mad_sigma([(v - self.b) * math.sqrt(n) for v, n in base])
            self._scores = [(v - self.b) / self.sd(n) for v, n in base]

    def sd(self, n: float) -> float:
        return max(self.kappa / math.sqrt(n), self.floor)

    def spread(self, k: int) -> float:
        if k not in self._spread:
            sc = self._scores
            sums = [sum(sc[i:i + k]) / math.sqrt(k) for i in range(0, len(sc) - k + 1)]
            self._spread[k] = max(1.0, mad_sigma(sums)) if len(sums) >= HOURS_PER_DAY else 1.0
        return self._spread[k]

    def window(self, L: int) -> Deviation | None:
        if self.b is None:
            return None
        t, b = self.t, self.b
        hours = [(math.log(self.p95[h]), self.counts[h]) for h in range(t - L + 1, t + 1)
                 if self.p95[h] is not None and self.p95[h] > 0 and self.counts[h] >= self.min_n]
        if not hours:
            return None
        k = len(hours)
        spread = self.spread(k)
        current = sum(v for v, _ in hours) / k
        std = math.sqrt(sum(self.sd(n) ** 2 for _, n in hours)) / k * spread
        mean_ms, current_ms = math.exp(b), math.exp(current)
        std_ms = mean_ms * math.expm1(std)
        return Deviation(current=current_ms, mean=mean_ms, std=std_ms,
                         sigma=(current_ms - mean_ms) / std_ms, volume=sum(n for _, n in hours),
                         detail={"window_hours": L, "hours_used": k, "baseline_hours": self.hours,
                                 "spread": round(spread, 3),
                                 "baseline": "median hourly p95 of the previous 7 days"
                                             " (geometric mean of the window's hours)"},
                         score=(current - b) / std)


def _add_counts(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for name, c in counts.items():
        into[name] = into.get(name, 0) + c


class ModelMix:
    """Model shares of the 7 days before ``baseline_end``; ``window(L)`` finds the model that gained most."""

    def __init__(self, models: Sequence[Mapping[str, int]], t: int, baseline_end: int) -> None:
        self.models, self.t = models, t
        self.base: dict[str, int] = {}
        for h in _baseline_range(baseline_end):
            _add_counts(self.base, models[h])
        self.nb = sum(self.base.values())

    def window(self, L: int) -> Deviation | None:
        now: dict[str, int] = {}
        for h in range(self.t - L + 1, self.t + 1):
            _add_counts(now, self.models[h])
        base, nb, nn = self.base, self.nb, sum(now.values())
        if nb <= 0 or nn <= 0:
            return None
        names = sorted(set(base) | set(now))
        moves = {m: now.get(m, 0) / nn - base.get(m, 0) / nb for m in names}
        tvd = 0.5 * sum(abs(v) for v in moves.values())
        # every shift has a model that gained share; it names the drift (and a model that is
        # merely going away again, after an earlier drift, does not)
        model = max(names, key=lambda m: moves[m])
        was = base.get(model, 0) / nb
        p = min(max(was, 1.0 / (nb + 1)), 1.0 - 1.0 / (nb + 1))  # never a zero σ
        std = math.sqrt(p * (1 - p) / nn)
        share = now.get(model, 0) / nn
        return Deviation(current=share, mean=was, std=std, sigma=(share - was) / std, volume=nn,
                         detail={"window_hours": L, "model": model, "tvd": round(tvd, 4),
                                 "new_model": model not in base,
                                 "baseline": "model shares over the previous 7 days"})
