"""The cost baseline that holds traffic fixed: the window's cost against its own requests × the
7 days' cost per request.

A cost anomaly is a change in what is spent; the seasonal test of total cost (``SeasonalSum``)
sees it, but through the noise of traffic too — how many requests came this hour, how far the
weekday factor is off. When the requests themselves are as usual but each costs more (a dearer
model, longer prompts), that noise only hides the change. Given the window's ``n`` requests, its
cost is a sum of ``n`` per-request costs: mean ``n · μ`` and variance ``n · E[c²]`` at most (the
compound-Poisson variance, exact when a per-request cost's own spread is all there is), with
``μ`` and ``E[c²]`` pooled over the baseline's requests from the rollups' Σcost and Σcost².
A sum of skewed costs has a long right tail, so it is tested as a lognormal of the same mean and
variance (Fenton–Wilkinson), like the seasonal test of cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lectr.analysis.anomaly_stats import BASELINE_HOURS, Deviation, mad_sigma

# Hours with fewer requests than this say little about the spread of cost per request.
_MIN_HOUR_REQUESTS = 5
# MAD's efficiency for a normal: a spread from m residuals is as good as a variance from 0.37·m
_MAD_EFFICIENCY = 0.37


def dispersion_lower_bound(residuals: Sequence[float], floor: float = 1.0) -> float:
    """The variance of standardised residuals, raised above ``floor`` only by what is clearly there.

    A robust variance (MAD²) from a few dozen residuals is itself noisy (about ±2/√(0.37·m) of
    itself); taking it whenever it exceeds the floor would widen σ on most quiet series for
    nothing. So the estimate minus two of its standard errors, never below ``floor``.
    """
    if len(residuals) < 8:
        return floor
    v = mad_sigma(residuals) ** 2
    se = v * math.sqrt(2.0 / (_MAD_EFFICIENCY * len(residuals)))
    return max(floor, v - 2.0 * se)


class UnitCost:
    """``window(L)``: cost of hours ``t-L+1 .. t`` against their requests × the baseline's cost per
    request; ``None`` without Σcost² in the baseline, or without baseline requests or cost."""

    def __init__(self, requests: Sequence[float], cost: Sequence[float], cost_sq: Sequence[float | None],
                 t: int, baseline_end: int) -> None:
        self.requests, self.cost, self.t = requests, cost, t
        r = range(max(0, baseline_end - BASELINE_HOURS), max(0, baseline_end))
        sq = cost_sq[r.start:r.stop]
        self.n = sum(requests[r.start:r.stop])
        total = sum(cost[r.start:r.stop])
        self.mu = self.m2 = None
        if self.n <= 0 or total <= 0 or not sq or None in sq:
            return
        self.mu, self.m2 = total / self.n, sum(sq) / self.n
        # Between hours, cost per request can vary more than per-request spread explains (a
        # feature mix that moves through the day): measured on the baseline's own hours.
        residuals = [(cost[h] - requests[h] * self.mu) / math.sqrt(requests[h] * self.m2)
                     for h in r if requests[h] >= _MIN_HOUR_REQUESTS]
        self.dispersion = dispersion_lower_bound(residuals)

    def window(self, L: int) -> Deviation | None:
        if self.mu is None:
            return None
        t = self.t
        n = sum(self.requests[t - L + 1:t + 1])
        if n <= 0:
            return None
        observed = sum(self.cost[t - L + 1:t + 1])
        expected = n * self.mu
        # the window's own spread, plus the baseline mean's (n² · E[c²] / N)
        variance = self.dispersion * n * self.m2 + n * n * self.m2 / self.n
        std = math.sqrt(variance)
        score = None
        if observed > 0:
            s2 = math.log1p(variance / (expected * expected))
            score = (math.log(observed) - math.log(expected) + s2 / 2) / math.sqrt(s2)
        return Deviation(current=observed / L, mean=expected / L, std=std / L,
                         sigma=(observed - expected) / std, volume=n,
                         detail={"window_hours": L, "requests": int(n),
                                 "cost_per_request": round(self.mu, 8),
                                 "dispersion": round(self.dispersion, 4),
                                 "baseline": "the window's requests x cost per request"
                                             " of the previous 7 days"},
                         score=score)
