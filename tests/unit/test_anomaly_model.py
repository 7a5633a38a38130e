"""The pure anomaly detector: baselines, windows, minimum volumes, grouping, resolution, thresholds."""

import math
import random

import pytest

from lectr.analysis import anomaly_stats as st
from lectr.analysis.anomaly_model import (
    AnomalyKey,
    Config,
    HourStats,
    KnownAnomaly,
    ScopeSeries,
    evaluate,
)

START = 480_000  # hours since the epoch; a multiple of 24, so hour k is k % 24 o'clock UTC


def poisson(rng, lam):
    if lam < 40:
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


def level(k, peak, weekend=1.0):
    """A daily cycle (quiet nights, busy afternoons) and, optionally, quieter weekends."""
    h, day = k % 24, (k // 24) % 7
    shape = 0.15 + 0.85 * math.exp(-((h - 14) / 4.5) ** 2)
    return peak * shape * (weekend if day >= 5 else 1.0)


def series(days, *, peak=200.0, weekend=1.0, seed=1, feature=None, edit=None, error_p=0.01,
           latency=800.0, models=(("m-big", 0.8), ("m-small", 0.2)), first_day=0):
    """Hourly stats with Poisson traffic; ``edit(k, lam, stats_kwargs)`` may change an hour."""
    rng = random.Random(seed)
    hours = []
    for k in range(days * 24):
        lam = level(k, peak, weekend) if k >= first_day * 24 else 0.0
        kw = {"error_p": error_p, "latency": latency, "models": dict(models), "unit_cost": 0.01}
        if edit:
            lam = edit(k, lam, kw)
        n = poisson(rng, lam)
        errors = sum(rng.random() < kw["error_p"] for _ in range(n))
        counts, left = {}, n
        names = list(kw["models"])
        for i, name in enumerate(names):
            c = left if i == len(names) - 1 else sum(rng.random() < kw["models"][name] for _ in range(left))
            left -= c
            if c:
                counts[name] = c
        # p95 of n lognormal latencies: its sampling noise shrinks as 1/sqrt(n)
        p95 = (kw["latency"] * math.exp(0.5 * 1.645 + rng.gauss(0, 0.5 * 2.11 / math.sqrt(n)))
               if n else None)
        hours.append(HourStats(requests=n, errors=errors, cost_usd=n * kw["unit_cost"] * rng.uniform(0.9, 1.1),
                               latency_p95_ms=p95, models=counts))
    return ScopeSeries(1, feature, START, hours)


def replay(scopes, first, last, **kw):
    """Evaluate hours first..last in turn like the job; return every decision made."""
    known, opened, resolved, ongoing = {}, [], [], []
    for k in range(first, last + 1):
        ev = evaluate(scopes, START + k, known=list(known.values()), **kw)
        for d in ev.opened:
            opened.append(d)
            known[d.key] = KnownAnomaly(d.key, d.window_start, d.window_end)
        for d in ev.ongoing:
            ongoing.append(d)
            known[d.key] = KnownAnomaly(d.key, known[d.key].window_start, d.window_end)
        for key in ev.resolved:
            resolved.append((key, START + k))
            known[key] = KnownAnomaly(key, known[key].window_start, START + k + 1, resolved=True)
    return opened, ongoing, resolved


def honest(d):
    assert d.deviation_sigma == pytest.approx((d.current - d.baseline_mean) / d.baseline_std, rel=1e-9)
    assert d.detail["baseline"]


def test_quiet_traffic_with_daily_and_weekly_cycles_raises_nothing():
    s = series(22, weekend=0.4, seed=3)
    opened, _, _ = replay([s], 14 * 24, 22 * 24 - 1)
    assert opened == []


@pytest.mark.parametrize(("factor", "direction"), [(1.5, "up"), (0.4, "down")])
def test_traffic_spike_and_drop_open_one_anomaly_each(factor, direction):
    spike = range(10 * 24 + 11, 10 * 24 + 17)  # six afternoon hours
    s = series(12, edit=lambda k, lam, kw: lam * factor if k in spike else lam)
    opened, ongoing, resolved = replay([s], 9 * 24, 11 * 24)
    traffic = [d for d in opened if d.key.metric == "requests"]
    assert len(traffic) == 1  # grouped: one anomaly for the whole incident
    d = traffic[0]
    assert d.key == AnomalyKey(1, None, "requests", direction)
    assert START + spike.start <= d.window_end - 1 < START + spike.stop
    assert (d.deviation_sigma > 4) if direction == "up" else (d.deviation_sigma < -4)
    honest(d)
    assert d.detail["window_hours"] in (1, 2, 4, 8)
    assert any(key == d.key for key, _ in resolved)  # and it ends when traffic is back
    end = next(at for key, at in resolved if key == d.key)
    assert end <= START + spike.stop + 2


def test_less_than_48_hours_of_data_is_skipped():
    # the scope starts on day 5; a tenfold spike on its second day fires nothing
    s = series(7, first_day=5, edit=lambda k, lam, kw: lam * 10 if k == 6 * 24 + 14 else lam)
    opened, _, _ = replay([s], 5 * 24, 6 * 24 + 20)
    assert opened == []
    # the same spike with three days of data is found
    s = series(8, first_day=5, edit=lambda k, lam, kw: lam * 10 if k == 7 * 24 + 14 else lam)
    opened, _, _ = replay([s], 7 * 24 + 14, 7 * 24 + 14)
    assert [d.key.metric for d in opened if d.key.direction == "up"][:1] == ["requests"]


def test_minimum_volume_keeps_tiny_scopes_quiet():
    # a scope of about one request an hour: eight times that for an hour is "significant" by
    # Poisson odds, but too few requests to bother anyone
    s = series(10, peak=1.0, edit=lambda k, lam, kw: lam * 8 if k == 9 * 24 + 14 else lam)
    opened, _, _ = replay([s], 9 * 24, 9 * 24 + 23)
    assert [d for d in opened if d.key.metric == "requests"] == []


def test_error_rate_spike():
    bad = range(9 * 24 + 10, 9 * 24 + 16)
    s = series(10, seed=5, edit=lambda k, lam, kw: (kw.update(error_p=0.08) if k in bad else None) or lam)
    opened, _, _ = replay([s], 9 * 24, 9 * 24 + 20)
    errors = [d for d in opened if d.key.metric == "error_rate"]
    assert len(errors) == 1 and errors[0].key.direction == "up"
    assert errors[0].current > 0.04 and errors[0].baseline_mean == pytest.approx(0.01, abs=0.004)
    honest(errors[0])


def test_latency_degradation():
    slow = range(9 * 24 + 10, 9 * 24 + 16)
    s = series(10, seed=6, edit=lambda k, lam, kw: (kw.update(latency=1200.0) if k in slow else None) or lam)
    opened, _, _ = replay([s], 9 * 24, 9 * 24 + 20)
    lat = [d for d in opened if d.key.metric == "latency_p95"]
    assert len(lat) == 1 and lat[0].current > lat[0].baseline_mean * 1.3
    honest(lat[0])


def test_model_drift_names_the_new_model():
    drift = range(9 * 24 + 8, 10 * 24)
    s = series(10, seed=7, edit=lambda k, lam, kw: (kw.update(models={"m-big": 0.5, "m-small": 0.2, "m-new": 0.3})
                                                    if k in drift else None) or lam)
    opened, _, _ = replay([s], 9 * 24, 9 * 24 + 20)
    d = next(d for d in opened if d.key.metric == "model_drift")
    assert d.detail["model"] == "m-new" and d.detail["new_model"] and d.detail["tvd"] >= 0.2
    assert d.baseline_mean == 0 and d.current > 0.2
    honest(d)


def test_cost_spike_from_dearer_requests():
    dear = range(9 * 24 + 10, 9 * 24 + 16)
    s = series(10, seed=8, edit=lambda k, lam, kw: (kw.update(unit_cost=0.02) if k in dear else None) or lam)
    opened, _, _ = replay([s], 9 * 24, 9 * 24 + 20)
    cost = [d for d in opened if d.key.metric == "cost"]
    assert len(cost) == 1 and cost[0].key.direction == "up"
    assert [d for d in opened if d.key.metric == "requests"] == []  # traffic itself did not move


def test_features_are_scopes_of_their_own():
    spike = range(9 * 24 + 12, 9 * 24 + 16)
    org = series(10, seed=9)
    feat = series(10, seed=10, peak=60.0, feature="search",
                  edit=lambda k, lam, kw: lam * 2.5 if k in spike else lam)
    opened, _, _ = replay([org, feat], 9 * 24, 9 * 24 + 20)
    assert AnomalyKey(1, "search", "requests", "up") in {d.key for d in opened}
    assert AnomalyKey(1, None, "requests", "up") not in {d.key for d in opened}


def test_tail_of_a_resolved_anomaly_does_not_reopen_it():
    spike = range(9 * 24 + 10, 9 * 24 + 14)
    s = series(10, seed=11, edit=lambda k, lam, kw: lam * 2 if k in spike else lam)
    key = AnomalyKey(1, None, "requests", "up")
    at = START + 9 * 24 + 15  # the 8-hour window still holds the spike
    fresh = evaluate([s], at)
    assert key in {d.key for d in fresh.opened}
    after = evaluate([s], at, known=[KnownAnomaly(key, START + spike.start, START + spike.stop, resolved=True)])
    assert key not in {d.key for d in after.opened}


def test_open_anomaly_is_ongoing_not_reopened():
    spike = range(9 * 24 + 10, 9 * 24 + 16)
    s = series(10, seed=12, edit=lambda k, lam, kw: lam * 2 if k in spike else lam)
    key = AnomalyKey(1, None, "requests", "up")
    ev = evaluate([s], START + 9 * 24 + 13, known=[KnownAnomaly(key, START + 9 * 24 + 10, START + 9 * 24 + 12)])
    assert key not in {d.key for d in ev.opened}
    ongoing = next(d for d in ev.ongoing if d.key == key)
    assert (ongoing.window_start, ongoing.window_end) == (START + 9 * 24 + 10, START + 9 * 24 + 14)


def test_latency_threshold_needs_no_history_and_resolves():
    s = series(3, first_day=2, latency=900.0)  # one day of data only
    at = START + 2 * 24 + 14
    ev = evaluate([s], at, p95_threshold_ms=1000.0)
    d = next(d for d in ev.opened if d.key.metric == "latency_threshold")
    assert d.current >= 1000.0 and d.detail["threshold_ms"] == 1000.0
    assert d.baseline_mean is None and d.deviation_sigma is None  # nothing to compare with, said so
    assert [x for x in ev.opened if x.key.metric != "latency_threshold"] == []
    key = d.key
    calm = evaluate([s], at, known=[KnownAnomaly(key, at, at + 1)], p95_threshold_ms=5000.0)
    assert calm.resolved == [key]
    # a feature's series never raises the org's threshold anomaly
    feat = ScopeSeries(1, "x", s.start_hour, s.hours)
    assert evaluate([feat], at, p95_threshold_ms=1000.0).opened == []


def test_weekday_factor_and_day_cut_follow_last_week():
    s = series(16, weekend=0.4, seed=13)
    x = [float(h.requests) for h in s.hours]
    saturday = 12 * 24 + 14  # day 12 is a Saturday in this calendar ((12 // 1) % 7 == 5)
    b = st.SeasonalSum(x[:saturday + 1], saturday, saturday - 7, floor_dispersion=1.0, min_profile=3.0)
    w, _, _, known = b.factor(b.day_of(saturday))
    assert known and w == pytest.approx(0.4 / 0.83, rel=0.2)  # weekend vs a median of mostly weekdays
    assert b.cut(b.day_start(saturday)) % 24 in (23, 0, 1)  # the step at midnight, found from last week


def test_poisson_tail_score():
    assert st.poisson_upper_z(5, 0.7) == pytest.approx(3.2, abs=0.1)  # p ≈ 6e-4, not a "5σ" event
    assert st.poisson_upper_z(300, 10) == st._MAX_Z or st.poisson_upper_z(300, 10) > 20
    assert st.median([3, 1, 2]) == 2 and st.mad_sigma([1, 1, 1, 1]) == 0
    assert st.weighted_median([1, 2, 10], [1, 1, 5]) == 10


def test_config_windows_are_what_the_readme_states():
    cfg = Config()
    assert dict(cfg.windows) == {1: 5.0, 2: 4.5, 4: 4.25, 8: 4.0}
    assert cfg.hold_sigma == 2.0 and cfg.min_history_hours == 48


def test_ten_days_of_history_decide_exactly_like_the_whole_series():
    from lectr.analysis.anomaly_model import HISTORY_HOURS

    spike = range(19 * 24 + 10, 19 * 24 + 15)
    whole = series(20, weekend=0.5, seed=14,
                   edit=lambda k, lam, kw: lam * 1.6 if k in spike else lam)
    for k in (19 * 24 + 1, 19 * 24 + 12, 19 * 24 + 14):
        cut = k + 1 - HISTORY_HOURS
        part = ScopeSeries(1, None, START + cut, whole.hours[cut:k + 1])
        a, b = evaluate([whole], START + k), evaluate([part], START + k)
        assert a == b
    assert evaluate([whole], START + 19 * 24 + 14).opened  # the comparison was not of nothing
