"""The fixed log-spaced latency histogram: indices, merging and quantile accuracy."""

import math
import random

import pytest

from lectr.analysis import histogram as hg


def exact_percentile_cont(values, q):
    """PostgreSQL's percentile_cont: linear interpolation at rank q * (n - 1)."""
    s = sorted(values)
    h = q * (len(s) - 1)
    k = math.floor(h)
    if k + 1 >= len(s):
        return s[-1]
    return s[k] + (s[k + 1] - s[k]) * (h - k)


def _clip(v):
    return min(max(v, hg.LOW_MS), hg.HIGH_MS * 0.999)


def _lognormal(rng, n):
    mu, sigma = rng.uniform(3, 8), rng.uniform(0.2, 1.5)
    return [_clip(rng.lognormvariate(mu, sigma)) for _ in range(n)]


def _bimodal(rng, n):
    fast, slow = rng.uniform(20, 300), rng.uniform(1500, 40000)
    share = rng.uniform(0.03, 0.4)
    return [_clip(rng.gauss(slow, slow * 0.1) if rng.random() < share else rng.gauss(fast, fast * 0.2))
            for _ in range(n)]


def _uniform(rng, n):
    lo = rng.uniform(1, 500)
    hi = lo * rng.uniform(1.01, 100)
    return [rng.uniform(lo, hi) for _ in range(n)]


def test_layout_constants():
    assert hg.BUCKETS == 187 and hg.BUCKETS_PER_DECADE == 32
    assert hg.HIGH_MS >= 600_000  # ten minutes fit below the overflow bucket
    assert hg.MAX_RELATIVE_ERROR < 0.05
    assert hg.RATIO == pytest.approx(1.0746, abs=1e-4)


@pytest.mark.parametrize("index", [1, 2, 31, 32, 33, 100, hg.TOP_INDEX])
def test_index_matches_bounds(index):
    lo, hi = hg.bucket_bounds(index)
    assert hg.bucket_index(lo * 1.000001) == index
    assert hg.bucket_index(hi * 0.999999) == index
    assert hi / lo == pytest.approx(hg.RATIO)


def test_out_of_range_values():
    assert [hg.bucket_index(v) for v in (-5, 0, 0.999, float("nan"))] == [0, 0, 0, 0]
    assert hg.bucket_index(1.0) == 1
    assert hg.bucket_index(hg.HIGH_MS) == hg.OVERFLOW
    assert hg.bucket_index(1e12) == hg.OVERFLOW
    assert hg.quantile(hg.build([1e9] * 3), 0.5) == hg.HIGH_MS  # a lower bound, said as such
    assert hg.quantile(hg.build([0.2]), 0.5) == 0.5
    with pytest.raises(IndexError):
        hg.bucket_bounds(hg.BUCKETS)


def test_sql_expression_names_the_same_constants():
    expr = hg.sql_bucket_expression("latency_ms")
    assert "log(latency_ms) * 32" in expr and str(hg.OVERFLOW) in expr


def test_merge_adds_and_checks_length():
    a, b = hg.build([5, 50, 500]), hg.build([50, 5000])
    m = hg.merge(a, b)
    assert sum(m) == 5 and m[hg.bucket_index(50)] == 2
    assert m == hg.build([5, 50, 500, 50, 5000])
    with pytest.raises(ValueError):
        hg.merge(a, [1, 2, 3])


def test_empty_and_invalid_quantiles():
    assert hg.quantiles(hg.empty(), (0.5, 0.95)) == [None, None]
    with pytest.raises(ValueError):
        hg.quantile(hg.build([10]), 1.5)
    with pytest.raises(ValueError):
        hg.quantile([1, 2], 0.5)


def test_single_value_and_two_values():
    assert hg.quantile(hg.build([123.0]), 0.99) == pytest.approx(123.0, rel=hg.MAX_RELATIVE_ERROR)
    # between two far-apart values the estimate interpolates like percentile_cont
    h = hg.build([100.0, 10000.0])
    assert hg.quantile(h, 0.5) == pytest.approx(5050.0, rel=hg.MAX_RELATIVE_ERROR)


# twelve seeds per size, three for the largest
_SIZES = [(n, seed) for n in (20, 57, 300, 5_000) for seed in range(12)] + [(100_000, s) for s in range(3)]


@pytest.mark.parametrize("shape", [_lognormal, _bimodal, _uniform])
@pytest.mark.parametrize(("n", "seed"), _SIZES)
def test_quantiles_within_five_percent(shape, n, seed):
    rng = random.Random(seed * 1000 + n)
    values = shape(rng, n)
    counts = hg.build(values)
    assert sum(counts) == n
    qs = (0.5, 0.95, 0.99)
    for q, est in zip(qs, hg.quantiles(counts, qs), strict=True):
        exact = exact_percentile_cont(values, q)
        err = abs(est - exact) / exact
        assert err <= hg.MAX_RELATIVE_ERROR + 1e-12, (shape.__name__, n, q, est, exact)
        assert err <= 0.05


def test_merged_histograms_answer_like_the_pooled_values():
    rng = random.Random(7)
    parts = [_lognormal(rng, rng.randint(20, 2000)) for _ in range(24)]
    merged = hg.merge(*(hg.build(p) for p in parts))
    pooled = [v for p in parts for v in p]
    assert merged == hg.build(pooled)
    exact = exact_percentile_cont(pooled, 0.95)
    assert abs(hg.quantile(merged, 0.95) - exact) / exact <= hg.MAX_RELATIVE_ERROR


def test_spread_reading_moves_smoothly_and_stays_close():
    rng = random.Random(99)
    values = [_clip(rng.lognormvariate(6.5, 0.6)) for _ in range(20_000)]
    counts = hg.build(values)
    exact = exact_percentile_cont(values, 0.95)
    smooth = hg.quantile(counts, 0.95, spread=True)
    assert abs(smooth - exact) / exact <= hg.RATIO - 1
    # midpoints step from bucket to bucket; spread readings of neighbouring quantiles differ
    steps = {hg.quantile(counts, q) for q in (0.950, 0.951, 0.952, 0.953)}
    smooth_steps = {hg.quantile(counts, q, spread=True) for q in (0.950, 0.951, 0.952, 0.953)}
    assert len(smooth_steps) == 4 and len(steps) < 4
