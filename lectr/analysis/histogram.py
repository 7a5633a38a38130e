"""Fixed log-spaced latency histograms: a bucket index per value, merge, quantiles from counts.

The buckets are the same everywhere and forever (they are stored as ``int[]`` columns of hourly
rollups), so two histograms merge by adding their arrays element by element.

Layout, ``BUCKETS`` = 187 counts:

- index 0: values below ``LOW_MS`` (1 ms), and zero or negative values;
- index i in 1..185: ``[10 ** ((i - 1) / 32), 10 ** (i / 32))`` milliseconds — 32 buckets per
  decade, each ``RATIO`` = 10 ** (1 / 32) ≈ 1.0746 times wider than the one before, from 1 ms
  up to 10 ** (185 / 32) ≈ 604,000 ms (just over 10 minutes);
- index 186: values at or above that (overflow).

Accuracy: a quantile is computed as PostgreSQL's ``percentile_cont`` does it (linear interpolation
between the two order statistics around rank ``q * (n - 1)``), with each order statistic replaced
by the geometric midpoint of its bucket. A value and its bucket's midpoint differ by at most a
factor √RATIO, and a linear interpolation of two estimates each within a relative error e is within
e, so any quantile of values in [1 ms, 604 s) comes out within ``MAX_RELATIVE_ERROR`` = √RATIO − 1
≈ 3.66% of the exact ``percentile_cont`` value — under the 5% the rollups promise, whatever the
distribution or the sample size. Below 1 ms the estimate is 0.5 ms (absolute error < 0.5 ms);
above the top it is the top edge (a lower bound).

The index is ``floor(log10(v) * 32) + 1`` clamped to the range, the same arithmetic in Python and
in SQL (``sql_bucket_expression``), so rollups built in either place agree.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate

BUCKETS_PER_DECADE = 32
LOW_MS = 1.0
TOP_INDEX = 185  # last finite bucket: [10 ** (184 / 32), 10 ** (185 / 32)) ms
OVERFLOW = TOP_INDEX + 1
BUCKETS = OVERFLOW + 1
RATIO = 10.0 ** (1.0 / BUCKETS_PER_DECADE)
MAX_RELATIVE_ERROR = math.sqrt(RATIO) - 1.0
HIGH_MS = 10.0 ** (TOP_INDEX / BUCKETS_PER_DECADE)

# The value that stands for every member of a bucket when a quantile is read back.
_REPRESENTATIVE = ((LOW_MS / 2,)
                   + tuple(10.0 ** ((i - 0.5) / BUCKETS_PER_DECADE) for i in range(1, OVERFLOW))
                   + (HIGH_MS,))


def bucket_index(value_ms: float) -> int:
    """The bucket (0..``OVERFLOW``) that holds a latency of ``value_ms`` milliseconds."""
    if not value_ms >= LOW_MS:  # also catches NaN
        return 0
    i = math.floor(math.log10(value_ms) * BUCKETS_PER_DECADE) + 1
    return i if i <= TOP_INDEX else OVERFLOW


def bucket_bounds(index: int) -> tuple[float, float]:
    """``(lower, upper)`` in ms of a bucket; the lower is inclusive, the upper exclusive."""
    if not 0 <= index < BUCKETS:
        raise IndexError(f"bucket {index} is outside 0..{OVERFLOW}")
    if index == 0:
        return 0.0, LOW_MS
    if index == OVERFLOW:
        return HIGH_MS, math.inf
    return 10.0 ** ((index - 1) / BUCKETS_PER_DECADE), 10.0 ** (index / BUCKETS_PER_DECADE)


def sql_bucket_expression(column: str) -> str:
    """A PostgreSQL expression giving the bucket index of a ``double precision`` column.

    PostgreSQL's ``log`` is base 10 for doubles; the arithmetic matches ``bucket_index``.
    """
    return (f"CASE WHEN {column} IS NULL OR NOT ({column} >= {LOW_MS}) THEN 0 "
            f"ELSE least(floor(log({column}) * {BUCKETS_PER_DECADE})::int + 1, {OVERFLOW}) END")


def empty() -> list[int]:
    return [0] * BUCKETS


def build(values_ms: Iterable[float]) -> list[int]:
    """Counts per bucket of the given latencies."""
    counts = [0] * BUCKETS
    for v in values_ms:
        counts[bucket_index(v)] += 1
    return counts


def add(counts: list[int], value_ms: float) -> None:
    """Count one more value in ``counts`` (in place)."""
    counts[bucket_index(value_ms)] += 1


def merge(*histograms: Sequence[int]) -> list[int]:
    """Element-wise sum; raises ``ValueError`` on an array that is not ``BUCKETS`` long."""
    total = [0] * BUCKETS
    for h in histograms:
        if len(h) != BUCKETS:
            raise ValueError(f"a histogram has {BUCKETS} buckets, got {len(h)}")
        for i, c in enumerate(h):
            if c:
                total[i] += c
    return total


def quantiles(counts: Sequence[int], qs: Sequence[float], *, spread: bool = False) -> list[float | None]:
    """Estimated quantiles (ms) for each ``q`` in ``qs`` (each in [0, 1]); ``None`` when empty.

    Mirrors ``percentile_cont(q)``: rank ``h = q * (n - 1)``, interpolated between the order
    statistics ``floor(h)`` and ``floor(h) + 1``, each read as its bucket's geometric midpoint —
    within ``MAX_RELATIVE_ERROR`` always. With ``spread=True`` the c values of a bucket are read
    as spread evenly (in log space) across it instead: the estimate then moves smoothly with the
    data rather than in bucket-sized steps, which is what a detector comparing hour with hour
    needs; its worst case is ``RATIO - 1`` (7.5%), its typical error far smaller.
    """
    if len(counts) != BUCKETS:
        raise ValueError(f"a histogram has {BUCKETS} buckets, got {len(counts)}")
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} is outside [0, 1]")
    # Cumulative counts (in C): the order statistic r lies in the first bucket whose cumulative
    # count exceeds r.
    cumulative = list(accumulate(counts))
    n = cumulative[-1]
    if n <= 0:
        return [None] * len(qs)
    ranks = []
    for q in qs:
        h = q * (n - 1)
        k = math.floor(h)
        ranks.append((k, h - k))
    value_at: dict[int, float] = {}
    for r in {r for k, _ in ranks for r in (k, min(k + 1, n - 1))}:
        i = bisect_right(cumulative, r)
        c = counts[i]
        if spread and 0 < i < OVERFLOW:
            position = (r - (cumulative[i] - c) + 0.5) / c
            value_at[r] = 10.0 ** ((i - 1 + position) / BUCKETS_PER_DECADE)
        else:
            value_at[r] = _REPRESENTATIVE[i]
    out: list[float | None] = []
    for k, frac in ranks:
        lo = value_at[k]
        hi = value_at[min(k + 1, n - 1)]
        out.append(lo + (hi - lo) * frac)
    return out


def quantile(counts: Sequence[int], q: float, *, spread: bool = False) -> float | None:
    """One estimated quantile in ms (see ``quantiles``)."""
    return quantiles(counts, (q,), spread=spread)[0]


def total(counts: Sequence[int]) -> int:
    return sum(counts)
